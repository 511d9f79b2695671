"""Per-stage latency percentiles, frame counters and errors by stage, reported in the shape docs/design/runtime.md
marks stable (extra keys: the pipeline's own stages, `errors_by_stage`).

Latencies are kept as a fixed-size uniform sample of the whole session (reservoir sampling), not as a
list per frame: a feed runs for hours, and a list of every frame's timings grows the process by tens
of megabytes a day.
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np

STAGES = ("capture", "preprocess", "infer", "score", "render", "total")
PIPELINE_STAGES = ("layout", "pairing", "aggregation", "sinks")  # reported too, beside the stable ones
MODES = ("gs", "doppler", "frozen", "no_signal")
ERROR_STAGES = ("engine", "capture", "frame", "layout", "pairing", "inference", "overlay", "sinks", "log")
RESERVOIR = 8192


class Reservoir:
    """A uniform sample of at most `size` values of a stream (Vitter's algorithm R), so percentiles of a
    day-long session cost a fixed 64 KB per stage."""

    def __init__(self, size: int = RESERVOIR, seed: int = 0):
        self.buf = np.empty(size, np.float64)
        self.n = 0
        self._rng = np.random.default_rng(seed)

    def add(self, v: float) -> None:
        if self.n < self.buf.size:
            self.buf[self.n] = v
        else:
            j = int(self._rng.integers(0, self.n + 1))
            if j < self.buf.size:
                self.buf[j] = v
        self.n += 1

    def values(self) -> np.ndarray:
        return self.buf[:min(self.n, self.buf.size)]

    def __len__(self):
        return self.n


def percentiles(values) -> dict:
    if len(values) == 0:
        return {"p50": None, "p95": None, "p99": None}
    a = np.asarray(values, np.float64)
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3)}


class RunStats:
    """Thread-safe: the capture thread, the inference worker and the render loop all record here."""

    def __init__(self, stages=STAGES):
        self._lock = threading.Lock()
        self.lat = {s: Reservoir() for s in stages}
        self.frames_in = 0
        self.frames_out = 0
        self.frames_dropped = 0
        self.modes = {m: 0 for m in MODES}
        self.pairs_scored = 0
        self.pairs_dropped = 0
        self.errors_by_stage = {k: 0 for k in ERROR_STAGES}

    @property
    def errors(self) -> int:
        return int(sum(self.errors_by_stage.values()))

    def reset_latency(self) -> None:
        """Forget the timings so far (a benchmark's warm-up frames)."""
        with self._lock:
            self.lat = {s: Reservoir() for s in self.lat}

    def count_error(self, stage: str, n: int = 1) -> None:
        with self._lock:
            self.errors_by_stage[stage] = self.errors_by_stage.get(stage, 0) + n

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            if stage not in self.lat:
                self.lat[stage] = Reservoir()
            self.lat[stage].add(float(ms))

    def count_mode(self, mode: str) -> None:
        with self._lock:
            self.modes[mode] = self.modes.get(mode, 0) + 1

    def latency(self) -> dict:
        with self._lock:
            return {s: percentiles(v.values()) for s, v in self.lat.items()}

    def report(self, extra: dict | None = None) -> dict:
        r = {"frames_in": self.frames_in, "frames_out": self.frames_out, "frames_dropped": self.frames_dropped,
             "modes": {m: int(self.modes.get(m, 0)) for m in MODES}, "pairs_scored": self.pairs_scored,
             "latency_ms": {s: v for s, v in self.latency().items() if s in STAGES + PIPELINE_STAGES}}
        r["pairs_dropped"] = self.pairs_dropped
        r["errors"] = self.errors
        r["errors_by_stage"] = dict(self.errors_by_stage)
        if extra:
            r.update(extra)
        return r

    def write(self, path, extra: dict | None = None) -> Path:
        """Written to a temp file and renamed, so a stop mid-write never leaves half a report."""
        return write_report(path, self.report(extra))


def write_report(path, report: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, path)
    return path
