"""Verify a package against its reference (or one package against another), Polygraphy-style.

`compare_outputs` takes two output dicts so the same report serves FP32-vs-PyTorch, INT8-vs-FP32 and
engine-vs-ONNX comparisons; `verify_package` runs both sides on the same pairs and applies the gates.
"""
from __future__ import annotations

from dataclasses import asdict

import numpy as np

# The comparison itself lives in rating_edge.compare (one definition for verify, the INT8 gate,
# distillation and evaluate); these names stay importable from here.
from rating_edge.compare import (  # noqa: F401
    GRADE_KEYS,
    HEAT_KEYS,
    PROB_KEYS,
    Gates,
    apply_gates,
    compare_outputs,
    heat_correlation,
)
from rating_edge.compare import kappa as weighted_kappa  # noqa: F401
from rating_edge.infer.names import resolve_backend, split_backend
from rating_edge.scoring import Thresholds

# A distilled student is trained to reproduce the ensemble's grades, not its probabilities
DISTILL_GRADE_AGREEMENT = 0.97


def default_gates(package, variant: str | None = None, backend: str = "ort") -> tuple[Gates, str]:
    """The gates a package should meet by default, and why: FP32 exports are exact up to float rounding;
    an INT8 variant (or OpenVINO BF16, also a precision change) must keep the grade agreement its
    quantization gate promised (probabilities and heatmaps are reported, not gated, as in `rating-edge
    quantize`); a distilled student must keep DISTILL_GRADE_AGREEMENT."""
    precision = None
    if backend == "auto":  # gate what `auto` will run here
        from rating_edge.infer.cpu_forms import choose_cpu_form

        form = choose_cpu_form(package)
        backend, variant = form["backend"], variant or form["variant"]
    name, asked = split_backend(resolve_backend(backend))
    if name == "openvino":
        from rating_edge.infer.openvino import openvino_form

        precision, ov_variant = openvino_form(package, asked, variant)
        variant = ov_variant if precision == "int8" else variant
    if (variant and variant.startswith("int8")) or precision in ("bf16", "int8"):
        q = package.meta.get("quantization") or {}
        g = float(q.get("gate") or 0.98)
        what = f"OpenVINO {precision}" if precision in ("bf16", "int8") else "INT8"
        return (Gates(max_prob_diff=1.0, min_grade_agreement=g,
                      min_network_agreement=float(q.get("member_gate") or 0.0), min_heat_corr=-1.0),
                f"{what}{' variant ' + variant if variant else ''}: grade agreement >= the quantization gate {g:g}")
    if package.strategy == "distill":
        return (Gates(max_prob_diff=1.0, min_grade_agreement=DISTILL_GRADE_AGREEMENT, min_network_agreement=0.0,
                      min_heat_corr=-1.0),
                f"distilled student: grade agreement >= {DISTILL_GRADE_AGREEMENT:g}")
    return Gates(), "exact export: probabilities within 1e-4, identical grades and decisions, Grad-CAM corr >= 0.99"


def run_package(pkg, gs: np.ndarray, doppler: np.ndarray, variant: str | None = None, batch: int = 8,
                backend: str = "ort", engine: dict | None = None, **backend_options) -> dict:
    """All outputs of a package over a set of pairs (batched as the package allows). `engine`, when given,
    receives what the runner reports it ran (backend, precision; OpenVINO: precision hint, CPU, threads).
    `backend_options` go to the runner (triton: url, infer_timeout)."""
    from rating_edge.infer import make_runner

    with make_runner(pkg, backend, variant=variant, **backend_options) as run:
        if run.package.meta.get("batch", "dynamic") != "dynamic":
            batch = int(run.package.meta["batch"])
        parts = [run.infer({"gs": gs[i:i + batch], "doppler": doppler[i:i + batch]}) for i in range(0, len(gs), batch)]
        if engine is not None:
            engine.update(run.describe())
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def reference_outputs(reference_ckpt, gs: np.ndarray, doppler: np.ndarray, batch: int = 8) -> dict:
    """Probabilities from the eager reference and heatmaps from autograd Grad-CAM."""
    from rating_edge.export.gradcam import gradcam_reference
    from rating_edge.model.reference import load_ensemble

    ref = load_ensemble(reference_ckpt)
    parts = []
    for i in range(0, len(gs), batch):
        g, d = gs[i:i + batch], doppler[i:i + batch]
        parts.append({**ref.predict_probs(g, d), **gradcam_reference(ref, g, d)})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def verify_package(pkg, reference_ckpt, gs: np.ndarray, doppler: np.ndarray, gates: Gates | None = None,
                   variant: str | None = None, reference: dict | None = None, outputs: dict | None = None,
                   backend: str = "ort", **backend_options) -> dict:
    """Run `pkg` and the reference checkpoint on the same pairs; report with `passed` and `failures`.

    `pkg` is a package folder or an already loaded (hash-checked) Package. `reference` may be given
    precomputed (e.g. another package's outputs from `run_package`). A dict given as `outputs` receives
    both sides' raw outputs ("reference", "test"), for pictures that the JSON report is too small for.
    """
    from rating_edge.package import Package, load_package

    gates = gates or Gates()
    package = pkg if isinstance(pkg, Package) else load_package(pkg)
    engine: dict = {}
    test = run_package(package, gs, doppler, variant, backend=backend, engine=engine, **backend_options)
    ref = reference if reference is not None else reference_outputs(reference_ckpt, gs, doppler)
    if outputs is not None:
        outputs.update(reference=ref, test=test)
    rep = compare_outputs(ref, test, thresholds=Thresholds.from_meta(package.meta))
    rep["failures"] = apply_gates(rep, gates)
    rep["passed"] = not rep["failures"]
    rep["gates"] = asdict(gates)
    rep["package"] = {"path": str(package.path), "model_hash": package.model_hash, "strategy": package.strategy,
                      "precision": package.meta.get("precision"), "variant": variant or "default", "backend": backend}
    rep["engine"] = engine
    if engine.get("variant"):  # what the backend resolved `None` to (OpenVINO: its gated INT8 graph)
        rep["package"]["variant"] = engine["variant"]
    rep["reference"] = str(reference_ckpt)
    return rep
