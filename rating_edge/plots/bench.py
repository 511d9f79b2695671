"""`bench --plot`: each row's latency distribution beside its throughput, with the ratio to naive.

Latencies are drawn on a log axis: the naive 60-network baseline and an INT8 package differ by an order
of magnitude, and a linear axis would flatten every fast row into a line. Rows from a bench JSON written
before per-iteration latencies were kept show their p50/p95/p99 marks only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rating_edge.errors import RatingEdgeError
from rating_edge.plots.base import pyplot, save

MARKS = (("p50_ms", "p50", "|", 14), ("p95_ms", "p95", "D", 5), ("p99_ms", "p99", "x", 7))


def _title(report: dict) -> str:
    m = report.get("machine", {})
    load = m.get("loadavg_1m")
    parts = [m.get("cpu") or m.get("host") or "unknown machine"]
    if m.get("cores"):
        parts.append(f"{m['cores']} cores" + (f", load {load:.1f}" if load is not None else ""))
    when = report.get("date") or "date not recorded"
    return (f"{'; '.join(parts)}  |  {when}  |  batch {report.get('batch', 1)}, "
            f"{report.get('iters', '?')} timed pairs per row")


def bench_figure(report: dict):
    rows = report.get("results") or []
    if not rows:
        raise RatingEdgeError("this bench report has no engine rows to plot (run bench with --reference)")
    plt = pyplot()
    n = len(rows)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11.5, 1.0 + 0.55 * n + 1.0), layout="constrained",
                                 gridspec_kw={"width_ratios": [3, 2]}, sharey=True)
    ys = np.arange(n)[::-1]  # first row on top
    names = [r["name"] for r in rows]
    colors = ["#7f7f7f" if r["name"] == "naive" else "#1f77b4" for r in rows]
    for y, r, c in zip(ys, rows, colors):
        lat = np.asarray(r.get("latencies_ms") or [], np.float64)
        lat = lat[np.isfinite(lat) & (lat > 0)]
        if len(lat) >= 2 and np.ptp(lat) > 0:
            v = ax.violinplot([lat], positions=[y], orientation="horizontal", widths=0.8, showextrema=False)
            for body in v["bodies"]:
                body.set_facecolor(c)
                body.set_alpha(0.35)
            ax.scatter(lat, np.full(len(lat), y) + np.random.default_rng(0).uniform(-0.12, 0.12, len(lat)),
                       s=3, color=c, alpha=0.5, linewidths=0)
        for key, label, marker, size in MARKS:
            if r.get(key) is not None:
                ax.plot(r[key], y, marker=marker, markersize=size, color="black" if key == "p50_ms" else "#d62728",
                        linestyle="none", label=label if y == ys[0] else None)
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter

    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:g}")[0] in "25" else ""))
    ax.set_yticks(ys, names)
    ax.set_xlabel("latency per pair (ms, log scale)")
    ax.set_title("latency distribution (violin), p50 / p95 / p99 marked")
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    ax.grid(axis="x", which="both", color="#eeeeee", linewidth=0.6)
    pps = [r["pairs_per_s"] for r in rows]
    bx.barh(ys, pps, color=colors, height=0.6)
    top = max(pps) if pps else 1.0
    for y, r in zip(ys, rows):
        ratio = r.get("ratio_to_naive")
        txt = f"{r['pairs_per_s']:.3g}/s" + ("" if ratio is None else f"  x{ratio:.2f} naive")
        bx.text(r["pairs_per_s"] + 0.01 * top, y, txt, va="center", fontsize=8)
    bx.set_xlim(0, top * 1.55)
    bx.set_xlabel("pairs per second")
    bx.set_title("throughput, ratio to naive PyTorch")
    bx.tick_params(axis="y", left=False)
    fig.suptitle(_title(report), fontsize=9)
    return fig


def write_bench_plot(report: dict, path) -> list[Path]:
    """FILE.png and FILE.svg (the suffix of `path`, if any, is replaced)."""
    return save(bench_figure(report), Path(path))
