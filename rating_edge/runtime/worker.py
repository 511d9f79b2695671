"""Inference beside capture: preprocess -> engine -> ECOC/MULTITUDE for the latest pair.

The worker owns a one-slot buffer, so when the engine is slower than the video only the newest pair
waits (older ones are dropped and counted) and the render loop keeps drawing the latest result with
its age. Any failure (engine, preprocessing, a malformed pair) is caught: the result stream carries
the error, the overlay shows "AI unavailable", and the message is reported once, not per frame.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from rating_edge.preprocess import PreprocessParams, prepare_doppler, prepare_gs
from rating_edge.runtime.capture import LatestSlot
from rating_edge.runtime.pairing import Pair
from rating_edge.scoring import Thresholds, score_probs


@dataclass
class Result:
    pair: Pair
    scores: dict | None = None  # score_probs of this pair (batch dimension removed)
    sh_prob: np.ndarray | None = None
    vs_prob: np.ndarray | None = None
    heat_gs: np.ndarray | None = None
    heat_doppler: np.ndarray | None = None
    timings: dict = field(default_factory=dict)  # preprocess, infer, score, wash (ms)
    t_done: float = 0.0  # perf_counter
    error: str | None = None
    # heatmap washes prepared for the pair's ROI sizes, {(mode, w, h): overlay.Wash | None}: made on the
    # inference thread so the frame path only blends them
    washes: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None


def _finite_map(batch) -> np.ndarray | None:
    """The pair's heatmap, or None when there is none or it is not finite (no wash beats a wrong one)."""
    if batch is None:
        return None
    m = np.asarray(batch)[0]
    return m if np.isfinite(m).all() else None


def _washes(pair: Pair, heat_gs, heat_dop) -> dict:
    """The washes the overlay will draw next for this pair: each heatmap at its ROI's size (the whole
    crop when there is no ROI), keyed as the overlay looks them up. A single-layout screen shows the
    Doppler image when the pair is made; a GS wash is made by the overlay if the GS image returns."""
    from rating_edge.runtime.overlay import prepare_wash

    out = {}
    for mode, heat, crop, roi in (("doppler", heat_dop, pair.doppler_bgr, pair.roi_doppler),
                                  ("gs", heat_gs, pair.gs_bgr, pair.roi_gs)):
        if heat is None or (crop is None and roi is None) or (mode == "gs" and pair.layout != "dual"):
            continue
        w, h = (int(roi[2]), int(roi[3])) if roi is not None else (crop.shape[1], crop.shape[0])
        out[(mode, w, h)] = prepare_wash(heat, w, h)
    return out


class Scorer:
    """The engine-facing half of a pair's life (everything a Runner does not)."""

    def __init__(self, runner, params: PreprocessParams | None = None):
        self.runner = runner
        pkg = getattr(runner, "package", None)
        self.params = params or (pkg.preprocess if pkg is not None else PreprocessParams())
        # the model's own decision thresholds (imported official networks carry theirs; else 0.5 and ">")
        meta = getattr(pkg, "meta", None)
        self.thresholds = Thresholds.from_meta(meta) if isinstance(meta, dict) else None
        size = getattr(getattr(runner, "spec", None), "input_size", None)
        if size and size != self.params.input_size:
            self.params = PreprocessParams.from_dict({**self.params.to_dict(), "input_size": size})
        self._gs_key = self._gs_input = None
        # GS and Doppler inputs are independent: with a second core the GS one is prepared beside
        # the Doppler one (OpenCV and NumPy release the GIL), which takes about a third off the pair
        self._pool = None
        self.parallel = (os.cpu_count() or 1) > 1

    def prepare(self, pair: Pair) -> tuple[np.ndarray, np.ndarray]:
        """Engine inputs (1, S, S, 3) of a pair. A single-layout scanner pairs every Doppler frame of a
        section with the same GS frame, so that GS input is prepared once and reused while the GS
        frame, its size and the ROI stay the same."""
        key = (pair.frame_gs, pair.gs_bgr.shape, pair.roi_gs, pair.layout)
        gs_job = None
        if key != self._gs_key:
            self._gs_key = None
            if self.parallel:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="prepare-gs")
                gs_job = self._pool.submit(prepare_gs, pair.gs_bgr, pair.roi_gs, self.params)
            else:
                self._gs_input = prepare_gs(pair.gs_bgr, pair.roi_gs, self.params)[None]
        dop = prepare_doppler(pair.doppler_bgr, pair.roi_doppler, self.params)[None]
        if gs_job is not None:
            self._gs_input = gs_job.result()[None]
        self._gs_key = key
        return self._gs_input, dop

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    @staticmethod
    def grade(out: dict, thresholds=None):
        """(scores, sh_prob, vs_prob) of one pair's engine outputs: ECOC/MULTITUDE with the model's own
        decision thresholds, shared with archive scoring so the runtime and the archive grade a pair
        identically."""
        sh_prob = np.asarray(out["sh_prob"])[0]
        vs_prob = np.asarray(out["vs_prob"])[0]
        if not (np.isfinite(sh_prob).all() and np.isfinite(vs_prob).all()):
            raise ValueError("engine returned NaN or infinite probabilities")  # never shown as a grade
        sc = score_probs(sh_prob[None], vs_prob[None], thresholds)
        return {k: (v[0] if np.ndim(v) else v) for k, v in sc.items()}, sh_prob, vs_prob

    def score(self, pair: Pair) -> Result:
        t0 = time.perf_counter()
        try:
            gs, dop = self.prepare(pair)
            t1 = time.perf_counter()
            out = self.runner.infer({"gs": gs, "doppler": dop})
            t2 = time.perf_counter()
            scores, sh_prob, vs_prob = self.grade(out, self.thresholds)
            t3 = time.perf_counter()
        except Exception as e:  # noqa: BLE001 - fail open: the feed must keep flowing
            return Result(pair, error=f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}",
                          t_done=time.perf_counter())
        heat_gs, heat_dop = (_finite_map(out.get(k)) for k in ("heat_gs", "heat_doppler"))
        try:
            washes = _washes(pair, heat_gs, heat_dop)
        except Exception:  # noqa: BLE001 - the overlay prepares what is missing itself
            washes = {}
        t4 = time.perf_counter()
        return Result(pair, scores, sh_prob, vs_prob, heat_gs, heat_dop,
                      {"preprocess": (t1 - t0) * 1e3, "infer": (t2 - t1) * 1e3, "score": (t3 - t2) * 1e3,
                       "wash": (t4 - t3) * 1e3}, t4, washes=washes)


class InferenceWorker(threading.Thread):
    """Runs `Scorer.score` on the newest submitted pair; results are collected with `take()`."""

    def __init__(self, scorer: Scorer):
        super().__init__(name="inference", daemon=True)
        self.scorer = scorer
        self.slot = LatestSlot()
        self._results = []
        self._lock = threading.Lock()
        self._pending = False

    @property
    def dropped(self) -> int:
        return self.slot.dropped

    def submit(self, pair: Pair) -> None:
        with self._lock:
            self.slot.put(pair, block=False)
            self._pending = True

    def run(self):
        while True:
            try:
                pair = self.slot.get(timeout=0.1)
            except EOFError:
                return
            if pair is None:
                continue
            res = self.scorer.score(pair)
            with self._lock:
                self._results.append(res)
                if not self.slot._has:
                    self._pending = False

    def take(self) -> list:
        with self._lock:
            out, self._results = self._results, []
        return out

    def idle(self) -> bool:
        with self._lock:
            return not self._pending

    def close(self, timeout: float = 10.0):
        self.slot.close()
        self.join(timeout)
