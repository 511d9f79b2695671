"""What a second form of the model (INT8, an engine, a student) did to the outputs, as pictures: every
network's probabilities against the reference's, and the grades' cross-table.

A per-network grid, not one pooled scatter: one activation scale serves a whole fused stack, so a single
broken member hides in a pooled cloud but stands out as its own panel.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rating_edge.plots.base import pyplot, save
from rating_edge.plots.metrics import confusion_figure
from rating_edge.scoring import score_probs

GRADE_KEYS = ("sh", "vs", "combined")


def scatter_figure(ref: dict, test: dict, ref_name: str, test_name: str):
    """Rows: module x task; columns: fold x seed. Each panel: P_test against P_ref over the pairs, the
    diagonal, and the share of pairs whose decision (P > 0.5) agrees (red below 100 %)."""
    plt = pyplot()
    a0 = np.asarray(ref["sh_prob"])
    _, folds, tasks, seeds = a0.shape
    rows, cols = 2 * tasks, folds * seeds
    # a fixed grid without shared axes: the constrained layout's solver and axis sharing both cost time
    # that grows faster than the panel count (seconds for 60 panels)
    fig, axes = plt.subplots(rows, cols, figsize=(1.25 * cols + 1.2, 1.25 * rows + 1.2), squeeze=False, gridspec_kw={"left": 0.07, "right": 0.99, "bottom": 0.07,
                                                         "top": 1 - 0.9 / (1.25 * rows + 1.2), "wspace": 0.12,
                                                         "hspace": 0.18})
    worst = (2.0, "")
    for mi, module in enumerate(("sh", "vs")):
        a, b = np.asarray(ref[f"{module}_prob"], np.float64), np.asarray(test[f"{module}_prob"], np.float64)
        for t in range(tasks):
            for f in range(folds):
                for s in range(seeds):
                    ax = axes[mi * tasks + t, f * seeds + s]
                    pa, pb = a[:, f, t, s], b[:, f, t, s]
                    agree = float(np.mean((pa > 0.5) == (pb > 0.5)))
                    name = f"fold{f}-{module}-gt{t}-seed{s}"
                    worst = min(worst, (agree, name))
                    ax.set_autoscale_on(False)
                    ax.set(xlim=(0, 1), ylim=(0, 1), xticks=[0, 1], yticks=[0, 1])
                    ax.tick_params(labelsize=6, length=2, pad=1, labelleft=f * seeds + s == 0,
                                   labelbottom=mi * tasks + t == rows - 1)
                    ax.plot([0, 1], [0, 1], color="#bbbbbb", linewidth=0.6)
                    ax.plot([0, 1, np.nan, 0.5, 0.5], [0.5, 0.5, np.nan, 0, 1], color="#eeeeee", linewidth=0.5,
                            zorder=0)
                    ax.scatter(pa, pb, s=4, alpha=0.6, color="#1f77b4", linewidths=0)
                    ax.text(0.04, 0.96, f"{agree:.0%}", transform=ax.transAxes, va="top", fontsize=7,
                            color="#d62728" if agree < 1 else "#2ca02c")
                    if mi * tasks + t == 0:
                        ax.set_title(f"fold {f} seed {s}", fontsize=7)
                    if f * seeds + s == 0:
                        ax.set_ylabel(f"{module.upper()} >{t}", fontsize=8)
    n = a0.shape[0]
    fig.supxlabel(f"P({ref_name})", fontsize=9)
    fig.supylabel(f"P({test_name})", fontsize=9)
    fig.suptitle(f"Per-network probabilities, {test_name} against {ref_name} ({n} pairs); corner: decision "
                 f"agreement at P > 0.5 (lowest {worst[0]:.0%}, {worst[1]})", fontsize=10)
    return fig


def grade_crosstab(ref: dict, test: dict) -> dict:
    """{"sh"|"vs"|"combined": 4x4 counts, rows the reference's grade, columns the test's}."""
    r = score_probs(np.asarray(ref["sh_prob"]), np.asarray(ref["vs_prob"]))
    t = score_probs(np.asarray(test["sh_prob"]), np.asarray(test["vs_prob"]))
    out = {}
    for g in GRADE_KEYS:
        cm = np.zeros((4, 4), np.int64)
        np.add.at(cm, (np.asarray(r[g]).ravel(), np.asarray(t[g]).ravel()), 1)
        out[g] = cm
    return out


def write_agreement_plots(ref: dict, test: dict, out_dir, ref_name: str = "FP32", test_name: str = "INT8",
                          prefix: str = "") -> list[Path]:
    """{prefix}scatter and {prefix}disagreement figures (PNG + SVG) in out_dir."""
    out_dir = Path(out_dir)
    files = save(scatter_figure(ref, test, ref_name, test_name), out_dir / f"{prefix}scatter")
    n = int(np.asarray(ref["sh_prob"]).shape[0])
    fig = confusion_figure(grade_crosstab(ref, test),
                           f"Grades, {test_name} against {ref_name} ({n} pairs; off the diagonal = disagreement)",
                           row_label=f"{ref_name} grade", col_label=f"{test_name} grade", cmap="Purples")
    files += save(fig, out_dir / f"{prefix}disagreement")
    return files
