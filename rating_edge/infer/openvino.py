"""OpenVINO runner for x86 (and ARM) scanner carts, with the ONNX Runtime runner's interface.

Why a second CPU backend: ONNX Runtime's U8S8 QOperator kernels reach about half of AVX-512 VNNI's
peak and never use AMX, while OpenVINO's CPU plugin runs INT8 on VNNI/AMX and BF16 on AMX (issue 15).

- FP32 reads the package's ONNX directly (no extra files). The inference precision is always set
  explicitly (`INFERENCE_PRECISION_HINT`): on a CPU with BF16 support OpenVINO would otherwise
  silently run FP32 graphs in BF16, which is a precision change that needs its gate.
- BF16 is the FP32 graph with the BF16 hint; INT8 is the package's OpenVINO INT8 variant made by
  `rating-edge quantize` (both gated on held-out calibration pairs like every INT8 form).
- Compiled models are cached (`CACHE_DIR`) in a folder keyed like TensorRT engines: by the CPU model
  and the OpenVINO version, so a cache shared by several machines never serves a blob made elsewhere.
- OpenVINO is imported when a runner is activated, never when this module is loaded.
"""
from __future__ import annotations

import hashlib
import os
import platform
import re
from pathlib import Path

import numpy as np

from rating_edge.errors import RatingEdgeError
from rating_edge.infer.base import GraphRunner

# re-exported: the CPU-form choice lived here first
from rating_edge.infer.cpu_forms import (  # noqa: F401
    CPU_ORDER,
    choose_cpu_form,
    cpu_class,
    cpu_flags,
    gated_forms,
    measured_here,
    openvino_available,
)
from rating_edge.infer.errors import EngineMismatch, EngineUnavailable
from rating_edge.infer.names import OPENVINO_PRECISIONS, resolve_backend, split_backend
from rating_edge.package import Package
from rating_edge.threads import inference_threads

PRECISIONS = OPENVINO_PRECISIONS
# The package variant holding the OpenVINO INT8 form (written by `rating-edge quantize`).
OV_INT8_VARIANT = "int8-ov"
INSTALL_HINT = "pip install 'rating-edge[openvino]'"


def _core():
    try:
        import openvino as ov
    except ImportError:
        raise EngineUnavailable(f"OpenVINO is not installed: {INSTALL_HINT}") from None
    return ov, ov.Core()


def machine_key(core=None) -> dict:
    """What a compiled-model cache and a timing depend on: CPU model and OpenVINO version."""
    ov, core = _core() if core is None else (__import__("openvino"), core)
    try:
        cpu = str(core.get_property("CPU", "FULL_DEVICE_NAME"))
    except Exception:  # noqa: BLE001 - a plugin without the property still runs
        cpu = platform.processor() or "unknown-cpu"
    return {"cpu": cpu, "cpu_class": cpu_class(), "openvino_version": ov.__version__.split("-")[0]}


def cache_dir(key: dict, root: str | os.PathLike | None = None) -> Path:
    """`root`/<cpu-slug>-ov<version>-<hash>: one folder per machine key (OpenVINO keys the blobs inside by
    model and configuration itself). Root: $RATING_EDGE_OV_CACHE, else ~/.cache/rating-edge/openvino."""
    root = Path(root or os.environ.get("RATING_EDGE_OV_CACHE") or Path.home() / ".cache" / "rating-edge" / "openvino")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", key["cpu"]).strip("-")[:40] or "cpu"
    h = hashlib.sha256(f"{key['cpu']}|{key['openvino_version']}".encode()).hexdigest()[:8]
    return root / f"{slug}-ov{key['openvino_version']}-{h}"


# Graph output names the package format defines (OpenVINO may report an internal tensor name first).
KNOWN_OUTPUTS = ("sh_prob", "vs_prob", "heat_gs", "heat_doppler", "prob", "cam_gs", "cam_doppler")


def _port_name(port) -> str:
    names = port.get_names()
    known = [n for n in KNOWN_OUTPUTS if n in names]
    return known[0] if known else port.get_any_name()


class _CompiledSession:
    """One compiled model + its infer request; `none` packages' per-network outputs are assembled by
    rating_edge.infer.base.assemble, as for every backend."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.inputs = [p.get_any_name() for p in compiled.inputs]
        self.outputs = [_port_name(p) for p in compiled.outputs]

    def run(self, feed) -> dict:
        res = self.request.infer({n: feed[n] for n in self.inputs}, share_inputs=False)
        return {_port_name(p): np.array(v, copy=True) for p, v in res.items()}


class OpenVinoRunner(GraphRunner):
    """A package's graphs on OpenVINO's CPU plugin at one explicit precision (fp32, bf16 or int8)."""

    name = "openvino"
    backend = "openvino"

    def __init__(self, package: Package, precision: str = "fp32", variant: str | None = None,
                 threads: int | None = None, cache: str | os.PathLike | None | bool = None, device: str = "CPU"):
        super().__init__(package)
        if precision not in PRECISIONS:
            raise RatingEdgeError(f"unknown OpenVINO precision {precision!r}; use one of {', '.join(PRECISIONS)}")
        if variant is None:
            variant = OV_INT8_VARIANT if precision == "int8" else None
        if precision == "int8" and variant in (None, "default"):
            raise RatingEdgeError("OpenVINO int8 needs an INT8 variant of the package (make one with "
                                  "`rating-edge quantize`)")
        self.precision = precision
        self.variant = variant
        if precision == "int8" and variant not in package.meta.get("variants", {}):
            raise EngineMismatch(f"{package.path}: no OpenVINO INT8 variant {variant!r}; make one with `rating-edge "
                               f"quantize {package.path} CALIB OUT` (with {INSTALL_HINT} installed)")
        self.records = package.graphs(variant)
        self.threads = inference_threads(threads)
        self.cache = cache
        self.device = device
        self.info: dict = {}

    def config(self) -> dict:
        """The compile configuration; the inference precision is always explicit (see module doc).
        INT8 graphs run their non-quantized layers in FP32 (BF16 there would be a second, ungated change)."""
        return {"INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
                "INFERENCE_NUM_THREADS": int(self.threads), "PERFORMANCE_HINT": "LATENCY",
                "NUM_STREAMS": 1}

    def _activate(self):
        ov, core = _core()
        key = machine_key(core)
        cfg = self.config()
        if self.cache is not False:
            d = cache_dir(key, self.cache or None)
            try:
                d.mkdir(parents=True, exist_ok=True)
                cfg["CACHE_DIR"] = str(d)
            except OSError:  # a read-only home: compile every time, still correct
                d = None
        else:
            d = None
        if self.precision == "bf16" and "BF16" not in core.get_property(self.device, "OPTIMIZATION_CAPABILITIES"):
            raise EngineMismatch(f"this CPU ({key['cpu']}) has no BF16 support in OpenVINO; use openvino:fp32 "
                                 "or openvino:int8")
        self.graphs = []
        for rec in self.records:
            path = self.package.file(rec["file"])
            try:
                compiled = core.compile_model(str(path), self.device, cfg)
            except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
                raise EngineMismatch(f"{path}: OpenVINO cannot compile this graph "
                                   f"({str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__})") from None
            self.graphs.append((rec, _CompiledSession(compiled)))
        got = self.graphs[0][1].compiled.get_property("INFERENCE_PRECISION_HINT")
        self.info = {"backend": "openvino", "precision": self.precision, "variant": self.variant or "default",
                     "inference_precision_hint": got.get_type_name() if hasattr(got, "get_type_name") else str(got), "threads": self.threads, "cache_dir": str(d) if d else None,
                     **key}

    def _deactivate(self):
        self.graphs = []

    def _run_graph(self, handle, feed):
        return handle.run(feed)

    def describe(self) -> dict:
        return {**super().describe(), **(self.info or {"variant": self.variant or "default", "threads": self.threads})}

    def summary(self) -> str:
        """One line for people: what runs, at which inference precision, on which CPU."""
        i = self.info or {"precision": self.precision, "variant": self.variant or "default"}
        return (f"OpenVINO {i.get('openvino_version', '?')} {i['precision']} ({i['variant']} graphs, inference "
                f"precision {i.get('inference_precision_hint', '?')}, {self.threads} threads, {i.get('cpu_class', '?')} "
                f"CPU)")


def parse_backend(backend: str) -> tuple[str, str | None]:
    """"openvino:bf16" -> ("openvino", "bf16"); "ort" -> ("ort", None). The precision rides on the backend
    name so every command that already takes `--backend` can ask for an OpenVINO precision."""
    return split_backend(resolve_backend(backend))


def openvino_form(package: Package, precision: str | None = None, variant: str | None = None) -> tuple[str, str | None]:
    """(precision, variant) an OpenVINO runner uses: the one asked for, else the fastest gated form
    here (int8 > bf16 > fp32 per `CPU_ORDER`)."""
    if precision is None and variant not in (None, "default"):
        precision = "int8" if variant.startswith("int8") else "fp32"
    if precision is None:
        if variant == "default":
            return "fp32", None
        cls = cpu_class()
        gated = gated_forms(package)
        measured = measured_here(package) or {}
        order = sorted(measured, key=measured.get) + list(CPU_ORDER.get(cls, CPU_ORDER["other"]))
        for form in order:
            if form.startswith("openvino-") and (form in gated or form.endswith("fp32")):
                precision = form.split("-")[1]
                return precision, (gated[form]["variant"] if form in gated else None)
        return "fp32", None
    if precision == "int8" and variant is None:
        q = package.meta.get("quantization") or {}
        variant = (q.get("openvino") or {}).get("int8_variant") or OV_INT8_VARIANT
    return precision, (None if variant == "default" else variant)


def bench_forms(package: Package) -> list[tuple[str, str | None]]:
    """(precision, variant) rows `rating-edge bench --backend openvino` measures: FP32, BF16 where the CPU
    has it, and every INT8 graph set OpenVINO can read (its own IR variant and the Q/DQ ONNX, so the
    two INT8 routes are compared in one run)."""
    ov, core = _core()
    rows: list[tuple[str, str | None]] = [("fp32", None)]
    if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        rows.append(("bf16", None))
    variants = package.meta.get("variants", {})
    for v in sorted(variants):
        if v == OV_INT8_VARIANT or v == "int8-qdq":
            rows.append(("int8", v))
    return rows
