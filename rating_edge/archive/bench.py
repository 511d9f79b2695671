"""`archive bench`: the Ray pipeline and the plain in-process loop over the same archive, in one run.

Both write their own RESULTS (OUT/in-process, OUT/ray) from scratch; the pair tables must be equal
(same pairs, same grades, same probabilities bit for bit, since both use one engine at batch 1), and
the throughput of each is reported with Ray's start-up and the listing counted separately.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from rating_edge.archive.evaluate import compare, truth_index
from rating_edge.archive.pipeline import ArchiveConfig, run_local, run_ray
from rating_edge.archive.results import Results
from rating_edge.errors import RatingEdgeError

KEY = ["study_uid", "doppler_sop_uid", "doppler_frame"]
EXACT = ["gs_sop_uid", "gs_frame", "section", "sh", "vs", "combined", "sh_agree", "vs_agree"]
ARRAYS = ["sh_prob", "vs_prob", "roi_gs", "roi_doppler"]


def equal_pairs(a_dir, b_dir) -> dict:
    a = Results(a_dir).table("pairs").to_pandas().sort_values(KEY).reset_index(drop=True)
    b = Results(b_dir).table("pairs").to_pandas().sort_values(KEY).reset_index(drop=True)
    same_keys = len(a) == len(b) and a[KEY].equals(b[KEY])
    diff = {}
    if same_keys:
        for c in EXACT:
            diff[c] = int((a[c] != b[c]).sum())
        for c in ARRAYS:
            diff[c] = int(sum(not np.array_equal(x, y) for x, y in zip(a[c], b[c])))
    return {"pairs_a": len(a), "pairs_b": len(b), "same_pairs": bool(same_keys),
            "differences": diff, "identical": bool(same_keys and not any(diff.values()))}


def bench(cfg: ArchiveConfig, out, truth=None) -> dict:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise RatingEdgeError(f"{out} exists and is not empty; choose a new folder")
    runs = {}
    for name, fn in (("in-process", run_local), ("ray", run_ray)):
        d = out / name
        shutil.rmtree(d, ignore_errors=True)
        c = dataclasses.replace(cfg, out=str(d))
        t0 = time.perf_counter()
        rep = fn(c)
        runs[name] = {**rep.to_json(), "total_s": round(time.perf_counter() - t0, 3)}
        runs[name].pop("errors", None)
    res = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                       "load_avg_1m": round(os.getloadavg()[0], 2)},
           "runs": runs, "equal": equal_pairs(out / "in-process", out / "ray")}
    a, b = runs["in-process"], runs["ray"]
    if a["run_s"] and b["run_s"]:
        res["ray_speedup_run"] = round(a["run_s"] / b["run_s"], 3)
        res["ray_speedup_total"] = round(a["total_s"] / b["total_s"], 3)
    if truth is not None:
        r = Results(out / "ray")
        res["truth"] = compare(r.table("pairs").to_pylist(), r.table("sections").to_pylist(), truth_index(truth))
    return res
