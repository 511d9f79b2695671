"""Backend names as users type them (`ort`, `openvino:bf16`, `auto`, ...) and their one resolution, used by
the registry, the loaders and the OpenVINO module alike (so no module parses a backend string twice)."""
from __future__ import annotations

from rating_edge.errors import RatingEdgeError

# backend name -> (module, class); aliases map the names users type to these.
BACKENDS = {
    "ort": ("rating_edge.infer.ort", "OrtRunner"),
    "openvino": ("rating_edge.infer.openvino", "OpenVinoRunner"),
    "trt": ("rating_edge.infer.trt", "TrtRunner"),
    "triton": ("rating_edge.infer.triton", "TritonRunner"),
}
ALIASES = {"onnxruntime": "ort", "tensorrt": "trt"}
AUTO = "auto"  # the fastest gated CPU form on this machine (ONNX Runtime or OpenVINO)
OPENVINO_PRECISIONS = ("fp32", "bf16", "int8")


def backend_names() -> list[str]:
    return [*BACKENDS, "openvino:fp32|bf16|int8", AUTO]


def split_backend(backend: str) -> tuple[str, str | None]:
    """("openvino", "bf16") from "openvino:bf16"; the option after ':' is a precision (OpenVINO only)."""
    name, _, opt = str(backend).strip().lower().partition(":")
    return ALIASES.get(name, name), (opt or None)


def resolve_backend(backend: str) -> str:
    """The canonical backend string, or a one-line error naming the choices."""
    name, opt = split_backend(backend)
    if name == AUTO and opt is None:
        return AUTO
    if name not in BACKENDS:
        raise RatingEdgeError(f"unknown backend {backend!r}; choose one of: {', '.join(backend_names())}")
    if opt is not None:
        if name != "openvino":
            raise RatingEdgeError(f"backend {backend!r}: only openvino takes a precision (openvino:fp32|bf16|int8)")
        if opt not in OPENVINO_PRECISIONS:
            raise RatingEdgeError(f"backend {backend!r}: unknown precision {opt!r}; OpenVINO precisions are "
                                  f"{', '.join(OPENVINO_PRECISIONS)}")
        return f"{name}:{opt}"
    return name
