"""What a session's log says, reduced to the facts a report shows: time spans of modes and of AI
unavailability, per-section final grades with their stability, per-stage latency, and the figures.

Times are seconds since the session started (wall clock of the machine that ran it). The reduction is
plain Python (tested without matplotlib); only the `*_figure` functions draw.
"""
from __future__ import annotations

import json

import numpy as np

from rating_edge.plots.base import GRADE_COLORS, MODE_COLORS, pyplot

PAIR_STAGES = ("preprocess", "infer", "score", "pair_total")
FRAME_STAGES = ("capture", "render", "total")


def t_end(s: dict) -> float:
    """The session's end: its recorded end, else the last thing it logged."""
    sess = s["session"]
    ts = [sess.get("started") or 0.0, sess.get("ended") or 0.0]
    for key in ("pairs", "events", "modes", "snapshots"):
        ts += [r["t_wall"] for r in s.get(key) or [] if r.get("t_wall") is not None]
    return max(ts)


def mode_spans(s: dict) -> list[tuple[float, float, str]] | None:
    """(start, end, mode) in seconds since the start; None when the log did not record modes."""
    if s.get("modes") is None:
        return None
    t0, end = s["session"]["started"], t_end(s)
    rows = s["modes"]
    return [(r["t_wall"] - t0, (rows[i + 1]["t_wall"] if i + 1 < len(rows) else end) - t0, r["mode"])
            for i, r in enumerate(rows)]


def ai_unavailable(s: dict) -> list[dict]:
    """Periods without AI: {"start", "end", "reason"} (seconds). From the log's "ai" events; a log without
    them (schema 1) can only show an engine that never started (the whole session)."""
    t0, end = s["session"]["started"], t_end(s)
    events = s.get("events") or []
    ai = [e for e in events if e["kind"] == "ai"]
    out, cur = [], None
    if ai:
        for e in ai:
            msg = e["message"] or ""
            if msg.startswith("unavailable") and cur is None:
                cur = {"start": e["t_wall"] - t0, "reason": msg.partition(":")[2].strip() or "unknown"}
            elif msg == "available" and cur is not None:
                out.append({**cur, "end": e["t_wall"] - t0})
                cur = None
        if cur is not None:
            out.append({**cur, "end": end - t0})
        return out
    engine = [e for e in events if e["kind"] == "engine"]
    if engine and not s.get("pairs"):
        return [{"start": 0.0, "end": end - t0, "reason": engine[0]["message"]}]
    return out


def sections(s: dict) -> list[dict]:
    """Per section, in scanning order: pairs, time span, final grades (the temporal aggregate of its last pair,
    or that pair's own grades where there was none), the aggregator's `stable` flag and stability (the
    share of the section's pairs whose combined grade equals the final one)."""
    t0 = s["session"]["started"]
    by: dict[int, list] = {}
    for p in s.get("pairs") or []:
        by.setdefault(int(p["section"]), []).append(p)
    out = []
    for sec, ps in by.items():
        last = ps[-1]
        final = {g: last[f"agg_{g}"] if last.get(f"agg_{g}") is not None else last[g] for g in ("sh", "vs", "combined")}
        comb = [int(p["combined"]) for p in ps]
        out.append({"section": sec, "pairs": len(ps), "start": ps[0]["t_wall"] - t0, "end": last["t_wall"] - t0,
                    "final": final, "stable": None if last.get("stable") is None else bool(last["stable"]),
                    "stability": sum(c == final["combined"] for c in comb) / len(comb),
                    "combined_counts": [comb.count(g) for g in range(4)]})
    return out


def pair_latency(s: dict) -> dict:
    """{stage: [ms per pair]} from the pairs' latency columns."""
    out: dict[str, list] = {}
    for p in s.get("pairs") or []:
        try:
            lat = json.loads(p.get("latency_ms") or "{}")
        except json.JSONDecodeError:
            continue
        for k, v in lat.items():
            out.setdefault(k, []).append(float(v))
    order = [k for k in PAIR_STAGES if k in out] + sorted(k for k in out if k not in PAIR_STAGES)
    return {k: out[k] for k in order}


def percentiles(values) -> dict:
    a = np.asarray(values, np.float64)
    if not len(a):
        return {"p50": None, "p95": None, "p99": None}
    return dict(zip(("p50", "p95", "p99"), (float(x) for x in np.percentile(a, [50, 95, 99]))))


def error_events(s: dict) -> list[dict]:
    """Every event except the AI availability changes (those are drawn as periods)."""
    return [e for e in s.get("events") or [] if e["kind"] != "ai"]


# ---- figures ---------------------------------------------------------------------------------------

def _section_shading(ax, secs):
    for i, sec in enumerate(secs):
        if i % 2 == 0:
            ax.axvspan(sec["start"], max(sec["end"], sec["start"] + 0.05), color="#f2f2f2", zorder=0, linewidth=0)


def timeline_figure(s: dict):
    """Modes, AI availability and the three grades per pair over time, sections shaded."""
    plt = pyplot()
    from matplotlib.patches import Patch

    fig, axes = plt.subplots(5, 1, figsize=(11, 6.2), sharex=True, layout="constrained",
                             gridspec_kw={"height_ratios": [0.6, 0.45, 1, 1, 1]})
    end = t_end(s) - s["session"]["started"]
    spans, secs = mode_spans(s), sections(s)
    ax = axes[0]
    if spans is None:
        ax.text(0.5, 0.5, "mode timeline not recorded (log schema 1)", transform=ax.transAxes, ha="center",
                va="center", color="#666666")
    else:
        for mode in MODE_COLORS:
            bars = [(a, max(b - a, 1e-3)) for a, b, m in spans if m == mode]
            if bars:
                ax.broken_barh(bars, (0, 1), color=MODE_COLORS[mode], linewidth=0)
        ax.legend(handles=[Patch(color=c, label=m.replace("_", " ")) for m, c in MODE_COLORS.items()],
                  loc="upper left", bbox_to_anchor=(1.0, 1.1), fontsize=7, frameon=False)
    ax.set_yticks([])
    ax.set_ylabel("mode", rotation=0, ha="right", va="center")
    ax.spines[["left", "bottom"]].set_visible(False)
    ax = axes[1]
    periods = ai_unavailable(s)
    ax.broken_barh([(0, max(end, 1e-3))], (0, 1), color="#c7e9c0", linewidth=0)
    if periods:
        ax.broken_barh([(p["start"], max(p["end"] - p["start"], 1e-3)) for p in periods], (0, 1), color="#d62728",
                       linewidth=0, hatch="//")
    ax.legend(handles=[Patch(color="#c7e9c0", label="AI available"), Patch(color="#d62728", label="AI unavailable")],
              loc="upper left", bbox_to_anchor=(1.0, 1.2), fontsize=7, frameon=False)
    ax.set_yticks([])
    ax.set_ylabel("AI", rotation=0, ha="right", va="center")
    ax.spines[["left", "bottom"]].set_visible(False)
    pairs = s.get("pairs") or []
    t0 = s["session"]["started"]
    t = np.array([p["t_wall"] - t0 for p in pairs])
    for ax, g in zip(axes[2:], ("sh", "vs", "combined")):
        _section_shading(ax, secs)
        if pairs:
            v = np.array([p[g] for p in pairs])
            ax.scatter(t, v, c=[GRADE_COLORS[int(x)] for x in v], s=16, zorder=3, edgecolors="#333333",
                       linewidths=0.3)
            for sec in secs:
                ps = [p for p in pairs if int(p["section"]) == sec["section"]]
                agg = [(p["t_wall"] - t0, p[f"agg_{g}"]) for p in ps if p.get(f"agg_{g}") is not None]
                if agg:
                    ax.step(*zip(*agg), where="post", color="black", linewidth=1.2, zorder=4)
        else:
            ax.text(0.5, 0.5, "no scored pairs", transform=ax.transAxes, ha="center", va="center", color="#666666")
        ax.set_ylim(-0.5, 3.5)
        ax.set_yticks(range(4))
        ax.set_ylabel(g.upper() if g != "combined" else "comb.", rotation=0, ha="right", va="center")
    for sec in secs:
        axes[2].text((sec["start"] + sec["end"]) / 2, 3.5, f"section {sec['section']}", ha="center", va="bottom",
                     fontsize=7, color="#555555")
    axes[-1].set_xlabel("seconds since the session started (dots: each scored pair; line: aggregated grade "
                        "of the section; shading: sections)")
    axes[-1].set_xlim(0, max(end, 1e-3))
    fig.suptitle("Session timeline: screen mode, AI availability, grades per section")
    return fig


def sections_figure(secs: list[dict]):
    """Per section: how its pairs' combined grades were spread, with the final grade and its stability."""
    plt = pyplot()
    n = len(secs)
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.32 * n), layout="constrained")
    ys = np.arange(n)[::-1]
    for y, sec in zip(ys, secs):
        left = 0.0
        for g, c in enumerate(sec["combined_counts"]):
            share = c / sec["pairs"]
            if share:
                ax.barh(y, share, left=left, color=GRADE_COLORS[g], height=0.7,
                        label=f"grade {g}" if f"grade {g}" not in ax.get_legend_handles_labels()[1] else None)
                left += share
        flag = "" if sec["stable"] is None else (" stable" if sec["stable"] else " unstable")
        ax.text(1.02, y, f"final {sec['final']['combined']} (SH {sec['final']['sh']}, VS {sec['final']['vs']}); "
                f"{sec['stability']:.0%} of {sec['pairs']} pairs agree;{flag}", va="center", fontsize=7)
    labels = [f"section {sec['section']}" for sec in secs]
    ax.set_yticks(ys, labels)
    ax.set_xlim(0, 1.9)
    ax.set_xticks([0, 0.5, 1], ["0", "50%", "100%"])
    ax.set_xlabel("share of the section's scored pairs per combined grade")
    handles, names = ax.get_legend_handles_labels()
    order = sorted(range(len(names)), key=lambda i: names[i])
    fig.legend([handles[i] for i in order], [names[i] for i in order], loc="outside lower center", ncols=4,
               fontsize=7, frameon=False)
    ax.set_title("Final combined grade per section and how stable it was")
    return fig


def latency_figure(lat: dict):
    """Per-pair stage latencies as box plots with p50/p95/p99 marked."""
    plt = pyplot()
    names = list(lat)
    fig, ax = plt.subplots(figsize=(8, 0.9 + 0.45 * len(names)), layout="constrained")
    ys = np.arange(len(names))[::-1]
    data = [np.asarray(lat[k], np.float64) for k in names]
    ax.boxplot(data, positions=ys, orientation="horizontal", widths=0.5, showfliers=True,
               flierprops={"markersize": 2, "alpha": 0.5}, medianprops={"color": "black"})
    for y, d in zip(ys, data):
        p = percentiles(d)
        ax.plot([p["p95"], p["p99"]], [y, y], linestyle="none", marker="D", markersize=4, color="#d62728")
        ax.text(max(d.max(), p["p99"]) * 1.15 if d.max() > 0 else 0.1, y,
                f"p50 {p['p50']:.1f} / p95 {p['p95']:.1f} / p99 {p['p99']:.1f} ms", va="center", fontsize=7)
    ax.set_yticks(ys, names)
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0, right=max(float(d.max()) for d in data) * 12 if data else 10)
    ax.set_xlabel("ms per scored pair (symlog scale; red diamonds: p95, p99)")
    ax.set_title("Per-stage latency of the scored pairs")
    return fig
