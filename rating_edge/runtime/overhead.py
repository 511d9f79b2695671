"""The runtime's own cost per frame, everything except the engine (for `rating-edge bench --runtime`).

The engine's time depends on the package and the accelerator; what the runtime adds on top (decode,
screen understanding, pairing, preprocessing, scoring, drawing) must stay small on the edge CPU, so it
is measured on its own: the run loop's pipeline (`app.build_pipeline`, the same composition `run`
uses) runs with a runner that returns fixed outputs of the right shapes, pairs scored inline.
"""
from __future__ import annotations

import time

import cv2
import numpy as np

from rating_edge.infer import Runner
from rating_edge.package import Package
from rating_edge.preprocess import PreprocessParams
from rating_edge.runtime.capture import FramesSource, Source, open_source
from rating_edge.runtime.stats import RunStats, percentiles
from rating_edge.spec import preset

STAGES = ("capture", "layout", "pairing", "preprocess", "infer", "score", "render", "sinks", "total")


class _FixedPackage(Package):
    @property
    def model_hash(self) -> str:
        return "fixed-outputs"


class FixedOutputRunner(Runner):
    """A Runner whose outputs are fixed arrays of the package shapes: what the pipeline does around an
    engine is timed without one (the `infer` stage is then the runner call's own overhead)."""

    name = "fixed-outputs"

    def __init__(self, input_size: int = 224, heat: int = 7, seed: int = 0):
        spec = {**preset("paper").to_dict(), "input_size": int(input_size)}
        pre = PreprocessParams(input_size=int(input_size)).to_dict()
        super().__init__(_FixedPackage(path=None, meta={"spec": spec, "preprocess": pre}))
        sp = self.spec
        rng = np.random.default_rng(seed)
        self.outputs = {"sh_prob": rng.uniform(0, 1, (1, sp.folds, sp.tasks, sp.seeds)).astype(np.float32),
                        "vs_prob": rng.uniform(0, 1, (1, sp.folds, sp.tasks, sp.seeds)).astype(np.float32),
                        "heat_gs": rng.uniform(0, 1, (1, heat, heat)).astype(np.float32),
                        "heat_doppler": rng.uniform(0, 1, (1, heat, heat)).astype(np.float32)}

    def _activate(self):
        pass

    def _infer(self, gs, dop):
        return self.outputs


class ResizedSource(Source):
    """Another source's frames brought to one size (the benchmark's frame size); the resize is part of
    the timed capture, as decoding is."""

    def __init__(self, src: Source, size):
        super().__init__()
        self.src, self.size, self.live, self.name = src, (int(size[0]), int(size[1])), src.live, src.name
        self.can_stall = src.can_stall

    def open(self):
        self.src.open()
        self.fps = self.src.fps
        return self

    def read(self):
        img, meta = self.src.read()
        if img is not None and img.shape[:2] != (self.size[1], self.size[0]):
            img = cv2.resize(img, self.size, interpolation=cv2.INTER_LINEAR)
        return img, meta

    def close(self):
        self.src.close()


def measure_runtime_overhead(source: str = "phantom://?seed=0&fps=30", frames: int = 300, size=(1920, 1080),
                             input_size: int = 224, warmup: int = 10) -> dict:
    """Per-frame cost (ms, p50/p95/p99) of each pipeline stage on `frames` frames resized to `size`.

    Two passes over the same frames:
    - as `rating-edge run` runs (the headline, `latency_ms`): pairs go to the inference thread, whose
      preprocessing and scoring run beside the frame path; `total` is the frame path's own time per
      frame, what the runtime adds to every frame the radiologist sees;
    - everything on one thread (`serial`): every pair scored inline before the frame is drawn, the
      bound for a single core.
    `cpu_ms_per_frame` (all threads, run's arrangement) is what the runtime takes from the engine.
    Recordings are decoded inside the timed capture stage; phantom frames are rendered beforehand (the
    synthetic renderer is not a capture cost) and the capture stage is then the frame copy a grabber does.
    """
    W, H = int(size[0]), int(size[1])
    src = open_source(source)
    if src.live:  # phantom / live sources: render first, time only the copy
        src.open()
        buf = []
        try:
            for _ in range(frames + warmup):
                img, _ = src.read()
                if img is None:
                    break
                buf.append(cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR) if img.shape[:2] != (H, W) else img)
        finally:
            src.close()
        fps = src.fps

        def make():
            return FramesSource(buf, fps=fps, name=source)
    else:
        src.close()

        def make():
            return ResizedSource(open_source(source), (W, H))

    run = _one_pass(make(), source, frames, warmup, input_size, inline=False)
    serial = _one_pass(make(), source, frames, warmup, input_size, inline=True)
    return {"source": source, "size": [W, H], **run,
            "serial": {"latency_ms": serial["latency_ms"], "pairs": serial["pairs"],
                       "cpu_ms_per_frame": serial["cpu_ms_per_frame"]},
            "note": "runtime overhead per frame, engine excluded (fixed outputs): latency_ms is the frame path "
                    "as `run` runs it (scoring on the inference thread), serial everything on one thread; "
                    "target p95 <= 10 ms"}


def _one_pass(src: Source, source: str, frames: int, warmup: int, input_size: int, inline: bool) -> dict:
    from rating_edge.runtime.app import RunConfig, build_pipeline
    from rating_edge.runtime.memory import keep_freed_memory

    keep_freed_memory()  # as `rating-edge run` does
    stats = RunStats()
    cfg = RunConfig(source=source, every_pair=inline, pace=False, max_frames=frames + warmup)
    pipe = build_pipeline(cfg, runner=FixedOutputRunner(input_size), source=src, stats=stats, quiet=True)
    mark = {} if warmup > 0 else {"pairs": 0, "frames": 0, "cpu": time.process_time()}

    def on_frame(c, d, p):
        if p.stats.frames_out == warmup:  # the first frames warm caches and allocators: not timed
            p.stats.reset_latency()
            mark.update(pairs=p.stats.pairs_scored, frames=p.stats.frames_out, cpu=time.process_time())

    try:
        pipe.run(on_frame=on_frame)
    finally:
        extra = pipe.close()
    n = stats.frames_out - mark.get("frames", stats.frames_out)
    cpu_s = time.process_time() - mark["cpu"] if mark else 0.0
    lat = stats.latency()
    lat["total"] = lat.get("own", percentiles([]))
    pairs = stats.pairs_scored - mark.get("pairs", stats.pairs_scored)
    return {"frames": n, "pairs": pairs, "input_size": input_size, "scoring": "inline" if inline else "inference thread",
            "latency_ms": {s: lat.get(s, percentiles([])) for s in STAGES},
            # CPU seconds this process spent per frame (all threads): less sensitive than wall time to
            # other processes sharing the cores
            "cpu_ms_per_frame": round(cpu_s / max(n, 1) * 1e3, 3),
            "errors_by_stage": {k: v for k, v in stats.errors_by_stage.items() if v}, **extra}
