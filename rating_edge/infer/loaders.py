"""Which graphs or engines of a package run on a backend (Polygraphy-style loaders).

A loader is a small callable object that answers "what do I open?" for a runner, so the choice of
variant (ONNX Runtime's U8S8 INT8 graph, OpenVINO's INT8 IR, TensorRT's engine for this GPU) is made in
one place and reported the same way by every command.
"""
from __future__ import annotations

from rating_edge.errors import RatingEdgeError
from rating_edge.infer.errors import EngineMismatch
from rating_edge.infer.names import resolve_backend, split_backend

TRT_PRECISION_ORDER = ("int8", "fp16", "fp32")


def choose_variant(package, backend: str = "ort") -> str | None:
    """The graph form that fits `backend`: an INT8 package runs its U8S8 graph on ONNX Runtime (the
    TensorRT-style S8S8 Q/DQ graph is barely faster than FP32 on CPUs, docs/design/precision.md);
    TensorRT builds its own engines from the Q/DQ graph, so it needs no variant here."""
    name, precision = split_backend(resolve_backend(backend))
    if name == "openvino":
        from rating_edge.infer.openvino import openvino_form

        return openvino_form(package, precision)[1]
    variants = package.meta.get("variants", {})
    if backend == "ort" and package.meta.get("precision") == "int8" and "int8-u8s8" in variants:
        return "int8-u8s8"
    return None


class GraphsFromPackage:
    """The ONNX graph records a CPU backend opens: the package's main graphs, a named variant, or (None)
    the variant that fits the backend."""

    def __init__(self, package, variant: str | None = None, backend: str = "ort"):
        self.package = package
        self.variant = choose_variant(package, backend) if variant is None else variant
        if self.variant == "default":
            self.variant = None

    def __call__(self) -> list[dict]:
        return self.package.graphs(self.variant)

    @property
    def precision(self) -> str:
        v = self.variant or ""
        return "int8" if v.startswith("int8") else "fp32"


def trt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise RatingEdgeError(f"cannot read TensorRT version {version!r}") from None


def machine_key(gpu: str, compute_capability: str, trt_version: str) -> dict:
    return {"gpu": gpu, "compute_capability": str(compute_capability), "trt_version": str(trt_version)}


def rebuild_hint(package, precision: str) -> str:
    return f"rebuild it on this machine: rating-edge build {package.path} --precision {precision}"


def engine_mismatch(rec: dict, here: dict) -> str | None:
    """Why engine record `rec` cannot run on machine `here` (None: it can)."""
    if rec.get("trt_version") != here["trt_version"]:
        return (f"built with TensorRT {rec.get('trt_version')}, this machine has TensorRT {here['trt_version']} "
                "(serialized engines only load in the TensorRT version that built them)")
    if str(rec.get("compute_capability")) != here["compute_capability"] or rec.get("gpu") != here["gpu"]:
        return (f"built for {rec.get('gpu')} (sm {rec.get('compute_capability')}), this machine has "
                f"{here['gpu']} (sm {here['compute_capability']})")
    return None


def select_engines(package, here: dict, precision: str | None = None) -> list[dict]:
    """The engine records to run here: one per graph of one precision, preferring INT8, then FP16."""
    engines = package.meta.get("engines", [])
    if not engines:
        p = precision or ("int8" if package.meta.get("precision") == "int8" else "fp16")
        raise EngineMismatch(f"{package.path}: no TensorRT engine in this package; {rebuild_hint(package, p)}")
    wanted = [precision] if precision else list(TRT_PRECISION_ORDER)
    reasons = []
    for prec in wanted:
        recs = [e for e in engines if e.get("precision") == prec]
        if not recs:
            continue
        ok = [e for e in recs if engine_mismatch(e, here) is None]
        if ok:  # engines for other machines may sit beside this machine's
            # GPU and DLA builds of the same graphs may both be recorded: run one set, not both
            # (GPU first, else the lowest DLA core).
            cores = sorted({e.get("dla_core") for e in ok}, key=lambda c: -1 if c is None else int(c))
            return [e for e in ok if e.get("dla_core") == cores[0]]
        reasons.append((recs[0], engine_mismatch(recs[0], here)))
    if not reasons:
        raise EngineMismatch(f"{package.path}: no {precision} TensorRT engine; "
                             f"{rebuild_hint(package, precision or 'fp16')}")
    rec, why = reasons[0]
    raise EngineMismatch(f"{package.path}: engine {rec['file']}: {why}; {rebuild_hint(package, rec['precision'])}")


class EngineFromPackage:
    """The TensorRT engine records of a package for the machine `here` (GPU, compute capability,
    TensorRT version), checked against the ONNX they were built from."""

    def __init__(self, package, precision: str | None = None):
        self.package = package
        self.precision = precision

    def __call__(self, here: dict) -> list[dict]:
        recs = select_engines(self.package, here, self.precision)
        arts = self.package.meta.get("artifacts", {})
        for e in recs:
            src = e.get("onnx")
            if src in arts and e.get("onnx_sha256") and arts[src]["sha256"] != e["onnx_sha256"]:
                raise EngineMismatch(f"{self.package.path}: engine {e['file']} was built from another version of "
                                     f"{src}; {rebuild_hint(self.package, e['precision'])}")
        return recs


__all__ = ["GraphsFromPackage", "EngineFromPackage", "choose_variant", "select_engines", "engine_mismatch",
           "machine_key", "rebuild_hint", "trt_major"]
