"""Soak benchmark (`rating-edge bench PKG --soak MINUTES`): the live phantom at 30 fps through the run
pipeline with a real package for minutes, watching what would grow in a day-long session.

A leak shows as memory, file descriptors or threads that keep growing, or a queue that fills; the
samples at the start are taken after a warm-up (allocator pools, ONNX Runtime arenas and caches fill
during the first frames), so "growth" is what the steady state adds.
"""
from __future__ import annotations

import os
import threading
import time

from rating_edge.errors import RatingEdgeError


def _process():
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is in the runtime extra
        raise RatingEdgeError("the soak benchmark needs psutil: pip install psutil") from None
    return psutil.Process(os.getpid())


def sample(pipe, proc) -> dict:
    """Resource use now, and the fill of every queue the pipeline holds."""
    mem = proc.memory_info()
    cap_slot = pipe.capture.thread.slot
    worker = pipe.scoring.worker
    log = pipe.sinks.log
    return {"t_s": round(time.perf_counter(), 3), "rss_mb": round(mem.rss / 2**20, 2),
            "open_files": proc.num_fds() if hasattr(proc, "num_fds") else len(proc.open_files()),
            "threads": proc.num_threads(), "python_threads": threading.active_count(),
            "frames_out": pipe.stats.frames_out, "pairs_scored": pipe.stats.pairs_scored,
            "queues": {"capture_slot": int(cap_slot._has),
                       "worker_slot": int(worker.slot._has) if worker is not None else 0,
                       "worker_results": len(worker._results) if worker is not None else 0,
                       "log_pending": len(log.pending) if log is not None else 0,
                       "latency_samples": int(sum(min(r.n, r.buf.size) for r in pipe.stats.lat.values()))}}


def soak(package: str, minutes: float, backend: str = "ort", fps: int = 30, size: str = "1920x1080",
         warmup_s: float | None = None, log_path: str | None = None, progress=None) -> dict:
    """Run the live phantom through `run`'s pipeline for `minutes`; samples at start (after warm-up),
    every minute and at the end, and the growth between the first and last sample."""
    from rating_edge.runtime.app import RunConfig, build_pipeline, stop_signals
    from rating_edge.runtime.memory import keep_freed_memory
    from rating_edge.runtime.stats import RunStats

    if not minutes > 0:
        raise RatingEdgeError(f"--soak {minutes}: give the minutes to run (> 0)")
    total_s = minutes * 60.0
    # the heap grows to the loop's working set and stays there (memory.py keeps freed blocks for reuse),
    # and ONNX Runtime's arena fills with the first pairs: two minutes of a 10-minute run, measured
    warmup_s = min(max(60.0, total_s * 0.2), total_s / 2) if warmup_s is None else warmup_s
    import tempfile

    proc = _process()
    src = f"phantom://?seed=3&fps={fps}&size={size}&layout=single"
    tmp = tempfile.TemporaryDirectory(prefix="rating-edge-soak-")
    log_path = log_path or os.path.join(tmp.name, "session.db")  # a real session logs every pair
    cfg = RunConfig(source=src, package=str(package), backend=backend, log=log_path).validate()
    keep_freed_memory()
    stats = RunStats()
    samples = []
    with stop_signals() as stop:
        pipe = build_pipeline(cfg, stats=stats, quiet=True)
        stop.pipeline = pipe
        t0 = time.perf_counter()
        next_at = [t0 + warmup_s]
        first = [sample(pipe, proc)]

        def on_frame(c, d, p):
            now = time.perf_counter()
            if now >= next_at[0]:
                samples.append(sample(p, proc))
                next_at[0] = now + 60.0
                if progress is not None:
                    progress(samples[-1], now - t0)
            if now - t0 >= total_s:
                p.request_stop("soak finished")

        try:
            pipe.run(on_frame=on_frame)
        finally:
            samples.append(sample(pipe, proc))
            extra = pipe.close()
    wall = time.perf_counter() - t0
    log_bytes = os.path.getsize(log_path) if os.path.exists(log_path) else 0
    tmp.cleanup()
    start, end = (samples[0], samples[-1]) if len(samples) > 1 else (first[0], samples[-1])
    report = stats.report({"source": src, "model": pipe.model_id, **extra})
    return {"package": str(package), "minutes": minutes, "wall_s": round(wall, 1), "warmup_s": warmup_s,
            "fps_target": fps, "fps_out": round(report["frames_out"] / max(wall, 1e-9), 2),
            "before_warmup": first[0], "start": start, "end": end, "samples": samples,
            "rss_growth_pct": round((end["rss_mb"] - start["rss_mb"]) / start["rss_mb"] * 100, 2),
            "rss_growth_pct_per_minute_after_warmup": [
                round((b["rss_mb"] - a["rss_mb"]) / a["rss_mb"] * 100, 3) for a, b in zip(samples, samples[1:])],
            "open_files_growth": end["open_files"] - start["open_files"],
            "threads_growth": end["threads"] - start["threads"], "log_bytes": log_bytes, "run_report": report}
