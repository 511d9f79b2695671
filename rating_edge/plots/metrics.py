"""The paper's evaluation figures: ROC curves of the six binary tasks with bootstrap bands, 4x4 confusion
matrices, and the combined score's Youden points.

The bands and the AUC intervals come from the same percentile bootstrap over pairs (same resamples,
same seed) that `evaluate` reports, so a figure and its JSON never disagree. A band is pointwise: at
each false-positive rate the 2.5th and 97.5th percentiles of the resampled curves' sensitivity.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rating_edge.evaluate import (
    GRADES,
    TARGETS,
    _labels_array,
    _weighted_auc,
    resample_counts,
)
from rating_edge.plots.base import pyplot, save
from rating_edge.scoring import score_probs

FPR_GRID = np.linspace(0.0, 1.0, 101)
TASK_TITLES = {0: "grade > 0", 1: "grade > 1", 2: "grade > 2"}


def weighted_roc(w: np.ndarray, score: np.ndarray, pos: np.ndarray, grid=FPR_GRID) -> np.ndarray:
    """Sensitivity on `grid` (false-positive rates) for each resample of pair weights w (B, n); rows where a
    class is absent are nan. Ties share a threshold, as in scikit-learn's roc_curve."""
    w = np.atleast_2d(np.asarray(w, np.float64))
    pos = np.asarray(pos, bool)
    uniq, inv = np.unique(score, return_inverse=True)
    grp = (inv[:, None] == np.arange(len(uniq))[None, :]).astype(np.float64)
    tp = np.cumsum((w @ (grp * pos[:, None]))[:, ::-1], 1)  # thresholds from high to low
    fp = np.cumsum((w @ (grp * ~pos[:, None]))[:, ::-1], 1)
    out = np.full((len(w), len(grid)), np.nan)
    for b in range(len(w)):
        if tp[b, -1] > 0 and fp[b, -1] > 0:
            fpr = np.concatenate([[0.0], fp[b] / fp[b, -1]])
            tpr = np.concatenate([[0.0], tp[b] / tp[b, -1]])
            # np.interp takes the last of equal x values: at a vertical step, the top of the step
            out[b] = np.interp(grid, fpr, tpr)
    return out


def _roc_panel(ax, score, pos, counts, level, color, label):
    """One ROC curve with its band; returns (auc, lo, hi)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(pos.astype(int), score)
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample without one class: nan, skipped below
        point = _weighted_auc(np.ones((1, len(score))), score, pos)[0]
        aucs = _weighted_auc(counts, score, pos) if counts is not None and len(counts) else np.array([])
    a = (1 - level) / 2 * 100
    lo = hi = float("nan")
    if counts is not None and len(counts):
        aucs = aucs[np.isfinite(aucs)]
        curves = weighted_roc(counts, score, pos)
        curves = curves[np.isfinite(curves).all(1)]
        if len(curves):
            ax.fill_between(FPR_GRID, np.percentile(curves, a, 0), np.percentile(curves, 100 - a, 0),
                            color=color, alpha=0.2, linewidth=0, label=f"{level:.0%} bootstrap band")
        if len(aucs):
            lo, hi = np.percentile(aucs, [a, 100 - a])
    ci = "" if not np.isfinite(lo) else f" [{lo:.3f}, {hi:.3f}]"
    ax.plot(fpr, tpr, color=color, linewidth=1.8, label=f"{label} AUC {point:.3f}{ci}")
    return float(point), float(lo), float(hi)


def _square(ax, title):
    ax.plot([0, 1], [0, 1], linestyle="--", color="#999999", linewidth=0.8)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)


def roc_figure(task_probs: dict, y: np.ndarray, counts: np.ndarray | None, level: float = 0.95, n_note: str = ""):
    """2 x 3 panels: SH and VS rows, one column per binary task."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(11, 7.4), layout="constrained")
    colors = {"sh": "#1f77b4", "vs": "#d62728"}
    for r, module in enumerate(("sh", "vs")):
        col = 0 if module == "sh" else 1
        for t in range(3):
            ax = axes[r, t]
            pos = y[:, col] > t
            _square(ax, f"{module.upper()} {TASK_TITLES[t]}  ({int(pos.sum())} pos / {int((~pos).sum())} neg)")
            if 0 < pos.sum() < len(pos):
                _roc_panel(ax, task_probs[module][:, t], pos, counts, level, colors[module], "mean of 10 networks,")
                ax.legend(loc="lower right", fontsize=7, frameon=False)
            else:
                ax.text(0.5, 0.5, "one class only:\nROC undefined", ha="center", va="center", color="#666666")
    fig.suptitle(f"Binary tasks: ROC of the mean probability over folds x seeds{n_note}")
    return fig


def confusion_figure(confusion: dict, title: str, row_label: str = "true grade", col_label: str = "predicted grade",
                     targets=TARGETS, cmap: str = "Blues"):
    """One 4x4 panel per score: counts and row percentages, shaded by the row percentage."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(targets), figsize=(3.7 * len(targets), 4.5), layout="constrained")
    axes = np.atleast_1d(axes)
    for ax, target in zip(axes, targets):
        cm = np.asarray(confusion[target], np.int64)
        rows = cm.sum(1, keepdims=True)
        frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
        ax.imshow(frac, cmap=cmap, vmin=0, vmax=1)
        for i in range(cm.shape[0]):
            for j in range(cm.shape[1]):
                txt = f"{cm[i, j]}\n{frac[i, j]:.0%}" if rows[i, 0] else "-"
                ax.text(j, i, txt, ha="center", va="center", fontsize=8,
                        color="white" if frac[i, j] > 0.55 else "black")
        ax.set_xticks(range(len(GRADES)), [str(g) for g in GRADES])
        ax.set_yticks(range(len(GRADES)), [str(g) for g in GRADES])
        ax.set_xlabel(col_label)
        ax.set_ylabel(row_label)
        agree = np.trace(cm) / cm.sum() if cm.sum() else float("nan")
        ax.set_title(f"{target.upper() if target != 'combined' else 'combined'}: {agree:.1%} on the diagonal")
        ax.spines[:].set_visible(False)
    fig.suptitle(title)
    return fig


def youden_figure(task_probs: dict, grades: dict, y: np.ndarray, counts: np.ndarray | None, level: float = 0.95):
    """Per split of the combined score (> 0, > 1, > 2): the ROC of max(mean P_SH, mean P_VS) for that split
    (combined = max(SH, VS)), the operating point of the predicted combined grade with its Youden J, and
    the curve's own best-J threshold."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 4.1), layout="constrained")
    for t, ax in enumerate(axes):
        pos = y[:, 2] > t
        _square(ax, f"combined {TASK_TITLES[t]}  ({int(pos.sum())} pos / {int((~pos).sum())} neg)")
        if not 0 < pos.sum() < len(pos):
            ax.text(0.5, 0.5, "one class only:\nROC undefined", ha="center", va="center", color="#666666")
            continue
        score = np.maximum(task_probs["sh"][:, t], task_probs["vs"][:, t])
        _roc_panel(ax, score, pos, counts, level, "#2ca02c", "max(SH, VS) prob.,")
        from sklearn.metrics import roc_curve

        fpr, tpr, thr = roc_curve(pos.astype(int), score)
        k = int(np.argmax(tpr - fpr))
        ax.plot(fpr[k], tpr[k], marker="o", markersize=6, markerfacecolor="white", markeredgecolor="#2ca02c",
                linestyle="none", label=f"best J {tpr[k] - fpr[k]:.3f} at p > {thr[k]:.2f}")
        pred = grades["combined"] > t
        se, sp = (pred & pos).sum() / pos.sum(), (~pred & ~pos).sum() / (~pos).sum()
        ax.plot(1 - sp, se, marker="*", markersize=13, color="#ff7f0e", linestyle="none",
                label=f"predicted grade: J {se + sp - 1:.3f} (sens {se:.2f}, spec {sp:.2f})")
        ax.vlines(1 - sp, 1 - sp, se, color="#ff7f0e", linewidth=1, linestyle=":")
        ax.legend(loc="lower right", fontsize=7, frameon=False)
    fig.suptitle("Combined score: Youden points of the predicted grade (ECOC + MULTITUDE) on each split's ROC")
    return fig


def write_evaluation_plots(probs_dict: dict, labels, out_dir, bootstrap: int = 1000, seed: int = 0,
                           level: float = 0.95) -> list[Path]:
    """roc, confusion and youden figures (PNG + SVG) for engine outputs {"sh_prob", "vs_prob"} and labels
    (N, 3); bootstrap=0 draws the curves without bands or intervals."""
    y = _labels_array(labels)
    sh_p, vs_p = np.asarray(probs_dict["sh_prob"]), np.asarray(probs_dict["vs_prob"])
    task_probs = {"sh": sh_p.mean(axis=(1, 3)), "vs": vs_p.mean(axis=(1, 3))}
    scored = score_probs(sh_p, vs_p)
    grades = {t: np.asarray(scored[t]) for t in TARGETS}
    counts = resample_counts(len(y), bootstrap, seed) if bootstrap > 0 else None
    from sklearn.metrics import confusion_matrix

    confusion = {t: confusion_matrix(y[:, i], grades[t], labels=GRADES) for i, t in enumerate(TARGETS)}
    out_dir = Path(out_dir)
    note = f" ({len(y)} pairs" + (f", {bootstrap} bootstrap resamples, seed {seed})" if bootstrap else ")")
    files = save(roc_figure(task_probs, y, counts, level, note), out_dir / "roc")
    files += save(confusion_figure(confusion, f"Confusion matrices, {len(y)} pairs (rows: true grade; count and row %)"),
                  out_dir / "confusion")
    files += save(youden_figure(task_probs, grades, y, counts, level), out_dir / "youden")
    return files
