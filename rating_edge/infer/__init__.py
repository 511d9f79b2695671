"""The inference layer every command uses: one runner contract, one module per backend.

`make_runner(package, backend)` is the only way in. Backends are registered by name and imported lazily,
so a machine without TensorRT, OpenVINO or a Triton client never imports them, and the runtime's import
graph stays torch-free.
"""
from __future__ import annotations

import importlib

from rating_edge.errors import RatingEdgeError
from rating_edge.infer.base import GraphRunner, Runner, assemble, check_outputs
from rating_edge.infer.errors import EngineMismatch, EngineUnavailable
from rating_edge.infer.loaders import choose_variant

# backend name -> (module, class); aliases map the names users type to these.
BACKENDS = {
    "ort": ("rating_edge.infer.ort", "OrtRunner"),
    "trt": ("rating_edge.infer.trt", "TrtRunner"),
    "triton": ("rating_edge.infer.triton", "TritonRunner"),
}
ALIASES = {"onnxruntime": "ort", "tensorrt": "trt"}


def backend_names() -> list[str]:
    return list(BACKENDS)


def resolve_backend(backend: str) -> str:
    name = ALIASES.get(str(backend).lower(), str(backend).lower())
    if name not in BACKENDS:
        raise RatingEdgeError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    return name


def runner_class(backend: str):
    module, cls = BACKENDS[resolve_backend(backend)]
    return getattr(importlib.import_module(module), cls)


def make_runner(package, backend: str = "ort", variant: str | None = None, **kw) -> Runner:
    """A runner for `package` (path or Package) on `backend`.

    `variant` None picks the form that fits the backend (`choose_variant`); "default" forces the
    package's main (FP32) graphs."""
    from rating_edge.package import Package, load_package

    if not isinstance(package, Package):
        package = load_package(package)
    name = resolve_backend(backend)
    if name == "ort" and variant is None:
        variant = choose_variant(package, name)
    return runner_class(name)(package, variant=variant, **kw)


__all__ = ["Runner", "GraphRunner", "assemble", "check_outputs", "make_runner", "choose_variant", "BACKENDS",
           "backend_names", "resolve_backend", "runner_class", "EngineMismatch", "EngineUnavailable"]
