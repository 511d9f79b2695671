"""The runtime's own cost per frame, everything except the engine (for `rating-edge bench --runtime`).

The engine's time depends on the package and the accelerator; what the runtime adds on top (decode,
screen understanding, pairing, preprocessing, scoring, drawing) must stay small on the edge CPU, so it
is measured on its own: the engine is replaced by fixed outputs of the right shapes.
"""
from __future__ import annotations

import time

import cv2
import numpy as np

from rating_edge.preprocess import PreprocessParams
from rating_edge.runtime.aggregate import TemporalAggregator
from rating_edge.runtime.capture import open_source
from rating_edge.runtime.layout import LayoutDetector
from rating_edge.runtime.memory import keep_freed_memory
from rating_edge.runtime.overlay import OverlayState, render
from rating_edge.runtime.pairing import Pairer
from rating_edge.runtime.stats import percentiles
from rating_edge.runtime.worker import Result, Scorer
from rating_edge.scoring import score_probs

STAGES = ("capture", "layout", "pairing", "preprocess", "score", "render", "total")


def _fixed_outputs(folds=5, seeds=2, heat=7, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(0, 1, (folds, 3, seeds)).astype(np.float32), rng.uniform(0, 1, (folds, 3, seeds)).astype(np.float32),
            rng.uniform(0, 1, (heat, heat)).astype(np.float32), rng.uniform(0, 1, (heat, heat)).astype(np.float32))


def measure_runtime_overhead(source: str = "phantom://?seed=0&fps=30", frames: int = 300, size=(1920, 1080),
                             input_size: int = 224, warmup: int = 10) -> dict:
    """Per-frame cost (ms, p50/p95/p99) of each runtime stage on `frames` frames resized to `size`.

    Recordings are decoded inside the timed capture stage; phantom frames are rendered beforehand (the
    synthetic renderer is not a capture cost) and the capture stage is then the frame copy a grabber does.
    """
    W, H = int(size[0]), int(size[1])
    keep_freed_memory()  # as `rating-edge run` does
    src = open_source(source).open()
    pre_rendered = src.live  # phantom / live sources: render first, time only the copy
    buf = []
    if pre_rendered:
        for _ in range(frames + warmup):
            img, _ = src.read()
            if img is None:
                break
            buf.append(cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR) if img.shape[:2] != (H, W) else img)
        src.close()
    params = PreprocessParams(input_size=input_size)
    det = LayoutDetector(doppler=params.doppler, fractions=False)  # as the run loop
    pairer = Pairer()
    scorer = Scorer(None, params)  # its preprocessing only: the engine is what this leaves out
    agg = TemporalAggregator()
    sh_p, vs_p, heat_g, heat_d = _fixed_outputs()
    st = OverlayState(model_id="overhead", fps=30.0)
    lat = {s: [] for s in STAGES}
    n_pairs = 0
    n = 0
    cpu = 0.0
    try:
        for i in range(frames + warmup):
            c0 = time.process_time()
            t0 = time.perf_counter()
            if pre_rendered:
                if i >= len(buf):
                    break
                img = buf[i].copy()
            else:
                img, _ = src.read()
                if img is None:
                    break
                if img.shape[:2] != (H, W):
                    img = cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR)
            t1 = time.perf_counter()
            lo = det.detect(img)
            t2 = time.perf_counter()
            pair, status = pairer.update(i, i / 30.0, img, lo, t0)
            pairer.detach(img)  # as the run loop does before drawing on the frame
            t3 = time.perf_counter()
            t4 = t5 = t3
            if pair is not None:
                gs, dop = scorer.prepare(pair)
                assert gs.shape == dop.shape
                t4 = time.perf_counter()
                sc = score_probs(sh_p[None], vs_p[None], scorer.thresholds)
                scores = {k: v[0] for k, v in sc.items()}
                a = agg.add(pair.section, pair.t, scores["sh_models"], scores["vs_models"], (scores["sh"], scores["vs"]))
                st.result = Result(pair, scores, sh_p, vs_p, heat_g, heat_d, {}, t4)
                st.aggregate = a
                t5 = time.perf_counter()
                n_pairs += 1 if i >= warmup else 0
            st.status = status
            render(img, lo, st, in_place=True)
            t6 = time.perf_counter()
            if i < warmup:
                continue
            cpu += time.process_time() - c0
            n += 1
            lat["capture"].append((t1 - t0) * 1e3)
            lat["layout"].append((t2 - t1) * 1e3)
            lat["pairing"].append((t3 - t2) * 1e3)
            if pair is not None:
                lat["preprocess"].append((t4 - t3) * 1e3)
                lat["score"].append((t5 - t4) * 1e3)
            lat["render"].append((t6 - t5) * 1e3)
            lat["total"].append((t6 - t0) * 1e3)
    finally:
        src.close()
        scorer.close()
    return {"source": source, "size": [W, H], "frames": n, "pairs": n_pairs, "input_size": input_size,
            "latency_ms": {s: percentiles(v) for s, v in lat.items()},
            # CPU seconds this process spent per frame (all threads): less sensitive than wall time to
            # other processes sharing the cores
            "cpu_ms_per_frame": round(cpu / max(n, 1) * 1e3, 3),
            "note": "runtime overhead per frame, engine excluded (fixed outputs); target p95 <= 10 ms"}
