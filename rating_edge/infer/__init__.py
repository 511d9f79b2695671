"""The inference layer every command uses: one runner contract, one module per backend.

`make_runner(package, backend)` is the only way in. Backends are registered by name and imported lazily,
so a machine without TensorRT, OpenVINO or a Triton client never imports them, and the runtime's import
graph stays torch-free.
"""
from __future__ import annotations

import importlib

from rating_edge.infer.base import GraphRunner, Runner, assemble, check_outputs
from rating_edge.infer.errors import EngineMismatch, EngineUnavailable
from rating_edge.infer.loaders import choose_variant
from rating_edge.infer.names import (
    AUTO,
    BACKENDS,
    backend_names,
    resolve_backend,
    split_backend,
)


def runner_class(backend: str):
    module, cls = BACKENDS[split_backend(resolve_backend(backend))[0]]
    return getattr(importlib.import_module(module), cls)


def backend_options(backend: str, url: str | None = None, infer_timeout: float | None = None) -> dict:
    """The options a command's `--url`/`--infer-timeout` give the backend that takes them (Triton)."""
    if split_backend(backend)[0] != "triton":
        return {}
    from rating_edge.infer.triton import parse_url

    parse_url(url)  # a missing or malformed --url is a one-line error before any work
    return {"url": url, **({"infer_timeout": infer_timeout} if infer_timeout is not None else {})}


def make_runner(package, backend: str = "ort", variant: str | None = None, **kw) -> Runner:
    """A runner for `package` (path or Package) on `backend`: "ort", "trt", "triton" (kw: url),
    "openvino[:fp32|bf16|int8]" (no precision: the fastest gated OpenVINO form here) or "auto" (the
    fastest gated CPU form here, ONNX Runtime or OpenVINO: rating_edge.infer.cpu_forms.choose_cpu_form).

    `variant` None picks the form that fits the backend (`choose_variant`); "default" forces the
    package's main (FP32) graphs."""
    from rating_edge.package import Package, load_package

    if not isinstance(package, Package):
        package = load_package(package)
    backend = resolve_backend(backend)
    if backend == AUTO:
        from rating_edge.infer.cpu_forms import choose_cpu_form

        form = choose_cpu_form(package)
        backend = resolve_backend(form["backend"])
        variant = variant or form["variant"]
        from rating_edge.threads import from_env

        if form.get("threads") and kw.get("threads") is None and from_env() is None:
            kw["threads"] = form["threads"]  # measured fastest here; RATING_EDGE_THREADS still wins
    name, opt = split_backend(backend)
    if name == "openvino":
        from rating_edge.infer.openvino import OpenVinoRunner, openvino_form

        prec, variant = openvino_form(package, opt, variant)
        return OpenVinoRunner(package, precision=prec, variant=variant, **kw)
    if name == "ort" and variant is None:
        variant = choose_variant(package, name)
    return runner_class(name)(package, variant=variant, **kw)


__all__ = ["Runner", "GraphRunner", "assemble", "check_outputs", "make_runner", "choose_variant", "BACKENDS",
           "backend_names", "backend_options", "resolve_backend", "split_backend", "runner_class", "EngineMismatch", "EngineUnavailable"]
