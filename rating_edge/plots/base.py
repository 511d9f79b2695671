"""matplotlib, headless and on demand, and one way to save a figure (PNG for pages, SVG for print)."""
from __future__ import annotations

from pathlib import Path

from rating_edge.errors import RatingEdgeError

FORMATS = ("png", "svg")
DPI = 130
# Grade colours shared by every figure (0 = none ... 3 = severe), colour-blind safe (viridis stops)
GRADE_COLORS = ("#440154", "#31688e", "#35b779", "#fde725")
MODE_COLORS = {"gs": "#8c8c8c", "doppler": "#d62728", "frozen": "#1f77b4", "no_signal": "#000000"}


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed), or a one-line install hint."""
    try:
        import matplotlib
    except ImportError:
        raise RatingEdgeError("pictures need matplotlib: pip install 'rating-edge[plots]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False,
                         "axes.spines.right": False, "svg.fonttype": "none", "figure.dpi": DPI})
    return plt


def save(fig, stem, formats=FORMATS) -> list[Path]:
    """Write `fig` as stem.png and stem.svg (a suffix on `stem` is replaced); closes the figure."""
    plt = pyplot()
    stem = Path(stem)
    if stem.suffix.lower() in (".png", ".svg"):
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    try:
        for fmt in formats:
            p = stem.with_name(f"{stem.name}.{fmt}")
            fig.savefig(p, dpi=DPI, format=fmt, metadata={"Date": None} if fmt == "svg" else None)
            out.append(p)
    finally:
        plt.close(fig)
    return out
