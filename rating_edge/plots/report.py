"""`rating-edge report SESSION.db --html OUT/`: one static page per session, for the clinician (which
sections were scored how, and when the AI was away) and the engineer (errors, latency, which package).

The page is index.html plus its pictures in OUT/img/ and copies of the snapshots in OUT/snapshots/, all
linked by relative paths: no server, no script, no external address, so the folder opens from a USB stick
in any browser. Every value from the log is HTML-escaped.
"""
from __future__ import annotations

import html
import shutil
import time
from pathlib import Path

from rating_edge.errors import RatingEdgeError
from rating_edge.plots import session as S
from rating_edge.plots.base import GRADE_COLORS, save
from rating_edge.runtime.session_log import read_session

GENERATOR = "rating-edge report"
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#fafafa;color:#222}
main{max-width:1180px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:1.5em;margin:.4em 0 .1em}h2{font-size:1.15em;margin:1.6em 0 .5em;border-bottom:1px solid #ddd}
.sub{color:#666;margin:0 0 1em}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:1.35em}.card span{color:#666;font-size:.85em}
img.fig{max-width:100%;height:auto;background:#fff;border:1px solid #e3e3e3;border-radius:4px}
table{border-collapse:collapse;background:#fff;font-size:.9em;margin:.3em 0}
th,td{border:1px solid #e3e3e3;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums}
.g{display:inline-block;min-width:1.6em;text-align:center;border-radius:3px;font-weight:bold}
.snaps{display:flex;flex-wrap:wrap;gap:12px}.snaps figure{margin:0;background:#fff;border:1px solid #e3e3e3;
padding:6px;border-radius:4px;max-width:370px}.snaps img{width:100%;height:auto}
figcaption{font-size:.85em;color:#444}.note{color:#666;font-style:italic}.bad{color:#b00020}
code{background:#f0f0f0;padding:0 3px;border-radius:3px}
"""


def _e(v) -> str:
    return html.escape("" if v is None else str(v))


def _time(t) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(t))


def _grade(g) -> str:
    if g is None:
        return "-"
    g = int(g)
    fg = "#000" if g >= 2 else "#fff"
    return f'<span class="g" style="background:{GRADE_COLORS[g]};color:{fg}">{g}</span>'


def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def _table(head, rows, num=()) -> str:
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td class="num">{c}</td>' if i in num else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _img(src: str, alt: str, width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img class="fig" src="{_e(src)}" alt="{_e(alt)}"{w}>'


def write_report(log_path, out_dir, session: int | None = None) -> Path:
    """Write OUT/index.html (+ img/, snapshots/) for one session of a log; returns the page's path."""
    s = read_session(log_path, session)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RatingEdgeError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):  # its img/ and snapshots/ are replaced: only ever in our own folder
        page = out / "index.html"
        if not (page.is_file() and GENERATOR in page.read_text(encoding="utf-8", errors="replace")[:2000]):
            raise RatingEdgeError(f"{out} is not empty and holds no rating-edge session page; choose a new folder")
    for sub in ("img", "snapshots"):
        if (out / sub).is_dir():
            shutil.rmtree(out / sub)  # a page rewritten for another session must not keep old pictures
    (out / "img").mkdir(parents=True, exist_ok=True)
    sess = s["session"]
    t0, end = sess["started"], S.t_end(s)
    pairs, secs, lat = s["pairs"] or [], S.sections(s), S.pair_latency(s)
    periods, errors = S.ai_unavailable(s), S.error_events(s)
    parts = []

    # --- header and summary cards
    dur = end - t0
    away = sum(p["end"] - p["start"] for p in periods)
    stats = s["stats"] or {}
    cards = [(f"{dur:.1f} s", "session length"), (str(len(pairs)), "scored pairs"), (str(len(secs)), "sections"),
             (f"{away:.1f} s" if periods else "0 s", "AI unavailable"), (str(len(errors)), "errors / events")]
    if stats:
        cards.insert(1, (str(stats.get("frames_in", "-")), "frames in"))
    parts.append(f"<h1>rating-edge session {sess['id']}</h1>"
                 f"<p class=\"sub\">{_e(sess.get('source'))} &middot; started {_e(_time(t0))}"
                 f" &middot; log <code>{_e(Path(s['path']).name)}</code> (schema {s['schema']})</p>")
    parts.append('<div class="cards">' + "".join(f"<div class=\"card\"><b>{_e(v)}</b><span>{_e(k)}</span></div>"
                                                 for v, k in cards) + "</div>")

    # --- timeline
    save(S.timeline_figure(s), out / "img" / "timeline", formats=("png",))
    parts.append("<h2>Timeline</h2>" + _img("img/timeline.png", "Timeline of screen modes, AI availability and "
                                                                 "grades per section"))
    if s["modes"] is None:
        parts.append('<p class="note">This log predates mode logging (schema 1): the mode timeline is empty.</p>')
    if stats.get("modes"):
        m = stats["modes"]
        parts.append("<p>Frames per mode: " + ", ".join(f"{_e(k.replace('_', ' '))} {_e(v)}" for k, v in m.items())
                     + "</p>")

    # --- final grades per section
    parts.append("<h2>Final grades per section</h2>")
    if secs:
        save(S.sections_figure(secs), out / "img" / "sections", formats=("png",))
        parts.append(_img("img/sections.png", "Combined grade spread and final grade per section"))
        rows = [[_e(x["section"]), f"{x['start']:.1f}-{x['end']:.1f} s", _e(x["pairs"]), _grade(x["final"]["sh"]),
                 _grade(x["final"]["vs"]), _grade(x["final"]["combined"]), f"{x['stability']:.0%}",
                 "-" if x["stable"] is None else ("yes" if x["stable"] else '<span class="bad">no</span>')]
                for x in secs]
        parts.append(_table(["section", "time", "pairs", "SH", "VS", "combined", "pairs agreeing with final",
                             "stable (last 3 pairs = pooled SH, VS)"], rows, num=(2, 6)))
    else:
        parts.append('<p class="note">No pair was scored in this session.</p>')

    # --- snapshots
    parts.append("<h2>Snapshots</h2>")
    snaps = s["snapshots"]
    if snaps is None:
        parts.append('<p class="note">This log predates snapshot logging (schema 1).</p>')
    elif not snaps:
        parts.append('<p class="note">No snapshot was saved (run with <code>--snapshots DIR</code> and press '
                     '<code>s</code>, or <code>--snapshot-every N</code>).</p>')
    else:
        (out / "snapshots").mkdir(exist_ok=True)
        figs = []
        for i, sn in enumerate(snaps):
            src = Path(sn["path"])
            shown = ("no score shown yet" if sn["section"] is None else
                     f"section {_e(sn['section'])}: SH {_grade(sn['sh'])} VS {_grade(sn['vs'])} combined "
                     f"{_grade(sn['combined'])}")
            cap = (f"{sn['t_wall'] - t0:.1f} s, frame {_e(sn['frame'])}, {shown}; "
                   + ("heatmap shown" if sn["heat"] else "no heatmap"))
            if src.is_file():
                name = f"{i:04d}_{src.name}"
                shutil.copy2(src, out / "snapshots" / name)
                figs.append(f"<figure>{_img('snapshots/' + name, 'snapshot ' + str(i + 1))}"
                            f"<figcaption>{cap}</figcaption></figure>")
            else:
                figs.append(f'<figure><p class="bad">file missing: {_e(src)}</p><figcaption>{cap}</figcaption></figure>')
        parts.append('<div class="snaps">' + "".join(figs) + "</div>")

    # --- AI availability and errors
    parts.append("<h2>AI unavailable periods and errors</h2>")
    if periods:
        parts.append(_table(["from", "to", "length", "reason"],
                            [[f"{p['start']:.1f} s", f"{p['end']:.1f} s", f"{p['end'] - p['start']:.1f} s",
                              _e(p["reason"])] for p in periods], num=(0, 1, 2)))
    else:
        parts.append("<p>The AI was available for the whole session.</p>")
    if errors:
        parts.append(_table(["time", "kind", "message"], [[f"{e['t_wall'] - t0:.1f} s", _e(e["kind"]),
                                                           _e(e["message"])] for e in errors], num=(0,)))
    else:
        parts.append("<p>No errors were logged.</p>")

    # --- latency
    parts.append("<h2>Latency per stage</h2>")
    if lat:
        save(S.latency_figure(lat), out / "img" / "latency", formats=("png",))
        parts.append(_img("img/latency.png", "Per-stage latency of the scored pairs"))
    rows = [[_e(k), "scored pair", *(_ms(v) for v in S.percentiles(vals).values()), _e(len(vals))]
            for k, vals in lat.items()]
    for k, pc in (stats.get("latency_ms") or {}).items():
        if k in S.FRAME_STAGES:
            rows.append([_e(k), "frame", *(_ms(pc.get(q)) for q in ("p50", "p95", "p99")), "-"])
    if rows:
        parts.append(_table(["stage", "per", "p50 ms", "p95 ms", "p99 ms", "n"], rows, num=(2, 3, 4, 5)))
    if not stats:
        parts.append('<p class="note">Frame-level stages (capture, render, total) were not logged: an older log '
                     "(schema 1), or a run that did not end cleanly.</p>")

    # --- package identity
    parts.append("<h2>Package and run identity</h2>")
    hashes = sorted({p["package_hash"] for p in pairs if p.get("package_hash")})
    ident = [("package", sess.get("package") or "(none)"), ("model hash", sess.get("package_hash") or "(none)"),
             ("backend", sess.get("backend")), ("variant", sess.get("variant") or "default"),
             ("toolkit", f"rating-edge {sess.get('toolkit')}"), ("source", sess.get("source")),
             ("started", _time(t0)), ("ended", _time(sess.get("ended")) if sess.get("ended") else "not recorded")]
    if len(hashes) > 1 or (hashes and hashes[0] != sess.get("package_hash")):
        ident.append(("hashes seen in pairs", ", ".join(hashes)))
    if len(s["sessions"]) > 1:
        ident.append(("other sessions in this log", ", ".join(str(i) for i in s["sessions"] if i != sess["id"])))
    parts.append(_table(["", ""], [[_e(k), f"<code>{_e(v)}</code>" if k == "model hash" else _e(v)]
                                   for k, v in ident]))
    from rating_edge import __version__

    parts.append(f'<p class="note">Written by rating-edge {_e(__version__)} on {_e(_time(time.time()))} '
                 f"from <code>{_e(s['path'])}</code>.</p>")
    page = ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f'<meta name="generator" content="{GENERATOR}"><link rel="icon" href="data:,">'
            f"<title>rating-edge session {sess['id']}</title><style>{CSS}</style></head>"
            "<body><main>" + "\n".join(parts) + "</main></body></html>\n")
    p = out / "index.html"
    p.write_text(page, encoding="utf-8")
    return p
