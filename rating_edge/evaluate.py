"""The paper's metrics for a RATING ensemble on a labelled dataset (no torch for model packages).

Per binary task: AUC of the mean probability over the folds x seeds networks of that task. Per grade
(SH, VS, combined, after ECOC + MULTITUDE via `scoring.score_probs`): 4-class accuracy, linearly
weighted Cohen's kappa and the confusion matrix. For the combined score's three splits (> 0, > 1, > 2):
sensitivity, specificity and the Youden index J = sensitivity + specificity - 1 of the predicted grade.
95% confidence intervals come from a percentile bootstrap over pairs with a fixed seed, so a report is
reproducible. The metric arithmetic is scikit-learn's.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rating_edge.compare import finite_rows, kappa, kappa_from_confusion
from rating_edge.errors import RatingEdgeError
from rating_edge.scoring import score_probs

GRADES = [0, 1, 2, 3]
TARGETS = ("sh", "vs", "combined")


def _auc(y, p):
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def _accuracy(y, g):
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(y, g))


def _kappa(y, g):
    """Linear kappa by rating_edge.compare's definition (1.0 for perfect agreement on one grade only)."""
    return kappa(y, g, "linear")


def _youden(y, pred):
    """(J, sensitivity, specificity) of binary predictions; nan where a class is absent."""
    from sklearn.metrics import confusion_matrix

    (tn, fp), (fn, tp) = confusion_matrix(y, pred, labels=[0, 1])
    sens = tp / (tp + fn) if tp + fn else float("nan")
    spec = tn / (tn + fp) if tn + fp else float("nan")
    return float(sens + spec - 1), float(sens), float(spec)


def _labels_array(labels) -> np.ndarray:
    if isinstance(labels, dict):
        sh, vs = np.asarray(labels["sh"]), np.asarray(labels["vs"])
        comb = np.asarray(labels.get("combined", np.maximum(sh, vs)))
        labels = np.stack([sh, vs, comb], 1)
    a = np.asarray(labels)
    if a.ndim != 2 or a.shape[1] != 3:
        raise RatingEdgeError(f"labels must be (N, 3) [sh, vs, combined] or a dict of those; got shape {a.shape}")
    if a.size and (a.min() < 0 or a.max() > 3):
        raise RatingEdgeError("labels must be grades 0-3")
    return a.astype(np.int64)


def point_metrics(task_probs: dict, grades: dict, y: np.ndarray) -> dict:
    """Every scalar metric, flat: {"auc/sh/gt0": .., "accuracy/sh": .., "kappa/sh": .., "youden/combined_gt0": ..}."""
    out = {}
    for module in ("sh", "vs"):
        col = 0 if module == "sh" else 1
        for t in range(task_probs[module].shape[1]):
            out[f"auc/{module}/gt{t}"] = _auc((y[:, col] > t).astype(int), task_probs[module][:, t])
    for i, target in enumerate(TARGETS):
        out[f"accuracy/{target}"] = _accuracy(y[:, i], grades[target])
        out[f"kappa/{target}"] = _kappa(y[:, i], grades[target])
    for t in range(3):
        j, se, sp = _youden((y[:, 2] > t).astype(int), (grades["combined"] > t).astype(int))
        out[f"youden/combined_gt{t}"] = j
        out[f"sensitivity/combined_gt{t}"] = se
        out[f"specificity/combined_gt{t}"] = sp
    return out


def resample_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) multiplicities of each pair in each bootstrap resample (pairs drawn with replacement)."""
    rng = np.random.default_rng(seed)
    out = np.zeros((resamples, n), np.float64)
    for b in range(resamples):
        out[b] = np.bincount(rng.integers(0, n, n), minlength=n)
    return out


def weighted_metrics(w: np.ndarray, task_probs: dict, grades: dict, y: np.ndarray) -> dict:
    """The metrics of `point_metrics` for many resamples at once, each given as pair weights w (B, n).

    A bootstrap needs ~18 metrics x 1,000 resamples; scikit-learn's per-call validation makes that take
    minutes, so the resamples are evaluated here with the same definitions in closed form, vectorised
    (tests check them against scikit-learn on random resamples). Undefined values are nan.
    """
    w = np.atleast_2d(np.asarray(w, np.float64))
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for module in ("sh", "vs"):
            col = 0 if module == "sh" else 1
            for t in range(task_probs[module].shape[1]):
                pos = y[:, col] > t
                out[f"auc/{module}/gt{t}"] = _weighted_auc(w, task_probs[module][:, t], pos)
        n = w.sum(1)
        for i, target in enumerate(TARGETS):
            onehot = ((y[:, i] * 4 + grades[target])[:, None] == np.arange(16)[None, :]).astype(np.float64)
            cm = (w @ onehot).reshape(-1, 4, 4)  # (B, true, pred)
            out[f"accuracy/{target}"] = np.trace(cm, axis1=1, axis2=2) / n
            out[f"kappa/{target}"] = kappa_from_confusion(cm, "linear")
        for t in range(3):
            yt, pt = y[:, 2] > t, grades["combined"] > t
            tp, fn = w @ (yt & pt), w @ (yt & ~pt)
            tn, fp = w @ (~yt & ~pt), w @ (~yt & pt)
            se, sp = tp / (tp + fn), tn / (tn + fp)
            out[f"youden/combined_gt{t}"] = se + sp - 1
            out[f"sensitivity/combined_gt{t}"] = se
            out[f"specificity/combined_gt{t}"] = sp
    return out


def _weighted_auc(w: np.ndarray, score: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """AUC = P(score_pos > score_neg) + P(tie) / 2 with pairs weighted by multiplicity (Mann-Whitney)."""
    uniq, inv = np.unique(score, return_inverse=True)
    k = len(uniq)
    grp = (inv[:, None] == np.arange(k)[None, :]).astype(np.float64)  # (n, k)
    cpos = w @ (grp * pos[:, None])  # (B, k) weight of positives per distinct score
    cneg = w @ (grp * ~pos[:, None])
    below = np.cumsum(cneg, 1) - cneg
    npos, nneg = cpos.sum(1), cneg.sum(1)
    auc = (cpos * (below + 0.5 * cneg)).sum(1) / (npos * nneg)
    return np.where((npos > 0) & (nneg > 0), auc, np.nan)


def bootstrap_ci(task_probs: dict, grades: dict, y: np.ndarray, resamples: int, seed: int, level: float = 0.95) -> dict:
    """Percentile CIs {metric: (lo, hi, valid resamples)}; resamples where a metric is undefined are skipped."""
    draws = weighted_metrics(resample_counts(len(y), resamples, seed), task_probs, grades, y)
    a = (1 - level) / 2 * 100
    out = {}
    for k, v in draws.items():
        v = v[np.isfinite(v)]
        out[k] = (float(np.percentile(v, a)), float(np.percentile(v, 100 - a)), int(len(v))) if len(v) else (
            float("nan"), float("nan"), 0)
    return out


def _num(x):
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def evaluate_predictions(probs_dict: dict, labels, bootstrap: int = 1000, seed: int = 0, level: float = 0.95,
                         thresholds=None) -> dict:
    """Metrics (JSON-ready dict) from engine outputs {"sh_prob", "vs_prob"} (N, folds, 3, seeds) and
    labels (N, 3) [sh, vs, combined] (or a dict with those keys). `bootstrap=0` skips the CIs."""
    y = _labels_array(labels)
    sh_p, vs_p = np.asarray(probs_dict["sh_prob"]), np.asarray(probs_dict["vs_prob"])
    if sh_p.ndim != 4 or sh_p.shape != vs_p.shape or sh_p.shape[2] != 3 or sh_p.shape[0] != len(y):
        raise RatingEdgeError(f"expected sh_prob and vs_prob of shape ({len(y)}, folds, 3, seeds); "
                              f"got {sh_p.shape} and {vs_p.shape}")
    if len(y) < 1:
        raise RatingEdgeError("cannot evaluate on an empty dataset")
    bad = int((~(finite_rows(sh_p) & finite_rows(vs_p))).sum())
    if bad:  # the NaN/Inf rule of rating_edge.compare: such a model fails, it is not scored
        raise RatingEdgeError(f"the model gave NaN or infinite probabilities on {bad} of {len(y)} pairs; "
                              "it cannot be evaluated (check the package with `rating-edge verify`)")
    scored = score_probs(sh_p, vs_p, thresholds)  # the model's own decision thresholds
    grades = {t: np.asarray(scored[t]) for t in TARGETS}
    task_probs = {"sh": sh_p.mean(axis=(1, 3)), "vs": vs_p.mean(axis=(1, 3))}  # (N, 3): mean over folds x seeds
    point = point_metrics(task_probs, grades, y)
    ci = bootstrap_ci(task_probs, grades, y, bootstrap, seed, level) if bootstrap > 0 else {}

    def entry(key):
        e = {"value": _num(point[key])}
        if key in ci:
            lo, hi, nv = ci[key]
            e["ci"] = [_num(lo), _num(hi)]
            if nv < bootstrap:
                e["ci_resamples"] = nv
        return e

    from sklearn.metrics import confusion_matrix

    result = {
        "n": int(len(y)),
        "auc": {m: {f"gt{t}": entry(f"auc/{m}/gt{t}") for t in range(3)} for m in ("sh", "vs")},
        "accuracy": {t: entry(f"accuracy/{t}") for t in TARGETS},
        "kappa_linear": {t: entry(f"kappa/{t}") for t in TARGETS},
        "confusion": {t: confusion_matrix(y[:, i], grades[t], labels=GRADES).tolist() for i, t in enumerate(TARGETS)},
        "youden": {f"combined_gt{t}": {**entry(f"youden/combined_gt{t}"),
                                       "sensitivity": _num(point[f"sensitivity/combined_gt{t}"]),
                                       "specificity": _num(point[f"specificity/combined_gt{t}"])} for t in range(3)},
        "bootstrap": {"resamples": int(bootstrap), "seed": int(seed), "level": level, "method": "percentile"},
        "label_counts": {t: np.bincount(y[:, i], minlength=4).tolist() for i, t in enumerate(TARGETS)},
    }
    return result


# ---- running a model over a dataset ------------------------------------------------------------

def model_thresholds(model):
    """A package's or checkpoint's decision thresholds (scoring.Thresholds)."""
    import json

    from rating_edge.scoring import Thresholds

    p = Path(model)
    meta = json.loads((p / ("model.json" if model_kind(model) == "package" else "ensemble.json")).read_text())
    try:
        return Thresholds.from_meta(meta)
    except ValueError as e:
        raise RatingEdgeError(f"{model}: {e}") from None


def model_kind(model) -> str:
    p = Path(model)
    if (p / "model.json").is_file():
        return "package"
    if (p / "ensemble.json").is_file():
        return "checkpoint"
    raise RatingEdgeError(f"{model}: neither a model package (model.json) nor a checkpoint folder (ensemble.json)")


def predict_dataset(model, data_dir, batch: int = 32, backend: str = "ort", variant: str | None = None,
                    progress=None, threads: int | None = None,
                    backend_options: dict | None = None) -> tuple[dict, np.ndarray, list, dict]:
    """Run MODEL over DATA in batches -> (probs {"sh_prob","vs_prob"}, labels (N,3), records, info).

    Packages run through `rating_edge.infer.make_runner` (no torch); checkpoint folders through the eager
    reference. Images go through the preprocessing parameters the model was made with.
    """
    from rating_edge.dataset import load_arrays, read_labels
    from rating_edge.preprocess import PreprocessParams

    if batch < 1:
        raise RatingEdgeError("--batch must be at least 1")
    kind = model_kind(model)
    if kind == "package":
        from rating_edge.infer import make_runner
        from rating_edge.package import load_package

        pkg = load_package(model)
        params = pkg.preprocess
        from rating_edge.infer import split_backend

        kw = dict(backend_options or {})
        if threads and split_backend(backend)[0] in ("ort", "openvino"):
            kw["threads"] = threads
        runner = make_runner(pkg, backend, variant, **kw).activate()
        fixed = pkg.meta.get("batch", "dynamic")
        if fixed != "dynamic":
            batch = int(fixed)
        info = {"kind": kind, "strategy": pkg.strategy, "precision": pkg.meta.get("precision"),
                "backend": backend, "variant": variant or "default", "model_hash": pkg.model_hash}
        info["engine"] = runner.describe()  # what ran (OpenVINO: a BF16/INT8 form is not the package's precision)

        def infer(gs, dop):
            return runner.infer({"gs": gs, "doppler": dop})
    else:
        import torch

        from rating_edge.model.reference import load_ensemble
        from rating_edge.threads import torch_threads

        ens = load_ensemble(model)
        torch.set_num_threads(torch_threads(ens.spec.width, threads))
        meta_pp = ens.manifest.get("meta", {}).get("preprocess")
        params = PreprocessParams.from_dict(meta_pp) if meta_pp else PreprocessParams(input_size=ens.spec.input_size)
        info = {"kind": kind, "backend": "pytorch-eager", "origin": ens.manifest.get("meta", {}).get("origin")}
        runner = None

        def infer(gs, dop):
            return ens.predict_probs(gs, dop)
    outs = {"sh_prob": [], "vs_prob": []}
    labels = []
    try:
        records = read_labels(data_dir)
        for i in range(0, len(records), batch):
            chunk = records[i:i + batch]
            gs, dop, lab, _ = load_arrays(data_dir, params, chunk)
            if len(chunk) < batch and kind == "package" and pkg.meta.get("batch", "dynamic") != "dynamic":
                pad = batch - len(chunk)  # fixed-batch engines: pad with copies, drop the extra outputs
                gs = np.concatenate([gs, np.repeat(gs[-1:], pad, 0)])
                dop = np.concatenate([dop, np.repeat(dop[-1:], pad, 0)])
            res = infer(gs, dop)
            for k in outs:
                outs[k].append(np.asarray(res[k])[:len(chunk)])
            labels.append(lab)
            if progress is not None:
                progress(len(chunk))
    finally:
        if runner is not None:
            runner.deactivate()
    probs = {k: np.concatenate(v) for k, v in outs.items()}
    return probs, np.concatenate(labels), records, info


def evaluate_model(model, data_dir, bootstrap: int = 1000, seed: int = 0, batch: int = 32, backend: str = "ort",
                   variant: str | None = None, progress=None, threads: int | None = None,
                   predictions: dict | None = None, backend_options: dict | None = None) -> dict:
    """Metrics of MODEL on DATA; a dict given as `predictions` receives the raw "probs" and "labels" (for
    pictures drawn from the same predictions as the numbers)."""
    probs, labels, _, info = predict_dataset(model, data_dir, batch, backend, variant, progress, threads,
                                             backend_options)
    if predictions is not None:
        predictions.update(probs=probs, labels=labels)
    result = evaluate_predictions(probs, labels, bootstrap, seed, thresholds=model_thresholds(model))
    result["model"] = {"path": str(model), **info}
    result["data"] = str(data_dir)
    return result


# ---- presentation -------------------------------------------------------------------------------

def _fmt(e: dict) -> str:
    v = e.get("value")
    if v is None:
        return "n/a"
    ci = e.get("ci")
    if ci and ci[0] is not None:
        return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{v:.3f}"


def print_report(result: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    b = result["bootstrap"]
    ci_note = f"95% CI: percentile bootstrap, {b['resamples']} resamples, seed {b['seed']}" if b["resamples"] else "no CIs"
    console.print(f"[bold]{result.get('model', {}).get('path', 'model')}[/] on {result.get('data', 'data')}: "
                  f"{result['n']} pairs ({ci_note})")
    t = Table(title="Binary tasks: AUC of the mean probability over folds x seeds")
    t.add_column("module")
    for k in ("gt0", "gt1", "gt2"):
        t.add_column(f"grade > {k[-1]}")
    for m in ("sh", "vs"):
        t.add_row(m.upper(), *(_fmt(result["auc"][m][k]) for k in ("gt0", "gt1", "gt2")))
    console.print(t)
    t = Table(title="Grades (ECOC + MULTITUDE)")
    for c in ("score", "accuracy", "weighted kappa (linear)"):
        t.add_column(c)
    for k in TARGETS:
        t.add_row(k, _fmt(result["accuracy"][k]), _fmt(result["kappa_linear"][k]))
    console.print(t)
    t = Table(title="Combined score splits")
    for c in ("split", "Youden J", "sensitivity", "specificity"):
        t.add_column(c)
    for s in range(3):
        e = result["youden"][f"combined_gt{s}"]
        f = (lambda x: "n/a" if x is None else f"{x:.3f}")
        t.add_row(f"> {s}", _fmt(e), f(e["sensitivity"]), f(e["specificity"]))
    console.print(t)
    for k in TARGETS:
        t = Table(title=f"Confusion matrix, {k} (rows: true grade, columns: predicted)")
        t.add_column("true \\ pred")
        for g in GRADES:
            t.add_column(str(g), justify="right")
        for g, row in zip(GRADES, result["confusion"][k]):
            t.add_row(str(g), *(str(v) for v in row))
        console.print(t)


def write_json(result: dict, path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(result, indent=2))
    return p
