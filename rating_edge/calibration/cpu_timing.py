"""Batch-1 timings of a package's CPU forms on the machine that makes the package, for
`rating_edge.infer.cpu_forms.choose_cpu_form` (measured beats expected)."""
from __future__ import annotations

import time

import numpy as np

from rating_edge.infer.cpu_forms import cpu_key
from rating_edge.package import Package


def time_cpu_forms(package: Package, gs: np.ndarray, doppler: np.ndarray, forms: dict, iters: int = 7,
                   log=None, thread_counts=None) -> dict:
    """Median batch-1 milliseconds of each form {form: (backend, variant)} on one pair, at one thread and
    at every core (`thread_counts`), each timing on its own after two warm-up pairs (timing the forms in
    turn would let them evict each other's weights from the caches, which slowed the paper stack by
    1.7x). A form's figure is its faster thread count, recorded beside it: on this project's 2-vCPU
    machine OpenVINO's AMX INT8 ran no faster on two threads than on one (the vCPUs share the AMX
    throughput), while ONNX Runtime's VNNI kernels gained 1.5-1.7x, so the thread count is measured,
    not assumed. Recorded with the machine (`cpu_key`) for `choose_cpu_form`."""
    from rating_edge.infer import make_runner
    from rating_edge.threads import inference_threads

    counts = sorted(set(thread_counts or (1, inference_threads())))
    feed = {"gs": gs[:1], "doppler": doppler[:1]}
    by_threads: dict = {}
    for form, (backend, variant) in forms.items():
        for n in counts:
            with make_runner(package, backend, variant=variant, threads=n) as r:
                by_threads.setdefault(form, {})[str(n)] = round(median_ms(r, feed, iters, warmup=2), 3)
        if log is not None:
            log(f"  timed {form}: " + ", ".join(f"{ms:.1f} ms at {n} thread{'s' if n != '1' else ''}"
                                              for n, ms in by_threads[form].items()) + " per pair (batch 1)")
    ms = {f: min(t.values()) for f, t in by_threads.items()}
    threads = {f: int(min(t, key=t.get)) for f, t in by_threads.items()}
    return {"on": cpu_key(), "batch": 1, "iters": iters, "ms": ms, "threads": threads, "ms_by_threads": by_threads}


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



def record_cpu_timing(path, iters: int = 7, log=print) -> dict:
    """`rating-edge build PKG --cpu`: time the package's gated CPU forms on this machine and record them
    in engines.json (this machine's earlier timing replaced, other machines' kept), so `auto` picks by
    what this CPU measured. The package is quantized on one machine and runs on a scanner cart with
    another CPU: there the cart's own timings decide."""
    from pathlib import Path

    from rating_edge.export.inputs import random_pairs
    from rating_edge.package import (
        PACKAGE_FILE,
        _read_engines,
        load_package,
        write_engines_json,
    )

    path = Path(path)
    pkg = load_package(path)
    forms = cpu_forms(pkg, log)
    gs, dop = random_pairs(1, pkg.spec.input_size, seed=0)
    rec = time_cpu_forms(pkg, gs, dop, forms, iters=iters, log=log)
    side = _read_engines(path, path / PACKAGE_FILE) or {}
    others = [t for t in side.get("cpu_timings", []) if t.get("on") != rec["on"]]
    write_engines_json(path, side.get("engines", []), list(side.get("files", {})), others + [rec])
    return rec


def cpu_forms(pkg: Package, log=None) -> dict:
    """{form: (backend, variant)}: the CPU forms `choose_cpu_form` can pick for this package here, which
    are the ones worth timing: FP32 on each installed backend and every reduced-precision form that
    passed its gate (BF16 only where this CPU runs it)."""
    from rating_edge.infer.cpu_forms import gated_forms, openvino_available

    gated = gated_forms(pkg)
    forms = {"ort-fp32": ("ort", "default")}
    if "ort-int8" in gated:
        forms["ort-int8"] = ("ort", gated["ort-int8"]["variant"])
    if not openvino_available():
        if log is not None:
            log("OpenVINO is not installed: timing the ONNX Runtime forms only (pip install 'rating-edge[openvino]')")
        return forms
    import openvino as ov

    forms["openvino-fp32"] = ("openvino:fp32", None)
    if "openvino-bf16" in gated and "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        forms["openvino-bf16"] = ("openvino:bf16", None)
    if "openvino-int8" in gated:
        forms["openvino-int8"] = ("openvino:int8", gated["openvino-int8"]["variant"])
    return forms

