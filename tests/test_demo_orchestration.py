"""`make demo` orchestration: cache keying, stage bookkeeping and the summary (not the full demo)."""
import json
import sqlite3

import pytest

from rating_edge import demo as demo_mod
from rating_edge.demo import (
    Demo,
    DemoSettings,
    StageError,
    available_commands,
    find_sidecar,
    format_summary,
    read_log_pairs,
    read_sidecar,
    summarize,
    truth_combined,
)


def test_cache_key_depends_on_settings_and_version(monkeypatch):
    a = DemoSettings()
    assert a.key() == DemoSettings().key() and len(a.key()) == 12
    assert DemoSettings(train_pairs=100).key() != a.key()
    assert DemoSettings(gate=0.99).key() != a.key()
    k = a.key()
    monkeypatch.setattr(demo_mod, "__version__", "9.9.9")
    k2 = a.key()
    assert k2 != k
    monkeypatch.setattr(demo_mod, "code_fingerprint", lambda: "other code")
    assert a.key() not in (k, k2)


def test_code_fingerprint_covers_the_cached_stages():
    fp = demo_mod.code_fingerprint()
    assert len(fp) == 16 and fp == demo_mod.code_fingerprint()


def test_missing_stage_names_the_stage(tmp_path):
    d = Demo(DemoSettings(), tmp_path)
    d._commands = {"train", "export"}
    with pytest.raises(StageError, match=r"stage 'quantize' is not available.*rating-edge quantize"):
        d.need("quantize", "quantize", "INT8 issue 5")
    d.need("train", "train", "x")  # present: no error


def test_cached_stage_publishes_atomically_and_is_reused(tmp_path):
    d = Demo(DemoSettings(), tmp_path)
    calls = []

    def build(tmp):
        calls.append(tmp)
        tmp.mkdir()
        (tmp / "f").write_text("x")

    p = d.cached_stage("data", d.cache / "data", build)
    assert (p / "f").read_text() == "x" and not p.with_name(".data.partial").exists()
    d.cached_stage("data", d.cache / "data", build)
    assert len(calls) == 1
    assert [r.cached for r in d.results] == [False, True]

    def broken(tmp):
        raise StageError("stage 'export' failed")

    with pytest.raises(StageError):
        d.cached_stage("export", d.cache / "pkg", broken)
    assert not (d.cache / "pkg").exists()


def test_cli_failure_is_reported_with_stage(tmp_path):
    d = Demo(DemoSettings(), tmp_path)
    with pytest.raises(StageError, match=r"stage 'plan' failed: `rating-edge plan .*` exited with status 2"):
        d.cli("plan", "plan", tmp_path / "nope", "--device", "orin-nano")


def test_available_commands_lists_registered_ones():
    cmds = available_commands()
    assert "plan" in cmds and "init-ensemble" in cmds
    assert {"report", "evaluate", "bench"} <= cmds


def test_picture_stages_write_into_demo_out(tmp_path):
    """The demo's pictures: quantize's cached FP32-vs-INT8 plots copied out, evaluate/bench/report asked
    for theirs in demo_out (the commands themselves are tested on their own)."""
    d = Demo(DemoSettings(), tmp_path)
    d._commands = available_commands()
    calls = []

    def cli(stage, *args):
        calls.append((stage, [str(a) for a in args]))
        if stage == "eval-data":
            args[2].mkdir(parents=True)  # the dataset a real `phantom dataset` writes

    d.cli = cli
    assert d.int8_plots() is None  # nothing cached yet: nothing to copy
    (d.cache / "int8-plots").mkdir(parents=True)
    (d.cache / "int8-plots" / "int8-u8s8_scatter.png").write_bytes(b"png")
    assert (d.int8_plots() / "int8-u8s8_scatter.png").read_bytes() == b"png"
    assert d.report(tmp_path / "s.db") == d.out / "report" / "index.html"
    d.evaluate(tmp_path / "pkg")
    stages = {c[0]: c[1] for c in calls}
    assert stages["report"][-2:] == ["--html", str(d.out / "report")]
    assert "--plots" in stages["evaluate"] and str(d.out / "plots" / "evaluate") in stages["evaluate"]
    assert stages["eval-data"][:2] == ["phantom", "dataset"]


def _write_log(path, rows):
    from rating_edge.runtime.session_log import SCHEMA

    db = sqlite3.connect(str(path))
    db.executescript(SCHEMA)
    for fg, fd, comb, agg in rows:
        db.execute("INSERT INTO pairs (session, frame_gs, frame_doppler, sh, vs, combined, agg_combined) "
                   "VALUES (1,?,?,?,?,?,?)", (fg, fd, comb, 0, comb, agg))
    db.commit()
    db.close()


def test_summary_from_report_sidecar_and_log(tmp_path):
    sidecar = tmp_path / "scanner.jsonl"
    recs = [{"frame": i, "mode": "gs" if i % 2 == 0 else "doppler", "sh": 2, "vs": 1} for i in range(10)]
    recs[7] = {"frame": 7, "mode": "doppler", "grades": {"sh": 3, "vs": 3, "combined": 3}}
    recs[9] = {"frame": 9, "mode": "frozen"}  # no grades
    sidecar.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    log = tmp_path / "session.db"
    # (gs frame, doppler frame, per-pair combined, aggregated combined shown)
    _write_log(log, [(0, 1, 2, None), (2, 3, 1, 2), (4, 5, 1, 1), (6, 7, 3, 3), (8, 9, 2, 2)])
    report = {"frames_in": 10, "frames_out": 10, "frames_dropped": 0,
              "latency_ms": {"infer": {"p50": 4.0, "p95": 5.0, "p99": 6.5}, "total": {"p50": 9.0, "p99": 12.0}}}
    bench = {"machine": {}, "results": [
        {"name": "naive", "pairs_per_s": 5.0, "p50_ms": 200.0, "p95_ms": 210.0, "p99_ms": 220.0, "ratio_to_naive": 1.0},
        {"name": "stack-fp32", "pairs_per_s": 20.0, "p50_ms": 50.0, "p99_ms": 55.0, "ratio_to_naive": 4.0},
        {"name": "stack-int8", "pairs_per_s": 40.0, "p50_ms": 25.0, "p99_ms": 27.0, "ratio_to_naive": 8.0}]}
    assert find_sidecar(tmp_path / "scanner.mp4") == sidecar
    s = summarize(report, read_sidecar(sidecar), read_log_pairs(log), bench)
    assert s["pairs_scored"] == 5 and s["pairs_with_truth"] == 4 and s["pairs_without_truth"] == 1
    # truth combined: frame1 2, frame3 2, frame5 2, frame7 3; displayed (the pair's own): 2, 1, 1, 3
    assert s["accuracy_displayed"] == pytest.approx(2 / 4)
    assert s["accuracy_aggregated"] == pytest.approx(3 / 4)  # aggregated line: 2 (own), 2, 1, 3
    assert s["confusion_truth_x_shown"][2] == [0, 2, 1, 0] and s["confusion_truth_x_shown"][3][3] == 1
    assert s["latency_infer_ms"] == {"p50": 4.0, "p99": 6.5}
    assert s["bench"]["package"]["name"] == "stack-int8" and s["bench"]["naive"]["pairs_per_s"] == 5.0
    text = format_summary(s, "int8")
    assert "50.0 %" in text and "75.0 %" in text and "8.00x" in text and "stack-int8" in text


def test_truth_combined_forms():
    assert truth_combined({"combined": 1, "sh": 3}) == 1
    assert truth_combined({"sh": 1, "vs": 2}) == 2
    assert truth_combined({"truth": {"sh": 2, "vs": 0}}) == 2
    assert truth_combined({"mode": "no_signal"}) is None


def test_summary_without_bench_or_pairs():
    s = summarize({}, [], [], None)
    assert s["accuracy_displayed"] is None and s["bench"] is None
    assert "n/a" in format_summary(s)


def test_cache_folder_is_fixed_for_the_whole_run(tmp_path, monkeypatch):
    d = Demo(DemoSettings(), tmp_path)
    first = d.cache
    monkeypatch.setattr(demo_mod, "code_fingerprint", lambda: "edited while running")
    assert d.cache == first
