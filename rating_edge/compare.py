"""One definition of every comparison between two sets of ensemble outputs (or grades), used by
`verify`, the INT8 quantization gate, distillation and `evaluate`, so one metric has one answer.

Definitions (docs/hardening-packages.md):
- agreement: share of pairs whose two grades are equal.
- weighted kappa (Cohen, linear or quadratic weights over grades 0-3): 1 - observed weighted
  disagreement / expected weighted disagreement. Perfect agreement is 1.0, also when only one grade
  occurs (the textbook formula gives 0/0 there, and that case is exactly perfect agreement); no pairs
  give NaN.
- heat correlation: Pearson per pair over the map's pixels; two flat maps (no spatial structure) 1.0,
  exactly one flat map 0.0; a map with NaN/Inf NaN.
- NaN/Inf rule: a pair with any non-finite value in any output under test fails that pair: its grades
  count as disagreeing, it is left out of kappa and correlation, and any such pair fails the gate.
- an output the reference has and the test lacks (or of another shape) fails the comparison, and so
  does a comparison over zero pairs: neither may ever read as a pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rating_edge.scoring import N_GRADES, score_probs

PROB_KEYS = ("sh_prob", "vs_prob")
HEAT_KEYS = ("heat_gs", "heat_doppler")
GRADE_KEYS = ("sh", "vs", "combined")
FLAT = 1e-12  # a map whose centred norm is below this has no spatial structure


def _weights(kind: str, n: int) -> np.ndarray:
    d = np.abs(np.arange(n)[:, None] - np.arange(n)[None, :]).astype(np.float64) / (n - 1)
    if kind == "linear":
        return d
    if kind == "quadratic":
        return d * d
    raise ValueError(f"kappa weights must be linear or quadratic, not {kind!r}")


def kappa_from_confusion(cm, weights: str = "linear") -> np.ndarray:
    """Weighted kappa of one (n, n) or many (B, n, n) confusion matrices (rows: rater a, cols: rater b;
    counts or weights). NaN for an empty matrix, 1.0 where there is no weighted disagreement."""
    cm = np.asarray(cm, np.float64)
    single = cm.ndim == 2
    cm = cm[None] if single else cm
    n = cm.shape[-1]
    w = _weights(weights, n)
    tot = cm.sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        obs = (cm * w).sum((1, 2)) / tot
        exp = (cm.sum(2)[:, :, None] * cm.sum(1)[:, None, :] * w).sum((1, 2)) / (tot * tot)
        k = 1.0 - obs / exp
    k = np.where(obs == 0, 1.0, k)  # perfect agreement (with one grade only, exp is 0 too)
    k = np.where(tot > 0, k, np.nan)
    return float(k[0]) if single else k


def confusion(a, b, n: int = N_GRADES) -> np.ndarray:
    a = np.asarray(a, np.int64).ravel()
    b = np.asarray(b, np.int64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"grade arrays differ in length ({a.size} vs {b.size})")
    cm = np.zeros((n, n), np.float64)
    np.add.at(cm, (a, b), 1)
    return cm


def kappa(a, b, weights: str = "linear", n: int = N_GRADES) -> float:
    """Weighted Cohen's kappa of two grade arrays (see the module's definition)."""
    return kappa_from_confusion(confusion(a, b, n), weights)


def agreement(a, b) -> float:
    """Share of equal grades; NaN over zero pairs."""
    a, b = np.asarray(a).ravel(), np.asarray(b).ravel()
    return float((a == b).mean()) if a.size else float("nan")


def finite_rows(x) -> np.ndarray:
    """(N,) True where every value of pair i is finite (integer arrays are always finite)."""
    x = np.asarray(x)
    if x.ndim == 0:
        return np.asarray([np.isfinite(x)])
    if not np.issubdtype(x.dtype, np.floating):
        return np.ones(len(x), bool)
    return np.isfinite(x.reshape(len(x), int(np.prod(x.shape[1:])))).all(axis=1)


def heat_correlation(a, b) -> np.ndarray:
    """Per-pair Pearson correlation of two heatmap batches (see the module's definition)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    a = a.reshape(len(a), int(np.prod(a.shape[1:])))
    b = b.reshape(len(b), int(np.prod(b.shape[1:])))
    ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    a = np.where(ok[:, None], a, 0.0)
    b = np.where(ok[:, None], b, 0.0)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    na, nb = np.sqrt((a * a).sum(1)), np.sqrt((b * b).sum(1))
    fa, fb = na < FLAT, nb < FLAT
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(1) / (na * nb)
    r = np.where(fa & fb, 1.0, np.where(fa | fb, 0.0, r))
    return np.where(ok, np.clip(r, -1.0, 1.0), np.nan)


@dataclass
class Gates:
    """Pass criteria; the defaults are the FP32 `stack`/`none` gates (exact up to float rounding)."""

    max_prob_diff: float = 1e-4
    min_grade_agreement: float = 1.0
    min_network_agreement: float = 1.0
    min_heat_corr: float = 0.99


def grade_report(ref: dict, test: dict, thresholds=None) -> dict:
    """Grades of both sides (ECOC + MULTITUDE with the model's decision thresholds, scoring.Thresholds;
    None = 0.5 and ">") and their agreement and kappas, under the NaN/Inf rule."""
    n = int(np.asarray(ref["sh_prob"]).shape[0])
    ok = np.ones(n, bool)
    for k in PROB_KEYS:
        ok &= finite_rows(ref[k]) & finite_rows(test[k])
    rep = {"pairs": n, "nonfinite_pairs": int((~ok).sum())}
    if not ok.any():
        rep.update({g: {"agreement": 0.0, "kappa_linear": float("nan"), "kappa_quadratic": float("nan")}
                    for g in GRADE_KEYS})
        rep["per_model"] = {"sh": 0.0, "vs": 0.0}
        rep["scores"] = None
        return rep
    sr = score_probs(np.asarray(ref["sh_prob"])[ok], np.asarray(ref["vs_prob"])[ok], thresholds)
    st = score_probs(np.asarray(test["sh_prob"])[ok], np.asarray(test["vs_prob"])[ok], thresholds)
    for g in GRADE_KEYS:  # non-finite pairs count as disagreeing (their matches are not counted)
        rep[g] = {"agreement": float((sr[g] == st[g]).sum() / n), "kappa_linear": kappa(sr[g], st[g]),
                  "kappa_quadratic": kappa(sr[g], st[g], "quadratic")}
    rep["per_model"] = {m: float((sr[f"{m}_models"] == st[f"{m}_models"]).sum() / (n * sr[f"{m}_models"].shape[1]))
                        for m in ("sh", "vs")}
    rep["per_fold"] = {m: ((sr[f"{m}_models"] == st[f"{m}_models"]).sum(0) / n).tolist() for m in ("sh", "vs")}
    rep["scores"] = (sr, st, ok)
    return rep


def member_agreement(ref: dict, test: dict, thresholds=None) -> dict:
    """{module: (folds, tasks, seeds) agreement of the binary decisions the grades are made of (the
    model's thresholds; p > 0.5 without them)}; non-finite values disagree."""
    out = {}
    for k in PROB_KEYS:
        r, t = np.asarray(ref[k], np.float64), np.asarray(test[k], np.float64)
        if thresholds is None:
            dr, dt = r > 0.5, t > 0.5
        else:
            dr, dt = thresholds.decide(k.split("_")[0], r), thresholds.decide(k.split("_")[0], t)
        same = (dr == dt) & np.isfinite(r) & np.isfinite(t)
        out[k.split("_")[0]] = same.mean(axis=0)
    return out


def compare_outputs(ref: dict, test: dict, expected=PROB_KEYS + HEAT_KEYS, thresholds=None) -> dict:
    """Compare two output dicts over the outputs `expected` that the reference holds.

    `missing` lists those the test lacks or gives in another shape; `pairs` is the number compared.
    """
    keys = [k for k in expected if k in ref]
    rep: dict = {"pairs": 0, "outputs": {}, "missing": []}
    ns = set()
    for k in keys:
        r = np.asarray(ref[k], np.float64)
        if k not in test or np.asarray(test[k]).shape != r.shape:
            got = "absent" if k not in test else f"shape {np.asarray(test[k]).shape}, reference {r.shape}"
            rep["missing"].append(f"{k} ({got})")
            continue
        t = np.asarray(test[k], np.float64)
        ns.add(int(r.shape[0]) if r.ndim else 1)
        bad = ~finite_rows(t)
        with np.errstate(invalid="ignore"):
            d = np.abs(r - t)
        fin = d[np.isfinite(d)]
        rep["outputs"][k] = {"max_abs_diff": float(fin.max()) if fin.size else float("nan"),
                             "mean_abs_diff": float(fin.mean()) if fin.size else float("nan"),
                             "nonfinite_pairs": int(bad.sum())}
    rep["pairs"] = min(ns) if ns else 0
    if not keys:
        rep["missing"].append("every expected output (the reference has none of " + ", ".join(expected) + ")")
    if rep["pairs"] and all(k in rep["outputs"] for k in PROB_KEYS):
        nets = {}
        for m, agree in member_agreement(ref, test, thresholds).items():
            for f, t_, s in np.ndindex(agree.shape):
                nets[f"fold{f}-{m}-gt{t_}-seed{s}"] = float(agree[f, t_, s])
        rep["network_agreement"] = nets
        rep["min_network_agreement"] = min(nets.values())
        g = grade_report(ref, test, thresholds)
        rep["grades"] = {k: g[k] for k in GRADE_KEYS}
        rep["grades"]["per_model"] = g["per_model"]
    for k in HEAT_KEYS:
        if rep["pairs"] and k in rep["outputs"]:
            c = heat_correlation(ref[k], test[k])
            c = c[np.isfinite(c)]
            rep["outputs"][k].update({"corr_mean": float(c.mean()) if c.size else float("nan"),
                                      "corr_min": float(c.min()) if c.size else float("nan")})
    return rep


def apply_gates(rep: dict, gates: Gates) -> list[str]:
    """Failure messages (empty when every gate passes). Missing outputs, zero pairs and NaN/Inf fail
    under any thresholds: they compare false against every threshold, so they are checked first."""
    fails = [f"output {m} is missing from the package's outputs" for m in rep.get("missing", [])]
    if not rep.get("pairs"):
        fails.append("no pairs were compared")
    fails += [f"{k}: NaN or infinite values on {o['nonfinite_pairs']} pairs" for k, o in rep["outputs"].items()
              if o.get("nonfinite_pairs")]
    for k in PROB_KEYS:
        o = rep["outputs"].get(k)
        if o and not o["max_abs_diff"] <= gates.max_prob_diff:
            fails.append(f"{k}: max |diff| {o['max_abs_diff']:.3g} > {gates.max_prob_diff:g}")
    for g in GRADE_KEYS:
        if "grades" in rep and not rep["grades"][g]["agreement"] >= gates.min_grade_agreement:
            fails.append(f"{g} grade agreement {rep['grades'][g]['agreement']:.4f} < {gates.min_grade_agreement:g}")
    if "min_network_agreement" in rep and not rep["min_network_agreement"] >= gates.min_network_agreement:
        worst = min(rep["network_agreement"], key=rep["network_agreement"].get)
        fails.append(f"binary agreement of {worst} {rep['min_network_agreement']:.4f} < {gates.min_network_agreement:g}")
    for k in HEAT_KEYS:
        o = rep["outputs"].get(k, {})
        if "corr_min" in o and gates.min_heat_corr > -1 and not o["corr_min"] >= gates.min_heat_corr:
            fails.append(f"{k}: heatmap correlation (min over pairs) {o['corr_min']:.4f} < {gates.min_heat_corr:g}")
    return fails
