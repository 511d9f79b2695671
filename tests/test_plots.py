"""Every picture renders from small fixtures: files exist, sizes are sane, no warnings; the curves and the
session facts they draw are right; old session logs still open."""
import json
import re
import sqlite3
import struct
import warnings

import numpy as np
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from rating_edge.errors import RatingEdgeError


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n", path
    return struct.unpack(">II", head[16:24])


def check_files(files, names, min_px=(300, 200), max_bytes=3_000_000):
    got = {p.name for p in files}
    assert got == {f"{n}.{ext}" for n in names for ext in ("png", "svg")}, got
    for p in files:
        assert 2_000 < p.stat().st_size < max_bytes, (p, p.stat().st_size)
        if p.suffix == ".png":
            w, h = png_size(p)
            assert w >= min_px[0] and h >= min_px[1], (p, w, h)
        else:
            text = p.read_text()
            assert "<svg" in text and "</svg>" in text and "http://" not in text.replace(
                "http://www.w3.org", "").replace("http://purl.org", "").replace("http://creativecommons.org", "")


@pytest.fixture(autouse=True)
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def fake_predictions(n=60, seed=0, folds=5, seeds=2):
    """Labels and ensemble probabilities that follow them with noise (so AUCs are well above 0.5)."""
    rng = np.random.default_rng(seed)
    sh, vs = rng.integers(0, 4, n), rng.integers(0, 4, n)
    y = np.stack([sh, vs, np.maximum(sh, vs)], 1)

    def probs(g):
        logit = (g[:, None] - np.array([0.5, 1.5, 2.5])[None, :]) * 2.0
        p = 1 / (1 + np.exp(-(logit[:, None, :, None] + rng.normal(0, 1.5, (n, folds, 3, seeds)))))
        return p.astype(np.float32)

    return {"sh_prob": probs(sh), "vs_prob": probs(vs)}, y


def test_weighted_roc_matches_scikit_learn_with_unit_weights():
    from sklearn.metrics import roc_curve

    from rating_edge.plots.metrics import FPR_GRID, weighted_roc

    rng = np.random.default_rng(3)
    score = np.round(rng.random(40), 1)  # many ties
    pos = rng.random(40) > 0.5
    got = weighted_roc(np.ones((1, 40)), score, pos)[0]
    fpr, tpr, _ = roc_curve(pos.astype(int), score)
    assert np.allclose(got, np.interp(FPR_GRID, fpr, tpr))
    # duplicating every pair (weights 2) is the same curve; a class missing gives nan
    assert np.allclose(weighted_roc(np.full((1, 40), 2.0), score, pos)[0], got)
    assert np.isnan(weighted_roc(np.ones((1, 40)) * pos, score, pos)).all()


def test_evaluation_plots(tmp_path):
    from rating_edge.plots.metrics import write_evaluation_plots

    probs, y = fake_predictions()
    files = write_evaluation_plots(probs, y, tmp_path / "ev", bootstrap=50, seed=1)
    check_files(files, ["roc", "confusion", "youden"])
    svg = (tmp_path / "ev" / "roc.svg").read_text()
    assert "AUC" in svg and "bootstrap band" in svg and "grade &gt; 2" in svg
    # the legend's AUC and interval are evaluate's (same resamples, same seed)
    from rating_edge.evaluate import evaluate_predictions

    e = evaluate_predictions(probs, y, bootstrap=50, seed=1)["auc"]["sh"]["gt1"]
    assert f"AUC {e['value']:.3f} [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}]" in svg
    # a task with one class only still draws (and says why there is no curve); no bootstrap: no band
    y1 = y.copy()
    y1[:, 0] = 0
    from rating_edge.plots.base import save
    from rating_edge.plots.metrics import roc_figure

    tp = {"sh": probs["sh_prob"].mean(axis=(1, 3)), "vs": probs["vs_prob"].mean(axis=(1, 3))}
    (svg1,) = save(roc_figure(tp, y1, None), tmp_path / "one" / "roc", formats=("svg",))
    assert "ROC undefined" in svg1.read_text() and "bootstrap band" not in svg1.read_text()


def test_agreement_plots_show_the_broken_member(tmp_path):
    from rating_edge.plots.agreement import grade_crosstab, write_agreement_plots

    ref, _ = fake_predictions(n=40, seed=2)
    test = {k: np.clip(v + np.random.default_rng(0).normal(0, 0.02, v.shape), 0, 1).astype(np.float32)
            for k, v in ref.items()}
    test["vs_prob"][:, 3, 1, 0] = 1 - test["vs_prob"][:, 3, 1, 0]  # one member flipped
    files = write_agreement_plots(ref, test, tmp_path, "FP32", "int8-u8s8", prefix="int8-u8s8_")
    check_files(files, ["int8-u8s8_scatter", "int8-u8s8_disagreement"])
    assert "fold3-vs-gt1-seed0" in (tmp_path / "int8-u8s8_scatter.svg").read_text()
    ct = grade_crosstab(ref, ref)
    assert all(np.array_equal(np.diag(np.diag(m)), m) for m in ct.values())
    assert sum(int(m.sum()) for m in ct.values()) == 3 * 40


def test_bench_plot_from_rows_with_and_without_latencies(tmp_path):
    from rating_edge.bench.core import Candidate, run_bench
    from rating_edge.plots.bench import write_bench_plot

    def cand(name, ms):
        rng = np.random.default_rng(len(name))

        def setup():
            import time

            def run():
                time.sleep(ms * (1 + 0.3 * rng.random()) / 1e3)
                return {"sh_prob": np.zeros(1), "vs_prob": np.zeros(1)}
            return run, lambda: None
        return Candidate(name, setup)

    rep = run_bench([cand("naive", 8), cand("stack:pkg", 2), cand("stack:pkg[int8-u8s8]", 1)], iters=12, warmup=1)
    assert all(len(r["latencies_ms"]) == 12 for r in rep["results"]) and rep["date"].endswith("+00:00")
    json.dumps(rep)
    rep["results"].append({"name": "old json row", "pairs_per_s": 100.0, "p50_ms": 9.0, "p95_ms": 11.0,
                           "p99_ms": 12.0, "ratio_to_naive": 0.8})
    files = write_bench_plot(rep, tmp_path / "bench.png")
    check_files(files, ["bench"])
    svg = (tmp_path / "bench.svg").read_text()
    assert "naive" in svg and "x1.00 naive" in svg and rep["date"] in svg
    with pytest.raises(RatingEdgeError, match="no engine rows"):
        write_bench_plot({"machine": {}, "results": []}, tmp_path / "x.png")


# ---- session report ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def session_log(tmp_path_factory):
    """A real run (phantom video, engine double that fails after a while) with snapshots."""
    video = pytest.importorskip("rating_edge.phantom.video")
    from test_runtime_fixtures import FakeRunner

    from rating_edge.runtime.app import RunConfig, run

    d = tmp_path_factory.mktemp("sess")
    mp4, _ = video.write_video(d / "s.mp4", 6, fps=10, size=(640, 360), layout="single", seed=11, theme="aurora")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = run(RunConfig(source=str(mp4), log=str(d / "s.db"), every_pair=True, snapshots=str(d / "snaps"),
                          snapshot_every=15), runner=FakeRunner(fail_after=6))
    assert r["pairs_scored"] == 6 and r["errors"] > 0
    return d / "s.db"


def test_session_log_records_what_the_report_draws(session_log):
    from rating_edge.plots import session as S
    from rating_edge.runtime.session_log import SCHEMA_VERSION, read_session

    s = read_session(session_log)
    assert s["schema"] == SCHEMA_VERSION and s["session"]["ended"] >= s["session"]["started"]
    modes = [m["mode"] for m in s["modes"]]
    assert {"gs", "doppler"} <= set(modes) and all(a != b for a, b in zip(modes, modes[1:]))  # changes only
    assert len(s["snapshots"]) >= 3 and all(sn["path"].endswith(".png") for sn in s["snapshots"])
    assert s["stats"]["frames_in"] > 0 and set(s["stats"]["latency_ms"]) >= {"capture", "render", "total"}
    periods = S.ai_unavailable(s)
    assert len(periods) == 1 and "engine exploded" in periods[0]["reason"]
    assert periods[0]["end"] >= periods[0]["start"] > 0
    secs = S.sections(s)
    assert sum(x["pairs"] for x in secs) == 6 and all(0 < x["stability"] <= 1 for x in secs)
    assert set(S.pair_latency(s)) >= {"preprocess", "infer", "score", "pair_total"}
    assert [e["kind"] for e in S.error_events(s)] == ["inference"]


def test_report_page_is_self_contained(session_log, tmp_path):
    from rating_edge.plots.report import write_report

    page = write_report(session_log, tmp_path / "rep")
    text = page.read_text()
    srcs = re.findall(r'src="([^"]+)"', text)
    assert {"img/timeline.png", "img/sections.png", "img/latency.png"} <= set(srcs)
    assert sum(s.startswith("snapshots/") for s in srcs) >= 3
    for s in srcs:
        assert (page.parent / s).is_file() and png_size(page.parent / s)[0] > 100
    assert not re.search(r"(https?:)?//[a-z]", text.replace("file://", ""))  # nothing outside the folder
    assert "engine exploded" in text and "AI unavailable" in text and "model hash" in text
    # rewriting the page for the same log replaces the pictures instead of piling them up
    n = len(list((tmp_path / "rep" / "snapshots").iterdir()))
    write_report(session_log, tmp_path / "rep")
    assert len(list((tmp_path / "rep" / "snapshots").iterdir())) == n
    # ... but a folder that is not a session page is never cleared
    (tmp_path / "mine" / "img").mkdir(parents=True)
    (tmp_path / "mine" / "img" / "holiday.png").write_bytes(b"x")
    with pytest.raises(RatingEdgeError, match="not empty"):
        write_report(session_log, tmp_path / "mine")
    assert (tmp_path / "mine" / "img" / "holiday.png").is_file()


OLD_SCHEMA = """
CREATE TABLE sessions (id INTEGER PRIMARY KEY, started REAL, source TEXT, package TEXT, package_hash TEXT,
  backend TEXT, toolkit TEXT);
CREATE TABLE pairs (id INTEGER PRIMARY KEY, session INTEGER, t_wall REAL, t_source REAL, frame_gs INTEGER,
  frame_doppler INTEGER, section INTEGER, layout TEXT, similarity REAL, sh INTEGER, vs INTEGER, combined INTEGER,
  sh_agree INTEGER, vs_agree INTEGER, sh_models TEXT, vs_models TEXT, sh_prob TEXT, vs_prob TEXT, agg_sh INTEGER,
  agg_vs INTEGER, agg_combined INTEGER, agg_pairs INTEGER, stable INTEGER, latency_ms TEXT, package_hash TEXT);
CREATE TABLE events (id INTEGER PRIMARY KEY, session INTEGER, t_wall REAL, kind TEXT, message TEXT);
"""


def write_schema1_log(path, engine_failed=False):
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.execute("INSERT INTO sessions VALUES (1, 1000.0, 'scan.mp4', 'pkg', 'abc', 'ort', '0.1.0')")
    if engine_failed:
        db.execute("INSERT INTO events VALUES (1, 1, 1000.1, 'engine', 'AI unavailable: engine failed to start')")
    else:
        for i in range(5):
            db.execute("INSERT INTO pairs (session, t_wall, section, sh, vs, combined, agg_sh, agg_vs, agg_combined, "
                       "stable, latency_ms, package_hash) VALUES (1, ?, ?, 1, 2, 2, 1, 2, 2, 1, ?, 'abc')",
                       (1000.5 + i, 1 + i // 3, json.dumps({"preprocess": 1.5, "infer": 20 + i, "score": 0.2})))
    db.commit()
    db.close()


def test_schema1_logs_open_and_upgrade(tmp_path):
    from rating_edge.plots import session as S
    from rating_edge.plots.report import write_report
    from rating_edge.runtime.session_log import SessionLog, read_session

    write_schema1_log(tmp_path / "old.db")
    s = read_session(tmp_path / "old.db")
    assert s["schema"] == 1 and s["modes"] is None and s["snapshots"] is None and s["stats"] is None
    page = write_report(tmp_path / "old.db", tmp_path / "rep").read_text()
    assert "schema 1" in page and "predates mode logging" in page
    assert [x["final"]["combined"] for x in S.sections(s)] == [2, 2]
    # an engine that never started: the whole session is one AI-unavailable period
    write_schema1_log(tmp_path / "dead.db", engine_failed=True)
    periods = S.ai_unavailable(read_session(tmp_path / "dead.db"))
    assert len(periods) == 1 and "engine failed" in periods[0]["reason"]
    # a new session appended to a schema-1 file upgrades it in place and keeps the old rows
    log = SessionLog(tmp_path / "old.db", source="x", variant="int8-u8s8")
    log.mode(0, "gs")
    log.finish({"frames_in": 1})
    log.close()
    s2 = read_session(tmp_path / "old.db")
    assert s2["sessions"] == [1, 2] and s2["session"]["variant"] == "int8-u8s8" and len(s2["modes"]) == 1
    assert len(read_session(tmp_path / "old.db", session=1)["pairs"]) == 5


def test_report_errors_are_one_line(tmp_path):
    from rating_edge.cli import main

    assert main(["report", str(tmp_path / "missing.db"), "--html", str(tmp_path / "o")]) == 2
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    assert main(["report", str(tmp_path / "junk.db"), "--html", str(tmp_path / "o")]) == 2
    write_schema1_log(tmp_path / "old.db")
    assert main(["report", str(tmp_path / "old.db"), "--html", str(tmp_path / "o"), "--session", "7"]) == 2
    assert main(["report", str(tmp_path / "old.db"), "--html", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "index.html").is_file()
