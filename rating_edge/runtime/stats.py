"""Per-stage latency percentiles and frame counters, reported in the stable shape of docs/design/runtime.md."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

STAGES = ("capture", "preprocess", "infer", "score", "render", "total")
MODES = ("gs", "doppler", "frozen", "no_signal")


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
        self.lat = {s: [] for s in stages}
        self.frames_in = 0
        self.frames_out = 0
        self.frames_dropped = 0
        self.modes = {m: 0 for m in MODES}
        self.pairs_scored = 0
        self.pairs_dropped = 0
        self.errors = 0

    def add(self, stage: str, ms: float) -> None:
        with self._lock:
            self.lat.setdefault(stage, []).append(float(ms))

    def count_mode(self, mode: str) -> None:
        with self._lock:
            self.modes[mode] = self.modes.get(mode, 0) + 1

    def latency(self) -> dict:
        with self._lock:
            return {s: percentiles(v) for s, v in self.lat.items()}

    def report(self, extra: dict | None = None) -> dict:
        r = {"frames_in": self.frames_in, "frames_out": self.frames_out, "frames_dropped": self.frames_dropped,
             "modes": {m: int(self.modes.get(m, 0)) for m in MODES}, "pairs_scored": self.pairs_scored,
             "latency_ms": {s: v for s, v in self.latency().items() if s in STAGES}}
        r["pairs_dropped"] = self.pairs_dropped
        r["errors"] = self.errors
        if extra:
            r.update(extra)
        return r

    def write(self, path, extra: dict | None = None) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.report(extra), indent=2))
        return path
