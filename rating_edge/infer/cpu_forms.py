"""Which CPU form of a package runs here: ONNX Runtime or OpenVINO, FP32, BF16 or INT8 (issue 15).

Only forms that passed their quantization gate are candidates (FP32 always is). Among them the fastest
*measured* one wins when the package carries batch-1 timings made on this CPU model with this many
cores (`rating-edge quantize` times every gated form on the machine it runs on:
`rating_edge.calibration.cpu_timing`); elsewhere the expected
order per CPU class decides, and the choice says which of the two it used. Measured beats expected: on
the demo's tiny networks OpenVINO BF16 ran faster than OpenVINO INT8 on an AMX CPU, the reverse of the
paper-size stack.
"""
from __future__ import annotations

import os
import platform

from rating_edge.package import Package

FORMS = ("ort-fp32", "ort-int8", "openvino-fp32", "openvino-bf16", "openvino-int8")


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_class(flags: set[str] | None = None, machine: str | None = None) -> str:
    """"amx", "vnni" (AVX-512 VNNI or AVX-VNNI), "avx2", "arm" or "other": what decides whether INT8
    and BF16 pay off here (AMX runs both; VNNI runs INT8 ~2-4x FP32; plain AVX2 INT8 gains little and
    BF16 is emulated, i.e. slower than FP32)."""
    flags = cpu_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    if machine in ("aarch64", "arm64") or machine.startswith("arm"):
        return "arm"
    if "amx_int8" in flags or "amx_bf16" in flags:
        return "amx"
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "vnni"
    if "avx2" in flags:
        return "avx2"
    return "other"


def gated_forms(package: Package) -> dict[str, dict]:
    """The reduced-precision forms this package's quantization gate passed, by name
    ("ort-int8", "openvino-int8", "openvino-bf16"), each with its report. FP32 needs no gate."""
    q = package.meta.get("quantization") or {}
    gate = float(q.get("gate") or 0.98)
    reports = q.get("reports") or {}
    variants = package.meta.get("variants", {})
    out = {}
    if package.meta.get("precision") == "int8" and "int8-u8s8" in variants and "int8-u8s8" in reports:
        out["ort-int8"] = {"variant": "int8-u8s8", "report": reports["int8-u8s8"]}
    ovq = q.get("openvino") or {}
    v = ovq.get("int8_variant")
    rep = reports.get(ovq.get("int8_report", v))  # OpenVINO reading the Q/DQ ONNX has a report of its own
    if v and v in variants and rep and rep["combined_agreement"] >= gate:
        out["openvino-int8"] = {"variant": v, "report": rep}
    if "openvino-bf16" in reports and reports["openvino-bf16"]["combined_agreement"] >= gate:
        out["openvino-bf16"] = {"variant": None, "report": reports["openvino-bf16"]}
    return out


# Expected speed order of the CPU forms per CPU class (measured on an AMX Xeon, docs/openvino.md;
# VNNI/AVX2/ARM from the kernels each library has there: OpenVINO INT8 uses VNNI/AMX, BF16 only pays
# with AMX, and on ARM ONNX Runtime's dot-product INT8 kernels are the better-kept path).
CPU_ORDER = {
    "amx": ("openvino-int8", "openvino-bf16", "ort-int8", "openvino-fp32", "ort-fp32"),
    "vnni": ("openvino-int8", "ort-int8", "openvino-fp32", "ort-fp32"),
    "avx2": ("openvino-int8", "ort-int8", "openvino-fp32", "ort-fp32"),
    "arm": ("ort-int8", "ort-fp32", "openvino-fp32"),
    "other": ("ort-int8", "ort-fp32"),
}


def choose_cpu_form(package: Package, cls: str | None = None, have_openvino: bool | None = None,
                    timings: dict | None = None) -> dict:
    """The fastest gated CPU form of `package` here: {"backend", "precision", "variant", "why",
    "measured"}; the backend string is what `make_runner`/`--backend` take (e.g. "openvino:int8").
    `timings` ({form: ms}) overrides the package's own (`measured_here`)."""
    cls = cls or cpu_class()
    have_openvino = openvino_available() if have_openvino is None else have_openvino
    gated = gated_forms(package)
    measured = measured_here(package) if timings is None else timings
    order = list(CPU_ORDER.get(cls, CPU_ORDER["other"]))
    if measured:  # measured forms first, fastest first; the expected order after them
        order = sorted((f for f in measured if f in FORMS), key=measured.get) + [f for f in order if f not in measured]
    missing = []
    for form in order:
        backend, prec = form.split("-")
        if backend == "openvino" and not have_openvino:
            missing.append(f"{form} (OpenVINO not installed)")
            continue
        if prec != "fp32" and form not in gated:
            missing.append(f"{form} (no gated form in the package)")
            continue
        if prec == "fp32":
            variant = "default"
            why = "no reduced-precision form passed its gate" if not gated else "reduced precision gated, but not faster here"
        else:
            variant = gated[form]["variant"] or "default"
            rep = gated[form]["report"]
            why = f"gate passed: combined agreement {rep['combined_agreement']:.3f} on {rep['pairs']} held-out pairs"
        skipped = f"; skipped {', '.join(missing)}" if missing else ""
        threads = None
        if measured and form in measured:
            threads = measured_threads(package, form) if timings is None else None
            at = f" at {threads} thread{'s' if threads != 1 else ''}" if threads else ""
            others = ", ".join(f"{f} {measured[f]:.1f}" for f in sorted(measured, key=measured.get) if f != form)
            how = f"fastest measured on this CPU ({form} {measured[form]:.1f} ms per pair{at}{'; ' + others if others else ''})"
        else:
            how = f"fastest expected {backend} {prec}" + (" (no timing made on this CPU model)" if not measured else "")
        return {"backend": "openvino:" + prec if backend == "openvino" else "ort", "precision": prec,
                "variant": variant, "cpu_class": cls, "measured": bool(measured and form in measured),
                "threads": threads, "why": f"{cls} CPU: {how}; {why}{skipped}"}
    return {"backend": "ort", "precision": "fp32", "variant": "default", "cpu_class": cls, "measured": False,
            "threads": None, "why": f"{cls} CPU: ONNX Runtime FP32 (nothing else available)"}


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo, else what Python's platform module says)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def cpu_key() -> dict:
    """What a CPU timing holds for: the CPU model, its class and the cores (the engines use them all)."""
    return {"cpu": cpu_model(), "cpu_class": cpu_class(), "cores": os.cpu_count() or 1}


def _timing_here(package: Package) -> dict:
    """The timings made on this machine: by `rating-edge build --cpu` here (engines.json; the newest
    first), else by `rating-edge quantize` if it ran on the same CPU model with as many cores."""
    here = cpu_key()
    made = list(reversed(package.meta.get("cpu_timings") or []))
    made.append((package.meta.get("quantization") or {}).get("cpu_timing") or {})
    for t in made:
        on = t.get("on") or {}
        if t.get("ms") and all(on.get(k) == here[k] for k in ("cpu", "cpu_class", "cores")):
            return t
    return {}


def measured_here(package: Package) -> dict | None:
    """The package's batch-1 timings of its CPU forms, {form: ms}, when they were made on this CPU
    model with as many cores; else None."""
    ms = _timing_here(package).get("ms") or {}
    return {f: float(v) for f, v in ms.items() if f in FORMS and v is not None} or None


def measured_threads(package: Package, form: str) -> int | None:
    """The thread count `form` ran fastest at on this CPU model (None: not measured here)."""
    n = (_timing_here(package).get("threads") or {}).get(form)
    return int(n) if n else None
