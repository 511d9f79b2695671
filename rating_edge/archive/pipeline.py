"""Archive scoring runs: the Ray Data pipeline, and the plain in-process loop it is checked against.

Ray Data does the scheduling (no home-made queue or process pool): study listing and decoding run as
tasks, inference in a fixed actor pool that holds one runner per actor, and the streaming executor
keeps only a bounded number of blocks in flight (back-pressure from the object store budget), so an
archive of any size flows through in constant memory. The driver only collects finished pairs,
writes each study once all its pairs are back, and writes its SR. Without --ray-address a private
local Ray instance is started (address="local": never an unrelated cluster that happens to be
running) and shut down at the end, also on errors and Ctrl-C.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rating_edge import __version__
from rating_edge.archive import sources
from rating_edge.archive.results import Results, aggregate_sections
from rating_edge.archive.score import PairScorer, decode_study
from rating_edge.errors import RatingEdgeError


@dataclass
class ArchiveConfig:
    source: str
    package: str
    out: str
    backend: str = "ort"
    actors: int | None = None  # default: half the CPUs (the rest decode)
    actor_cpus: float = 1.0
    ray_address: str | None = None
    num_cpus: int | None = None  # local Ray only
    object_store_mb: int = 256  # local Ray only
    batch: int = 8  # pairs per actor call
    sr: bool = False
    store: str | None = None
    max_age_s: float = 90.0
    profile: str | None = None
    threads: int | None = None  # engine threads per runner (default: the actor's CPUs)


@dataclass
class RunReport:
    mode: str
    studies_total: int = 0
    studies_skipped: int = 0  # already in RESULTS
    studies_done: int = 0
    studies_failed: int = 0
    pairs: int = 0
    pair_errors: int = 0
    srs_written: int = 0
    srs_stored: int = 0
    setup_s: float = 0.0  # Ray start/connect and listing
    ray_start_s: float = 0.0  # of which starting (or joining) Ray
    run_s: float = 0.0  # decoding + scoring + writing
    errors: list = field(default_factory=list)

    def to_json(self) -> dict:
        import resource

        d = dict(self.__dict__)
        d["driver_max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        d["pairs_per_s"] = round(self.pairs / self.run_s, 3) if self.run_s > 0 else None
        d["studies_per_s"] = round(self.studies_done / self.run_s, 3) if self.run_s > 0 else None
        return d


class Collector:
    """Gathers scored rows per study; writes a study (Parquet, SR) once all its pairs are in."""

    def __init__(self, cfg: ArchiveConfig, results: Results, report: RunReport, on_study=None):
        self.cfg, self.results, self.report = cfg, results, report
        self.pending: dict[str, list] = {}
        self.on_study = on_study
        self.store = sources.parse_store(cfg.store)

    def add(self, row: dict) -> None:
        uid = row["study_uid"]
        rows = self.pending.setdefault(uid, [])
        rows.append(row)
        if len(rows) >= max(int(row["n_pairs"]), 1):
            del self.pending[uid]
            self._finish(uid, rows)

    def _finish(self, uid: str, rows: list) -> None:
        info = json.loads(rows[0]["study"])
        if info["error"]:
            self.report.studies_failed += 1
            self.report.errors.append({"study_uid": uid, "error": info["error"]})
            with open(self.results.root / "errors.jsonl", "a") as f:
                f.write(json.dumps({"study_uid": uid, "error": info["error"], "at": _now()}) + "\n")
            if self.on_study:
                self.on_study(uid, 0)
            return
        pairs, errors = [], 0
        patient = info["header"].get("PatientID", "")
        for r in sorted(rows, key=lambda r: int(r["pair_index"])):
            if int(r["pair_index"]) < 0:
                continue
            res = json.loads(r["result"])
            if res.get("error"):
                errors += 1
                continue
            pairs.append({"study_uid": uid, "patient_id": patient, **json.loads(r["meta"]), **res})
        sections = aggregate_sections(pairs)
        model_hash = pairs[0]["model_hash"] if pairs else ""
        summary = {"study_uid": uid, "patient_id": patient, "accession": info["header"].get("AccessionNumber", ""),
                   "instances": info["instances"], "frames": info["frames"], "skipped_instances": info["skipped"],
                   "pairs": len(pairs), "pair_errors": errors, "sections": len(sections),
                   "max_combined": max((s["combined"] for s in sections), default=None), "model_hash": model_hash,
                   "toolkit_version": __version__, "decode_s": info["decode_s"], "scored_at": _now(),
                   "sr_sop_uid": "", "sr_stored": False, "sr_error": ""}
        if self.cfg.sr and sections:
            self._sr(info, sections, pairs, summary)
        self.results.write_study(summary, pairs, sections)
        self.report.studies_done += 1
        self.report.pairs += len(pairs)
        self.report.pair_errors += errors
        if self.on_study:
            self.on_study(uid, len(pairs))

    def _sr(self, info, sections, pairs, summary) -> None:
        from rating_edge.archive.sr import build_sr, store_sr

        sr = build_sr(info, sections, pairs, pairs[0]["model_hash"], pairs[0]["backend"])
        final = self.results.sr_path(info["study_uid"])
        tmp = final.with_suffix(".dcm.tmp")
        sr.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, final)
        summary["sr_sop_uid"] = str(sr.SOPInstanceUID)
        self.report.srs_written += 1
        if self.store is not None:
            try:
                store_sr(sr, self.store)
                summary["sr_stored"] = True
                self.report.srs_stored += 1
            except RatingEdgeError as e:  # the scores are kept; the SR file can be sent again
                summary["sr_error"] = str(e)[:300]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _todo(cfg: ArchiveConfig, studies: list[dict], results: Results, report: RunReport) -> list[dict]:
    done = results.done()
    todo = [s for s in studies if s["study_uid"] not in done]
    report.studies_total = len(studies)
    report.studies_skipped = len(studies) - len(todo)
    return todo


def _check(cfg: ArchiveConfig) -> None:
    from rating_edge.package import load_package

    cfg.source = sources.check_source(cfg.source)
    load_package(cfg.package)  # a clear error now (missing, tampered), not from every actor
    sources.parse_store(cfg.store)
    if cfg.store and not cfg.sr:
        raise RatingEdgeError("--store sends the SRs: add --sr")
    if cfg.backend not in ("ort", "trt"):
        raise RatingEdgeError(f"unknown backend {cfg.backend!r}; use 'ort' or 'trt'")


# --------------------------------------------------------------------------- in-process loop
def run_local(cfg: ArchiveConfig, progress=None) -> RunReport:
    """The same stages one after the other in this process (the reference the Ray run must equal)."""
    _check(cfg)
    report = RunReport("in-process")
    t0 = time.perf_counter()
    results = Results(cfg.out)
    if sources.is_dicomweb(cfg.source):
        studies = sources.list_dicomweb_studies(cfg.source)
    else:
        studies, bad = sources.group_studies(sources.read_headers(sources.list_files(cfg.source)))
        report.errors += [{"file": b["location"], "error": b["error"]} for b in bad]
    todo = _todo(cfg, studies, results, report)
    scorer = PairScorer(cfg.package, cfg.backend, cfg.threads)
    report.setup_s = time.perf_counter() - t0
    col = Collector(cfg, results, report, progress.study if progress else None)
    if progress:
        progress.start(len(todo))
    t1 = time.perf_counter()
    try:
        for st in todo:
            rows = decode_study(st, cfg.source, cfg.package, cfg.max_age_s, cfg.profile)
            batch = {k: (np.stack([r[k] for r in rows]) if k in ("gs", "doppler") else [r[k] for r in rows])
                     for k in rows[0]}
            out = scorer(batch)
            for i in range(len(out["study_uid"])):
                col.add({k: v[i] for k, v in out.items()})
    finally:
        scorer.close()
    report.run_s = time.perf_counter() - t1
    return report


# --------------------------------------------------------------------------- Ray
def _start_ray(cfg: ArchiveConfig):
    """(ray, owned tmp folder | None | False): join --ray-address, or start a private local instance
    sized for this machine; False when Ray was already initialised by the caller (not shut down)."""
    try:
        import ray
    except ImportError as e:  # pragma: no cover - install issue
        raise RatingEdgeError("archive scoring on Ray needs ray[data]: pip install 'rating-edge[archive]'") from e
    if ray.is_initialized():  # a caller (a notebook, a Ray job) already joined a cluster: use it, leave it up
        return ray, False
    if cfg.ray_address:
        _probe(cfg.ray_address)
        try:
            ray.init(address=cfg.ray_address, logging_level="ERROR", log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise RatingEdgeError(f"cannot join the Ray cluster at {cfg.ray_address!r} ({str(e).splitlines()[0][:160]}); "
                                  "check `ray status` there, or leave out --ray-address for a local Ray") from None
        return ray, None
    # local workers import this toolkit from where this process does
    root = str(Path(__file__).resolve().parents[2])
    pp = os.environ.get("PYTHONPATH", "")
    if root not in pp.split(os.pathsep):
        os.environ["PYTHONPATH"] = root + (os.pathsep + pp if pp else "")
    tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    ray.init(address="local", num_cpus=cfg.num_cpus or os.cpu_count() or 1,
             object_store_memory=int(cfg.object_store_mb) << 20, include_dashboard=False,
             logging_level="ERROR", log_to_driver=False, _temp_dir=tmp)
    return ray, tmp


def _probe(address: str) -> None:
    """Fail in seconds when a HOST:PORT (or ray://HOST:PORT) address has nothing listening: Ray itself
    retries for minutes before giving up."""
    import socket

    rest = address.split("://", 1)[-1]
    if address == "auto" or ":" not in rest:
        return
    host, _, port = rest.rpartition(":")
    if not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise RatingEdgeError(f"no Ray cluster answers at {address} ({e.strerror or e}); start one with "
                              "`ray start --head` or leave out --ray-address for a local Ray") from None


def run_ray(cfg: ArchiveConfig, progress=None) -> RunReport:
    _check(cfg)
    report = RunReport("ray")
    t0 = time.perf_counter()
    results = Results(cfg.out)
    ray, tmp = _start_ray(cfg)
    report.ray_start_s = time.perf_counter() - t0
    try:
        import logging

        import ray.data as rd

        logging.getLogger("ray.data").setLevel(logging.ERROR)  # the Rich progress bar tells the story
        ctx = rd.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actors = cfg.actors or max(1, cpus // 2)
        if sources.is_dicomweb(cfg.source):
            studies = sources.list_dicomweb_studies(cfg.source)
        else:
            files = sources.list_files(cfg.source)
            chunks = [{"paths": files[i:i + sources.LIST_CHUNK]} for i in range(0, len(files), sources.LIST_CHUNK)]
            headers = []
            if chunks:
                hds = rd.from_items(chunks, override_num_blocks=len(chunks)).flat_map(
                    lambda r: sources.read_headers(list(r["paths"])), num_cpus=1)
                headers = list(hds.iter_rows())
            studies, bad = sources.group_studies(headers)
            report.errors += [{"file": b["location"], "error": b["error"]} for b in bad]
        todo = _todo(cfg, studies, results, report)
        report.setup_s = time.perf_counter() - t0
        col = Collector(cfg, results, report, progress.study if progress else None)
        if progress:
            progress.start(len(todo))
        t1 = time.perf_counter()
        if todo:
            gpu = cfg.backend == "trt"
            ds = rd.from_items(todo, override_num_blocks=len(todo))  # one study per block: one decode task each
            ds = ds.flat_map(decode_study, fn_kwargs={"source": cfg.source, "package": cfg.package,
                                                      "max_age_s": cfg.max_age_s, "profile": cfg.profile}, num_cpus=1)
            ds = ds.map_batches(PairScorer, batch_size=cfg.batch, batch_format="numpy",
                                compute=rd.ActorPoolStrategy(size=actors),
                                fn_constructor_kwargs={"package": cfg.package, "backend": cfg.backend,
                                                       "threads": cfg.threads or max(1, int(cfg.actor_cpus))},
                                num_cpus=cfg.actor_cpus, num_gpus=1 if gpu else 0)
            try:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    for i in range(len(batch["study_uid"])):
                        col.add({k: v[i] for k, v in batch.items()})
            except ray.exceptions.RayError as e:  # an actor or the cluster failed: finished studies are kept
                first = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
                raise RatingEdgeError(f"the Ray pipeline failed after {report.studies_done} studies ({first}); "
                                      "finished studies are saved: rerun the same command to resume") from None
        report.run_s = time.perf_counter() - t1
        return report
    finally:
        if tmp is not False:
            ray.shutdown()
        if tmp:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
