"""Benchmark helpers: every candidate timed in one run on one machine, reported as ratios to naive.

The CPU this was developed on is shared, so absolute numbers drift; ratios measured back to back in
one process are the figure to trust. Candidates are set up and torn down one at a time so a paper-size
run holds one copy of the weights at once (naive PyTorch, `none` and `stack` are ~4 GB each).
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import numpy as np

from rating_edge.infer.cpu_forms import cpu_model


@dataclass
class Candidate:
    """`setup()` loads the model and returns (run, teardown); `run()` scores one batch-1 pair and returns
    the output dict (used once for the exactness column); `teardown()` frees the model."""

    name: str
    setup: Callable[[], tuple]
    backend: str = "ort"      # torch, ort, trt, openvino: which library ran the row
    precision: str = "fp32"   # fp32, fp16, bf16, int8: the arithmetic it ran in


def time_calls(fn: Callable, iters: int, warmup: int) -> np.ndarray:
    """Milliseconds per call after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    out = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        fn()
        out[i] = (time.perf_counter() - t0) * 1e3
    return out


def summarize(name: str, times_ms: np.ndarray, batch: int = 1) -> dict:
    """One row; the per-iteration latencies are kept so a plot can show the distribution, not only its
    percentiles."""
    return {"name": name, "pairs_per_s": float(batch * len(times_ms) / (times_ms.sum() / 1e3)),
            "p50_ms": float(np.percentile(times_ms, 50)), "p95_ms": float(np.percentile(times_ms, 95)),
            "p99_ms": float(np.percentile(times_ms, 99)), "mean_ms": float(times_ms.mean()), "iters": int(len(times_ms)),
            "latencies_ms": [round(float(t), 4) for t in times_ms]}


def machine_info(threads: int | None = None) -> dict:
    info = {"host": platform.node(), "platform": platform.platform(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "python": platform.python_version(), "threads": threads}
    try:
        info["loadavg_1m"] = os.getloadavg()[0]  # > cores means other jobs shared the CPU during the run
    except OSError:
        pass
    for mod in ("onnxruntime", "torch", "tensorrt", "openvino"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - absent or broken optional backends are just not reported
            pass
    return info


def host_reference_ms(rounds: int = 30) -> dict:
    """Median milliseconds of two fixed workloads (a 1080p INTER_AREA resize, a 256x256 float32 matmul),
    timed before and after the rows. A shared 2-vCPU host ran the same resize at 1.40-2.42 ms within
    minutes: rows of two runs compare only as far as their references agree."""
    import cv2

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (1080, 1920, 3), np.uint8)
    a = rng.standard_normal((256, 256)).astype(np.float32)

    def med(fn):
        fn()
        ts = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn()
            ts.append((time.perf_counter() - t0) * 1e3)
        return round(float(np.median(ts)), 4)

    return {"resize_1080p_area": med(lambda: cv2.resize(img, (480, 270), interpolation=cv2.INTER_AREA)),
            "matmul_256": med(lambda: a @ a)}


def max_prob_diff(a: dict, b: dict) -> float:
    return float(max(np.abs(np.asarray(a[k], np.float64) - np.asarray(b[k], np.float64)).max()
                     for k in ("sh_prob", "vs_prob")))


def run_bench(candidates: list, iters: int = 20, warmup: int = 3, log=None, threads: int | None = None) -> dict:
    """{"machine": {...}, "results": [{"name", "pairs_per_s", "p50_ms", "p95_ms", "p99_ms", "ratio_to_naive", ...}]}.

    The first candidate named "naive" is the baseline for `ratio_to_naive` and `max_prob_diff_vs_naive`.
    """
    results, base_out = [], None
    before = host_reference_ms()
    for c in candidates:
        if log:
            log(f"bench {c.name}: loading")
        run, teardown = c.setup()
        try:
            out = run()
            times = time_calls(run, iters, warmup)
        finally:
            teardown()
        row = summarize(c.name, times)
        row["backend"], row["precision"] = c.backend, c.precision
        if c.name == "naive" and base_out is None:
            base_out = out
        row["max_prob_diff_vs_naive"] = max_prob_diff(base_out, out) if base_out is not None else None
        results.append(row)
        if log:
            log(f"bench {c.name}: {row['pairs_per_s']:.3f} pairs/s, p50 {row['p50_ms']:.1f} ms")
    naive = next((r for r in results if r["name"] == "naive"), None)
    for r in results:
        r["ratio_to_naive"] = (r["pairs_per_s"] / naive["pairs_per_s"]) if naive else None
    machine = {**machine_info(threads), "host_reference_ms": {"before": before, "after": host_reference_ms()}}
    return {"machine": machine, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "batch": 1, "iters": iters, "warmup": warmup, "results": results}


def render_table(report: dict):
    from rich.table import Table

    m = report["machine"]
    ref = (m.get("host_reference_ms") or {}).get("before") or {}
    t = Table(title=f"batch 1, {report['iters']} iters, {m.get('cpu', '?')} ({m.get('cores')} cores, "
                    f"load {m.get('loadavg_1m', float('nan')):.1f}"
                    + (f", host reference {ref['resize_1080p_area']:.2f} ms" if ref else "") + ")")
    for col in ("name", "pairs/s", "p50 ms", "p95 ms", "p99 ms", "x naive", "max |dP| vs naive"):
        t.add_column(col, justify="left" if col == "name" else "right")
    for r in report["results"]:
        ratio = r.get("ratio_to_naive")
        diff = r.get("max_prob_diff_vs_naive")
        t.add_row(r["name"], f"{r['pairs_per_s']:.3f}", f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['p99_ms']:.1f}",
                  "-" if ratio is None else f"{ratio:.2f}", "-" if diff is None else f"{diff:.2g}")
    return t
