"""The one thread policy: how many threads each engine (ONNX Runtime, OpenVINO, eager PyTorch) gets.

`RATING_EDGE_THREADS` overrides everything, so a scanner integrator can leave cores to the scanner's own
software. Without it, inference uses every core. Eager PyTorch on tiny networks (width <= 16) gets one
thread: their ops are too small to split, and on a busy 2-core machine two threads made a width-8 training
step 15x slower (spin-waiting), measured 1.6 s vs 0.1 s per batch; tiny-ensemble init took 8 s at 1 thread
and 75 s at 2.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

from rating_edge.errors import RatingEdgeError

ENV = "RATING_EDGE_THREADS"
TINY_WIDTH = 16


def from_env() -> int | None:
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return None
    try:
        n = int(raw)
    except ValueError:
        raise RatingEdgeError(f"{ENV}={raw!r} is not a whole number of threads") from None
    if n < 0:
        raise RatingEdgeError(f"{ENV}={n} must be 0 (all cores) or more")
    return n or None


def inference_threads(explicit: int | None = None) -> int:
    """Threads for an inference engine (ONNX Runtime intra-op pool, OpenVINO streams' threads)."""
    if explicit is not None:
        if explicit < 1:
            raise RatingEdgeError(f"threads must be at least 1, got {explicit}")
        return int(explicit)
    return from_env() or (os.cpu_count() or 1)


def torch_threads(width: int, explicit: int | None = None) -> int:
    """Threads for eager PyTorch on networks of `width` base channels."""
    if explicit:
        return inference_threads(explicit)
    env = from_env()
    if env:
        return env
    return 1 if width <= TINY_WIDTH else (os.cpu_count() or 1)


@contextmanager
def torch_threads_set(n: int):
    """Run a block with `n` torch threads and restore the caller's setting after."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
