"""`--chunk auto`: time stacks of candidate sizes with ONNX Runtime on this machine, keep the fastest.

Grouped convolutions are not always faster than separate ones (docs/design/fusion.md: 8 grouped ResNet-18s in
FP32 took 170 ms here vs 8 x 19 ms separately), so the chunk size is measured, not assumed. Timing uses
random weights of the real shapes: speed depends on shapes, not values.
"""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np

from rating_edge.export.fused import emit_input, emit_stack
from rating_edge.export.graph import GraphBuilder
from rating_edge.spec import EnsembleSpec

CANDIDATES = (1, 2, 4, 8, 16)


class _RandomWeights:
    """Stands in for CheckpointReader.folded with random weights of the right shapes."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def folded(self, ref, layer):
        fan_in = layer.cin * layer.k * layer.k
        w = self.rng.standard_normal((layer.cout, layer.cin, layer.k, layer.k), dtype=np.float32)
        return w * np.float32(math.sqrt(2.0 / fan_in)), np.zeros(layer.cout, np.float32)


def time_stack(spec: EnsembleSpec, members: int, opset: int = 17, iters: int = 3, warmup: int = 1) -> float:
    """Median seconds for one stack of `members` backbones at batch 1 (ONNX Runtime, CPU)."""
    import onnxruntime as ort
    from onnx import TensorProto

    from rating_edge.threads import inference_threads

    with tempfile.TemporaryDirectory(prefix="rating-edge-chunk-") as d:
        path = Path(d) / "stack.onnx"
        b = GraphBuilder(opset, Path(d) / "stack.onnx.data")
        x = emit_input(b, "gs", spec.input_size, 1)
        _, f = emit_stack(b, _RandomWeights(), [None] * members, x, spec.width)
        b.add_output(f, "features", TensorProto.FLOAT, [1, members * spec.feature_dim, 1, 1])
        b.save(path, "stack")
        so = ort.SessionOptions()
        so.intra_op_num_threads = inference_threads()
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        feed = {"gs": np.random.default_rng(0).integers(0, 256, (1, spec.input_size, spec.input_size, 3), np.uint8)}
        for _ in range(warmup):
            sess.run(None, feed)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            sess.run(None, feed)
            times.append(time.perf_counter() - t0)
        del sess
    return float(np.median(times))


def choose_chunk(spec: EnsembleSpec, stream_sizes: dict, opset: int = 17, candidates=CANDIDATES, log=None) -> tuple:
    """(best chunk, {"candidates": {c: {"stack_ms", "estimated_total_ms"}}, "chosen": c}).

    The estimated time of a stream with N backbones at chunk c is ceil(N / c) stacks x time(c).
    """
    largest = max(stream_sizes.values())
    cands = [c for c in candidates if c <= max(largest, 1)] or [1]
    table = {}
    for c in cands:
        t = time_stack(spec, c, opset)
        total = sum(math.ceil(n / c) * t for n in stream_sizes.values() if n)
        table[c] = {"stack_ms": round(t * 1e3, 3), "estimated_total_ms": round(total * 1e3, 3)}
        if log:
            log(f"chunk {c}: one stack {t * 1e3:.1f} ms, estimated ensemble backbones {total * 1e3:.1f} ms")
    best = min(table, key=lambda c: table[c]["estimated_total_ms"])
    return best, {"candidates": {str(k): v for k, v in table.items()}, "chosen": best}
