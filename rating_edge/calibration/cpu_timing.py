"""Batch-1 timings of a package's CPU forms on the machine that makes the package, for
`rating_edge.infer.cpu_forms.choose_cpu_form` (measured beats expected)."""
from __future__ import annotations

import time

import numpy as np

from rating_edge.infer.cpu_forms import cpu_key
from rating_edge.package import Package


def time_cpu_forms(package: Package, gs: np.ndarray, doppler: np.ndarray, forms: dict, iters: int = 7,
                   log=None) -> dict:
    """Median batch-1 milliseconds of each form {form: (backend, variant)} on one pair, each form timed
    on its own after two warm-up pairs (timing them in turn would let the forms evict each other's
    weights from the caches, which slowed the paper stack by 1.7x). Recorded with the machine it ran
    on (`cpu_key`) for `choose_cpu_form`."""
    from rating_edge.infer import make_runner

    feed = {"gs": gs[:1], "doppler": doppler[:1]}
    ms = {}
    for form, (backend, variant) in forms.items():
        with make_runner(package, backend, variant=variant) as r:
            ms[form] = round(median_ms(r, feed, iters, warmup=2), 3)
        if log is not None:
            log(f"  timed {form}: {ms[form]:.1f} ms per pair (batch 1, median of {iters})")
    return {"on": cpu_key(), "batch": 1, "iters": iters, "ms": ms}


def median_ms(runner, feed: dict, iters: int, warmup: int = 1) -> float:
    """Median milliseconds of `runner.infer(feed)` over `iters` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        runner.infer(feed)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        runner.infer(feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))

