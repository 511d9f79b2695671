"""Verify a package against its reference (or one package against another), Polygraphy-style.

`compare_outputs` takes two output dicts so the same report serves FP32-vs-PyTorch, INT8-vs-FP32 and
engine-vs-ONNX comparisons; `verify_package` runs both sides on the same pairs and applies the gates.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from rating_edge.scoring import N_GRADES, score_probs

PROB_KEYS = ("sh_prob", "vs_prob")
HEAT_KEYS = ("heat_gs", "heat_doppler")
GRADE_KEYS = ("sh", "vs", "combined")


@dataclass
class Gates:
    """Pass criteria; the defaults are the FP32 `stack`/`none` gates (exact up to float rounding)."""

    max_prob_diff: float = 1e-4
    min_grade_agreement: float = 1.0
    min_network_agreement: float = 1.0
    min_heat_corr: float = 0.99


# A distilled student is trained to reproduce the ensemble's grades, not its probabilities
DISTILL_GRADE_AGREEMENT = 0.97


def default_gates(package, variant: str | None = None, backend: str = "ort") -> tuple[Gates, str]:
    """The gates a package should meet by default, and why: FP32 exports are exact up to float rounding;
    an INT8 variant (or OpenVINO BF16, also a precision change) must keep the grade agreement its
    quantization gate promised (probabilities and heatmaps are reported, not gated, as in `rating-edge
    quantize`); a distilled student must keep DISTILL_GRADE_AGREEMENT."""
    precision = None
    if backend == "auto":  # gate what `auto` will run here
        from rating_edge.infer.openvino import choose_cpu_form

        form = choose_cpu_form(package)
        backend, variant = form["backend"], variant or form["variant"]
    if backend.split(":")[0] == "openvino":
        from rating_edge.infer.openvino import openvino_form, parse_backend

        precision, ov_variant = openvino_form(package, parse_backend(backend)[1], variant)
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


def weighted_kappa(a, b, n: int = N_GRADES) -> float:
    """Linearly weighted Cohen's kappa; 1.0 when both raters agree perfectly (even on a single grade)."""
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.size == 0:
        return float("nan")
    if np.array_equal(a, b):
        return 1.0
    obs = np.zeros((n, n))
    np.add.at(obs, (a, b), 1)
    obs /= obs.sum()
    exp = np.outer(obs.sum(1), obs.sum(0))
    w = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]) / (n - 1)
    den = (w * exp).sum()
    return float(1.0 - (w * obs).sum() / den) if den > 0 else 0.0


def heat_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation per image; two flat maps count as 1 when equal, 0 otherwise."""
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    na = np.sqrt((a * a).sum(1))
    nb = np.sqrt((b * b).sum(1))
    out = np.empty(len(a))
    for i in range(len(a)):
        if na[i] < 1e-12 or nb[i] < 1e-12:
            out[i] = 1.0 if (na[i] < 1e-12 and nb[i] < 1e-12) else 0.0
        else:
            out[i] = float((a[i] * b[i]).sum() / (na[i] * nb[i]))
    return out


def compare_outputs(ref: dict, test: dict) -> dict:
    """Compare two output dicts (any subset of sh_prob, vs_prob, heat_gs, heat_doppler present in both)."""
    rep: dict = {"pairs": None, "outputs": {}}
    for k in PROB_KEYS + HEAT_KEYS:
        if k in ref and k in test:
            r, t = np.asarray(ref[k], np.float64), np.asarray(test[k], np.float64)
            if r.shape != t.shape:
                raise ValueError(f"{k}: shapes differ ({r.shape} vs {t.shape})")
            d = np.abs(r - t)
            rep["pairs"] = int(r.shape[0])
            rep["outputs"][k] = {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
                                 "nonfinite_pairs": int((~np.isfinite(t.reshape(len(t), -1))).any(axis=1).sum())}
    if all(k in ref and k in test for k in PROB_KEYS):
        nets = {}
        for k in PROB_KEYS:
            m = k.split("_")[0]
            agree = ((np.asarray(ref[k]) > 0.5) == (np.asarray(test[k]) > 0.5)).mean(axis=0)  # (folds, 3, seeds)
            for f, t, s in np.ndindex(agree.shape):
                nets[f"fold{f}-{m}-gt{t}-seed{s}"] = float(agree[f, t, s])
        rep["network_agreement"] = nets
        rep["min_network_agreement"] = min(nets.values())
        sr = score_probs(ref["sh_prob"], ref["vs_prob"])
        st = score_probs(test["sh_prob"], test["vs_prob"])
        rep["grades"] = {g: {"agreement": float((sr[g] == st[g]).mean()), "kappa_linear": weighted_kappa(sr[g], st[g])}
                         for g in GRADE_KEYS}
        rep["grades"]["per_model"] = {
            m: float((sr[f"{m}_models"] == st[f"{m}_models"]).mean()) for m in ("sh", "vs")}
    for k in HEAT_KEYS:
        if k in ref and k in test:
            c = heat_correlation(ref[k], test[k])
            rep["outputs"][k].update({"corr_mean": float(c.mean()), "corr_min": float(c.min())})
    return rep


def apply_gates(rep: dict, gates: Gates) -> list[str]:
    """Failure messages (empty when every gate passes)."""
    # NaN/Inf compare false against every threshold, so they are failures of their own, under any gates
    fails = [f"{k}: NaN or infinite values on {o['nonfinite_pairs']} pairs" for k, o in rep["outputs"].items()
             if o.get("nonfinite_pairs")]
    for k in PROB_KEYS:
        if k in rep["outputs"] and rep["outputs"][k]["max_abs_diff"] > gates.max_prob_diff:
            fails.append(f"{k}: max |diff| {rep['outputs'][k]['max_abs_diff']:.3g} > {gates.max_prob_diff:g}")
    for g in GRADE_KEYS:
        if "grades" in rep and rep["grades"][g]["agreement"] < gates.min_grade_agreement:
            fails.append(f"{g} grade agreement {rep['grades'][g]['agreement']:.4f} < {gates.min_grade_agreement:g}")
    if "min_network_agreement" in rep and rep["min_network_agreement"] < gates.min_network_agreement:
        worst = min(rep["network_agreement"], key=rep["network_agreement"].get)
        fails.append(f"binary agreement of {worst} {rep['min_network_agreement']:.4f} < {gates.min_network_agreement:g}")
    for k in HEAT_KEYS:
        o = rep["outputs"].get(k, {})
        if "corr_min" in o and o["corr_min"] < gates.min_heat_corr:
            fails.append(f"{k}: heatmap correlation (min over pairs) {o['corr_min']:.4f} < {gates.min_heat_corr:g}")
    return fails


def run_package(pkg, gs: np.ndarray, doppler: np.ndarray, variant: str | None = None, batch: int = 8,
                backend: str = "ort", engine: dict | None = None) -> dict:
    """All outputs of a package over a set of pairs (batched as the package allows). `engine`, when given,
    receives what the runner reports it ran (OpenVINO: precision hint, CPU, threads)."""
    from rating_edge.runtime.engines import make_runner

    with make_runner(pkg, backend, variant=variant) as run:
        if run.package.meta.get("batch", "dynamic") != "dynamic":
            batch = int(run.package.meta["batch"])
        parts = [run.infer({"gs": gs[i:i + batch], "doppler": doppler[i:i + batch]}) for i in range(0, len(gs), batch)]
        if engine is not None:
            engine.update(getattr(run, "info", None) or {"backend": backend})
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
                   variant: str | None = None, reference: dict | None = None, backend: str = "ort") -> dict:
    """Run `pkg` and the reference checkpoint on the same pairs; report with `passed` and `failures`.

    `pkg` is a package folder or an already loaded (hash-checked) Package. `reference` may be given
    precomputed (e.g. another package's outputs from `run_package`).
    """
    from rating_edge.package import Package, load_package

    gates = gates or Gates()
    package = pkg if isinstance(pkg, Package) else load_package(pkg)
    engine: dict = {}
    test = run_package(package, gs, doppler, variant, backend=backend, engine=engine)
    ref = reference if reference is not None else reference_outputs(reference_ckpt, gs, doppler)
    rep = compare_outputs(ref, test)
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
