"""The run loop end to end: pairing by section, log, overlay video, report shape, fail-open, durability."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from test_runtime_fixtures import FakeRunner, make_onnx_package

from rating_edge.errors import PackageError
from rating_edge.runtime.aggregate import TemporalAggregator
from rating_edge.runtime.app import RunConfig, run
from rating_edge.runtime.session_log import read_pairs
from rating_edge.runtime.stats import MODES, STAGES

video = pytest.importorskip("rating_edge.phantom.video")


@pytest.fixture(scope="module")
def phantom_mp4(tmp_path_factory):
    d = tmp_path_factory.mktemp("ph")
    mp4, side = video.write_video(d / "s.mp4", 9, fps=10, size=(640, 360), layout="single", seed=11, theme="aurora")
    return mp4, [json.loads(x) for x in side.read_text().splitlines()]


def check_report_shape(r):
    assert {"frames_in", "frames_out", "frames_dropped", "modes", "pairs_scored", "latency_ms"} <= set(r)
    assert set(r["modes"]) == set(MODES)
    assert set(r["latency_ms"]) >= set(STAGES)
    for s in STAGES:
        assert set(r["latency_ms"][s]) == {"p50", "p95", "p99"}


def test_run_pairs_same_section_logs_every_pair_and_writes_video(tmp_path, phantom_mp4):
    mp4, truth = phantom_mp4
    runner = FakeRunner()
    cfg = RunConfig(source=str(mp4), out=str(tmp_path / "o.mp4"), log=str(tmp_path / "s.db"),
                    report=str(tmp_path / "r.json"), every_pair=True)
    r = run(cfg, runner=runner)
    check_report_shape(r)
    assert json.loads((tmp_path / "r.json").read_text())["pairs_scored"] == r["pairs_scored"]
    assert r["frames_in"] == r["frames_out"] == len(truth) and r["frames_dropped"] == 0
    assert sum(r["modes"].values()) == len(truth)
    assert r["pairs_scored"] > 10 and r["pairs_scored"] == runner.calls
    rows = read_pairs(tmp_path / "s.db")
    assert len(rows) == r["pairs_scored"]
    for row in rows:
        tg, td = truth[row["frame_gs"]], truth[row["frame_doppler"]]
        assert tg["section"] == td["section"], (row["frame_gs"], row["frame_doppler"])
        assert td["areas"][0]["mode"] == "doppler" and tg["areas"][0]["mode"] == "gs"
        assert not td["frozen"]
        assert len(json.loads(row["sh_models"])) == 5 and np.asarray(json.loads(row["sh_prob"])).shape == (5, 3, 2)
        assert row["package_hash"] == "" or isinstance(row["package_hash"], str)
        assert 0 <= row["combined"] <= 3
    cap = cv2.VideoCapture(str(tmp_path / "o.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == len(truth)
    # the engine saw ROI crops of the Doppler box region: RGB, input size, red-painted Doppler
    gs, dop = runner.feeds[0]
    assert gs.shape == (1, 64, 64, 3) and dop.dtype == np.uint8


def test_latest_pair_wins_worker_and_phantom_live_source(tmp_path):
    runner = FakeRunner()
    cfg = RunConfig(source="phantom://?seed=5&fps=15&size=640x360&seconds=4&layout=dual", log=str(tmp_path / "s.db"))
    r = run(cfg, runner=runner)
    check_report_shape(r)
    assert r["frames_in"] >= 40 and r["pairs_scored"] >= 1
    assert r["pairs_scored"] + r["pairs_dropped"] <= r["modes"]["doppler"]
    assert len(read_pairs(tmp_path / "s.db")) == r["pairs_scored"]


def test_fail_open_engine_errors_logged_once(tmp_path, phantom_mp4):
    mp4, truth = phantom_mp4
    frames = []
    runner = FakeRunner(fail_after=2)
    cfg = RunConfig(source=str(mp4), log=str(tmp_path / "s.db"), every_pair=True)
    r = run(cfg, runner=runner, on_frame=lambda fr, lo, st, img: frames.append(st.banner))
    assert r["frames_out"] == len(truth)  # the feed kept flowing
    assert r["pairs_scored"] == 2 and r["errors"] > 2
    assert "AI unavailable" in [b for b in frames if b][-1]
    db = sqlite3.connect(tmp_path / "s.db")
    events = db.execute("SELECT kind, message FROM events").fetchall()
    assert len([e for e in events if e[0] == "inference"]) == 1 and "engine exploded" in events[0][1]


def test_no_package_runs_the_feed_with_banner(tmp_path, phantom_mp4):
    mp4, truth = phantom_mp4
    r = run(RunConfig(source=str(mp4), max_frames=20, out=str(tmp_path / "o.avi")))
    assert r["frames_out"] == 20 and r["pairs_scored"] == 0
    assert (tmp_path / "o.avi").stat().st_size > 0


def test_tampered_package_is_refused(tmp_path, phantom_mp4):
    mp4, _ = phantom_mp4
    pkg = make_onnx_package(tmp_path / "pkg")
    with open(pkg / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(PackageError, match="SHA-256"):
        run(RunConfig(source=str(mp4), package=str(pkg), max_frames=5))


def test_temporal_aggregation_and_stable_flag():
    agg = TemporalAggregator(window=6, stable_k=3)
    sh = np.array([2, 2, 2, 1, 1])
    vs = np.array([1, 1, 0, 0, 0])
    a = agg.add(0, 0.0, sh, vs, (2, 0))
    assert not a.stable and a.pairs == 1
    a = agg.add(0, 0.1, np.array([1, 1, 1, 1, 2]), np.array([0, 0, 0, 0, 1]), (1, 0))
    # 10 votes: SH 1 x6, 2 x4; VS 0 x7 -> (1, 0)
    assert (a.sh, a.vs, a.combined) == (1, 0, 1) and a.votes == 10 and a.sh_agree == 6
    for k in range(3):
        a = agg.add(0, 0.2 + k / 10, np.array([1] * 5), np.array([0] * 5), (1, 0))
    assert a.stable
    a = agg.add(1, 0.6, np.array([3] * 5), np.array([3] * 5), (3, 3))  # new section resets
    assert a.pairs == 1 and (a.sh, a.vs) == (3, 3) and not a.stable


def test_real_onnx_package_and_sigkill_keeps_the_log(tmp_path):
    """A real `rating-edge run` process, SIGKILLed mid-run: the WAL database opens cleanly and holds
    every pair scored more than one second before the kill."""
    pytest.importorskip("onnxruntime")
    pkg = make_onnx_package(tmp_path / "pkg")
    db = tmp_path / "s.db"
    env = dict(os.environ, RATING_EDGE_THREADS="1")
    p = subprocess.Popen([sys.executable, "-m", "rating_edge", "run", "--package", str(pkg), "--source",
                          "phantom://?seed=2&fps=20&size=640x360&layout=dual", "--log", str(db)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        seen = []  # (wall time observed, rows) sampled while it runs
        end = time.time() + 60
        while time.time() < end:
            time.sleep(0.2)
            if p.poll() is not None:
                pytest.fail(f"run exited early: {p.stderr.read().decode()[-800:]}")
            if db.exists():
                try:
                    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
                    n = con.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]
                    con.close()
                except sqlite3.OperationalError:
                    continue
                seen.append((time.time(), n))
                if n >= 15:
                    break
        time.sleep(1.2)
        kill_t = time.time()
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    assert seen and seen[-1][1] >= 15, seen
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = con.execute("SELECT t_wall, sh, vs, combined, package_hash FROM pairs").fetchall()
    con.close()
    # every pair scored more than 1 s before the kill is there (at least what a reader saw by then)
    before = max(n for t, n in seen if t < kill_t - 1.0)
    assert len(rows) >= before and len(rows) >= 15
    assert sum(1 for r in rows if r[0] < kill_t - 1.0) >= before
    assert all(r[4] for r in rows)


@pytest.mark.parametrize("parallel", [True, False])
def test_scorer_prepares_the_sections_gs_once_and_the_same_inputs(parallel):
    """The GS input is reused across the Doppler frames paired with one GS frame, and it is exactly what
    preprocessing gives; a new GS frame or another ROI is prepared afresh."""
    from rating_edge.preprocess import PreprocessParams, prepare_doppler, prepare_gs
    from rating_edge.runtime.pairing import Pair
    from rating_edge.runtime.worker import Scorer

    rng = np.random.default_rng(3)
    p = PreprocessParams(input_size=32)
    sc = Scorer(None, p)
    sc.parallel = parallel  # GS beside Doppler on a second core, or one after the other
    gs1, gs2 = (rng.integers(0, 256, (90, 120, 3), dtype=np.uint8) for _ in range(2))

    def pair(fg, fd, gs, roi):
        return Pair(fg, fd, fd / 10, 1, gs, rng.integers(0, 256, (90, 120, 3), dtype=np.uint8), roi, roi,
                    (0, 0, 120, 90), (0, 0, 120, 90), 0.9)

    a = pair(1, 2, gs1, (5, 5, 80, 60))
    g_a, d_a = sc.prepare(a)
    assert np.array_equal(g_a[0], prepare_gs(gs1, a.roi_gs, p))
    assert np.array_equal(d_a[0], prepare_doppler(a.doppler_bgr, a.roi_doppler, p))
    b = pair(1, 3, gs1, (5, 5, 80, 60))
    g_b, d_b = sc.prepare(b)
    assert g_b is g_a and np.array_equal(d_b[0], prepare_doppler(b.doppler_bgr, b.roi_doppler, p))
    for c in (pair(4, 5, gs2, (5, 5, 80, 60)), pair(4, 6, gs2, (0, 0, 100, 80))):
        g_c, _ = sc.prepare(c)
        assert g_c is not g_a and np.array_equal(g_c[0], prepare_gs(c.gs_bgr, c.roi_gs, p))
    sc.close()


class ScriptedWindow:
    """A window without a GUI: the same mouse handling as the real one, keys and drags from a script
    keyed by frame number, every shown frame kept."""

    def __init__(self, keys: dict, drags: dict):
        from rating_edge.runtime.sinks import WindowControls

        self.name = "window"
        self.controls = WindowControls()
        self.keys, self.drags, self.shown, self.n = keys, drags, [], 0

    @property
    def roi(self):
        return self.controls.roi

    @roi.setter
    def roi(self, v):
        self.controls.roi = v

    def write(self, frame):
        self.shown.append(frame.copy())

    def key(self):
        self.n += 1
        for ev in self.drags.get(self.n, []):
            self.controls.mouse(*ev)
        return ord(self.keys[self.n]) if self.n in self.keys else 255

    def close(self):
        pass


def test_window_keys_and_mouse_drive_the_overlay(tmp_path, phantom_mp4):
    """h heat, ? help, mouse-drawn ROI, r reset, f freeze, s snapshot, q quit, as the `?` help lists."""
    mp4, truth = phantom_mp4
    down, move, up = cv2.EVENT_LBUTTONDOWN, cv2.EVENT_MOUSEMOVE, cv2.EVENT_LBUTTONUP
    tiny = [(down, 5, 5), (up, 9, 9)]  # a click is not an ROI
    drag = [(down, 100, 60), (move, 200, 150), (up, 260, 200)]
    keys = {2: "h", 4: "h", 5: "?", 9: "r", 10: "s", 30: "f", 60: "q"}  # Doppler (scores) from frame 25
    win = ScriptedWindow(keys, {6: tiny, 7: drag})
    seen = []
    cfg = RunConfig(source=str(mp4), every_pair=True, snapshots=str(tmp_path / "snaps"))
    runner = FakeRunner()
    calls = []
    r = run(cfg, runner=runner, window=win,
            on_frame=lambda fr, lo, st, img: (calls.append(runner.calls), seen.append(
                (st.show_heat, st.show_help, st.roi_override, st.frozen_overlay, st.result))))
    # frame k's state is drawn before frame k's key is read
    assert [s[0] for s in seen[:6]] == [True, True, False, False, True, True]
    assert seen[4][1] is False and seen[5][1] is True
    assert seen[6][2] is None and seen[7][2] == (100, 60, 160, 140) and seen[9][2] is None
    # snapshot taken on the frame after `s`, and it is that shown frame
    snaps = sorted((tmp_path / "snaps").glob("*.png"))
    assert len(snaps) == 1 and np.array_equal(cv2.imread(str(snaps[0])), win.shown[10])
    # frozen overlay: the shown result stops changing while new pairs are still scored
    frozen = [s[4] for s in seen[30:60]]
    assert frozen[0] is not None and all(x is frozen[0] for x in frozen) and seen[30][3] and not seen[29][3]
    assert calls[59] > calls[30]  # pairs were still scored, but not shown
    assert r["frames_out"] == 60 < len(truth)


def test_snapshot_key_without_a_folder_uses_the_default(tmp_path, phantom_mp4, monkeypatch):
    from rating_edge.runtime.app import DEFAULT_SNAPSHOTS

    monkeypatch.chdir(tmp_path)
    mp4, _ = phantom_mp4
    run(RunConfig(source=str(mp4), max_frames=6), window=ScriptedWindow({2: "s"}, {}))
    assert len(list((tmp_path / DEFAULT_SNAPSHOTS).glob("*.png"))) == 1


@pytest.mark.parametrize("every_pair", [False, True])
def test_overlay_drawn_in_place_never_reaches_the_engine(phantom_mp4, monkeypatch, every_pair):
    """The run loop draws on each captured frame; the engine must still get exactly the preprocessing of
    the frames as decoded (GS images held across frames and pairs scored by the worker included)."""
    from rating_edge.preprocess import prepare_doppler, prepare_gs
    from rating_edge.runtime.worker import Scorer

    mp4, truth = phantom_mp4
    cap = cv2.VideoCapture(str(mp4))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    seen = []
    orig = Scorer.prepare

    def prepare(self, pair):
        gs, dop = orig(self, pair)
        seen.append((pair, gs.copy(), dop.copy(), self.params))
        return gs, dop

    monkeypatch.setattr(Scorer, "prepare", prepare)
    slow = FakeRunner()
    real_infer = slow._infer
    slow._infer = lambda gs, dop: (time.sleep(0.02), real_infer(gs, dop))[1]  # the worker lags the loop
    r = run(RunConfig(source=str(mp4), every_pair=every_pair, pace=True), runner=slow)
    assert r["pairs_scored"] >= 3 and len(seen) == r["pairs_scored"]
    for pair, gs, dop, params in seen:
        (gx, gy, gw, gh), (dx, dy, dw, dh) = pair.area_gs, pair.area_doppler
        g = frames[pair.frame_gs][gy:gy + gh, gx:gx + gw]
        d = frames[pair.frame_doppler][dy:dy + dh, dx:dx + dw]
        if g.shape != d.shape:
            g = cv2.resize(g, (d.shape[1], d.shape[0]), interpolation=cv2.INTER_AREA)
        # a detached pair holds only its ROI's pixels: its ROI in the image area is area_roi
        assert np.array_equal(gs[0], prepare_gs(g, pair.area_roi("gs"), params))
        assert np.array_equal(dop[0], prepare_doppler(d, pair.area_roi("doppler"), params))


def test_non_finite_engine_outputs_are_not_shown():
    """NaN probabilities are an engine failure (banner, no grade); a NaN heatmap is dropped, scores kept."""
    from rating_edge.preprocess import PreprocessParams
    from rating_edge.runtime.pairing import Pair
    from rating_edge.runtime.worker import Scorer

    class NanRunner(FakeRunner):
        def __init__(self, what):
            super().__init__()
            self.what = what

        def _infer(self, gs, dop):
            out = super()._infer(gs, dop)
            out[self.what] = np.full_like(out[self.what], np.nan)
            return out

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)
    pair = Pair(1, 2, 0.1, 1, img, img, None, None, (0, 0, 120, 90), (0, 0, 120, 90), 0.9)
    for what, ok in (("sh_prob", False), ("heat_gs", True)):
        runner = NanRunner(what)
        runner.activate()
        sc = Scorer(runner, PreprocessParams(input_size=64))
        res = sc.score(pair)
        assert res.ok is ok
        if ok:
            assert res.heat_gs is None and res.heat_doppler is not None and res.scores is not None
        else:
            assert "NaN" in res.error
        sc.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator settings")
def test_allocator_settings_apply_once_and_can_be_turned_off():
    code = "from rating_edge.runtime.memory import keep_freed_memory as k; print(k(), k())"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    off = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "RATING_EDGE_MALLOC_TUNE": "0"}).stdout.split()
    import platform

    assert on == (["True", "True"] if platform.libc_ver()[0] == "glibc" else ["False", "False"])
    assert off == ["False", "False"]
