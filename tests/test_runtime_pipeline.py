"""The run loop's stages: one composition for run and the benchmarks, fail-open at every stage with the
errors counted by stage, typed engine errors, tiny frames, bad profiles, unreadable folder images,
session logs that are locked / old / not a log, and sinks that fail."""
import json
import sqlite3
import threading

import cv2
import numpy as np
import pytest
from test_runtime_fixtures import FakeRunner

from rating_edge.errors import RatingEdgeError
from rating_edge.infer.errors import EngineMismatch, EngineUnavailable
from rating_edge.runtime import app as app_mod
from rating_edge.runtime.app import RunConfig, run
from rating_edge.runtime.capture import FramesSource, as_bgr8
from rating_edge.runtime.layout import LayoutDetector, Profile, load_profile
from rating_edge.runtime.session_log import SCHEMA, read_pairs
from rating_edge.runtime.stats import ERROR_STAGES, RunStats

video = pytest.importorskip("rating_edge.phantom.video")


@pytest.fixture(scope="module")
def phantom_frames():
    """Frames of the single-layout phantom (GS then Doppler of a few sections) kept in memory."""
    sc = video.PhantomScanner(seed=11, size=(640, 360), fps=10, layout="single", theme="aurora")
    return [sc.frame(i)[0] for i in range(60)]


def frames_cfg(tmp_path, **kw):
    return RunConfig(source="frames", every_pair=True, pace=False, **kw)


def run_frames(frames, tmp_path=None, runner=None, **kw):
    return run(frames_cfg(tmp_path, **kw), runner=runner if runner is not None else FakeRunner(),
               source=FramesSource(list(frames)))


def test_report_counts_every_error_stage_and_a_clean_run_has_none(phantom_frames):
    r = run_frames(phantom_frames)
    assert set(r["errors_by_stage"]) == set(ERROR_STAGES)
    assert r["errors"] == 0 and r["frames_out"] == len(phantom_frames) and r["pairs_scored"] > 5
    assert {"layout", "pairing", "sinks"} <= set(r["latency_ms"])


@pytest.mark.parametrize("stage,target", [
    ("layout", "rating_edge.runtime.layout.LayoutDetector.detect"),
    ("pairing", "rating_edge.runtime.pairing.Pairer.update"),
    ("overlay", "rating_edge.runtime.pipeline.render"),
])
def test_each_stage_fails_open_and_is_counted(phantom_frames, monkeypatch, stage, target, capsys):
    def boom(*a, **k):
        raise ValueError(f"{stage} exploded")

    monkeypatch.setattr(target, boom)
    r = run_frames(phantom_frames)
    assert r["frames_out"] == len(phantom_frames)  # the feed kept flowing
    assert r["errors_by_stage"][stage] == len(phantom_frames)
    assert capsys.readouterr().err.count(f"{stage} exploded") == 1  # reported once, not per frame


def test_failing_sink_is_reported_once_counted_and_the_others_go_on(phantom_frames, tmp_path, capsys):
    class DiskFull:
        name = "disk"

        def write(self, frame):
            raise OSError(28, "No space left on device")

        def close(self):
            pass

    got = []

    class Good:
        name = "good"

        def write(self, frame):
            got.append(frame.shape)

        def close(self):
            pass

    cfg = frames_cfg(tmp_path)
    pipe = app_mod.build_pipeline(cfg, FakeRunner(), source=FramesSource(list(phantom_frames)))
    pipe.sinks.sinks += [DiskFull(), Good()]
    pipe.run()
    extra = pipe.close()
    assert len(got) == len(phantom_frames) and pipe.stats.errors_by_stage["sinks"] == 1
    assert extra["broken_sinks"] == ["disk"] and capsys.readouterr().err.count("No space left") == 1


def test_frames_that_are_not_images_are_counted_and_skipped(phantom_frames):
    bad = [np.zeros((0, 0, 3), np.uint8), np.zeros((10, 10, 3), np.int64), np.zeros((4, 4, 5), np.uint8)]
    r = run_frames(list(phantom_frames[:10]) + bad + list(phantom_frames[10:20]))
    assert r["frames_out"] == 20 and r["errors_by_stage"]["frame"] == 3


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 3), (5, 5), (8, 8), (4, 2000), (2000, 4), (1, 4096)])
def test_tiny_frames_never_stop_the_run(phantom_frames, tmp_path, size):
    h, w = size
    tiny = np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8)
    frames = [tiny, *phantom_frames[:12], tiny, tiny]
    r = run_frames(frames, out=str(tmp_path / "o.avi"))
    assert r["frames_out"] == len(frames)
    assert r["errors_by_stage"]["layout"] == r["errors_by_stage"]["overlay"] == r["errors_by_stage"]["pairing"] == 0


def test_as_bgr8_converts_gray_alpha_and_16_bit():
    assert as_bgr8(np.full((4, 5), 65535, np.uint16)).tolist() == np.full((4, 5, 3), 255, np.uint8).tolist()
    assert as_bgr8(np.zeros((4, 5, 4), np.uint8)).shape == (4, 5, 3)
    assert as_bgr8(np.zeros((4, 5, 1), np.uint8)).shape == (4, 5, 3)
    with pytest.raises(ValueError):
        as_bgr8(np.zeros((4, 5, 2), np.uint8))


# ---- engines: the type of the error decides -----------------------------------------------------------

class Refusing(FakeRunner):
    def __init__(self, exc):
        super().__init__()
        self.exc = exc

    def _activate(self):
        raise self.exc


def test_engine_mismatch_stops_with_its_message(phantom_frames):
    with pytest.raises(EngineMismatch, match="rebuild it here"):
        run_frames(phantom_frames, runner=Refusing(EngineMismatch("engine for sm 87: rebuild it here")))


@pytest.mark.parametrize("exc", [EngineUnavailable("TensorRT is not installed"), RuntimeError("CUDA driver too old"),
                                 RatingEdgeError("something mentioning TensorRT and rebuild")])
def test_any_other_engine_failure_fails_open_with_the_banner(phantom_frames, exc):
    banners = []
    r = run(frames_cfg(None), runner=Refusing(exc), source=FramesSource(list(phantom_frames)),
            on_frame=lambda fr, lo, st, img: banners.append(st.banner))
    assert r["frames_out"] == len(phantom_frames) and r["pairs_scored"] == 0
    assert r["errors_by_stage"]["engine"] == 1 and all(b and "AI unavailable" in b for b in banners)


def test_trt_runner_raises_typed_errors():
    from rating_edge.infer.loaders import select_engines
    from rating_edge.package import Package

    pkg = Package(path=None, meta={"engines": [{"file": "e.plan", "precision": "fp16", "trt_version": "10.3",
                                                "gpu": "Orin", "compute_capability": "8.7"}]})
    here = {"gpu": "H200", "compute_capability": "9.0", "trt_version": "10.3"}
    with pytest.raises(EngineMismatch, match="rebuild"):
        select_engines(pkg, here)
    with pytest.raises(EngineMismatch, match="rebuild"):
        select_engines(Package(path=None, meta={}), here)


def test_bench_runtime_runs_the_run_pipeline(monkeypatch):
    """`bench --runtime` measures what `run` composes: it goes through app.build_pipeline, once as `run`
    arranges it (pairs scored on the inference thread) and once with everything on one thread."""
    from rating_edge.runtime.overhead import measure_runtime_overhead

    calls = []
    real = app_mod.build_pipeline
    monkeypatch.setattr(app_mod, "build_pipeline", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    r = measure_runtime_overhead("phantom://?seed=11&fps=10&layout=single", frames=24, size=(640, 360),
                                 input_size=64, warmup=4)
    assert [c.every_pair for c in calls] == [False, True]
    assert r["frames"] == 24 and r["pairs"] >= 1 and r["scoring"] == "inference thread"
    assert r["latency_ms"]["total"]["p50"] > 0 and r["latency_ms"]["preprocess"]["p50"] > 0
    assert r["serial"]["pairs"] >= r["pairs"] and r["serial"]["latency_ms"]["total"]["p50"] > 0


# ---- profiles ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("prof,msg", [
    ({"frame_size": [640, 360], "areas": [[-10, 0, 100, 100]]}, "x, y >= 0"),
    ({"frame_size": [640, 360], "areas": [[0, 0, -100, 100]]}, "positive size"),
    ({"frame_size": [640, 360], "areas": [[600, 300, 100, 100]]}, "inside the frame_size"),
    ({"frame_size": [0, 0], "areas": [[0, 0, 10, 10]]}, "frame_size"),
    ({"frame_size": [640, "x"]}, "frame_size"),
    ({"areas": "everywhere", "frame_size": [640, 360]}, "areas must be a list"),
    ({"roi": [0, 0, "a", 4]}, "roi"),
    ({"ui_regions": [[1, 2]]}, "ui region"),
])
def test_bad_profiles_are_one_line_errors(tmp_path, prof, msg):
    p = tmp_path / "p.json"
    p.write_text(json.dumps(prof))
    with pytest.raises(RatingEdgeError, match=msg):
        load_profile(p)


def test_binary_profile_is_a_one_line_error(tmp_path):
    p = tmp_path / "p.json"
    p.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(RatingEdgeError, match="not a text file"):
        load_profile(p)


def test_profile_areas_outside_the_frame_are_clipped_not_crashing(phantom_frames):
    det = LayoutDetector(Profile(frame_size=(640, 360), areas=[(-50, -50, 100, 100), (630, 350, 100, 100)]))
    lo = det.detect(phantom_frames[0])
    assert [a.box for a in lo.areas] == [(0, 0, 50, 50)]  # the second lies outside: dropped


# ---- folder sources -----------------------------------------------------------------------------------

def test_unreadable_images_in_a_folder_are_reported_once_and_counted(tmp_path, phantom_frames, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    for i, f in enumerate(phantom_frames[:6]):
        cv2.imwrite(str(d / f"f{i:02d}.png"), f)
    (d / "f02b.png").write_bytes(b"not a png")
    (d / "f04b.jpg").write_bytes(b"")
    r = run(RunConfig(source=str(d), every_pair=True), runner=FakeRunner())
    assert r["frames_out"] == 6 and r["errors_by_stage"]["frame"] == 2
    err = capsys.readouterr().err
    assert err.count("unreadable image") == 1 and "f02b.png" in err


# ---- the session log ----------------------------------------------------------------------------------

def test_locked_log_is_retried_and_no_row_is_lost(tmp_path, phantom_frames, capsys):
    db = tmp_path / "s.db"
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(SCHEMA)
    con.execute("BEGIN EXCLUSIVE")  # another process holds the database

    def release(fr, lo, st, img):
        if fr.index == 30 and con.in_transaction:
            con.execute("COMMIT")

    r = run(frames_cfg(tmp_path, log=str(db)), runner=FakeRunner(), source=FramesSource(list(phantom_frames)),
            on_frame=release)
    con.close()
    assert r["frames_out"] == len(phantom_frames) and r["errors_by_stage"]["log"] >= 1
    assert r["log_rows_lost"] == 0 and len(read_pairs(db)) == r["pairs_scored"] > 5
    assert capsys.readouterr().err.count("locked") == 1


def test_old_schema_log_is_brought_up_to_date(tmp_path, phantom_frames, capsys):
    db = tmp_path / "s.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE pairs (id INTEGER PRIMARY KEY, session INTEGER, sh INTEGER, vs INTEGER)")
    con.execute("INSERT INTO pairs (session, sh, vs) VALUES (0, 1, 2)")
    con.commit()
    con.close()
    r = run_frames(phantom_frames, log=str(db))
    rows = read_pairs(db)
    assert len(rows) == r["pairs_scored"] + 1 and rows[0]["sh"] == 1 and rows[-1]["package_hash"] is not None
    assert "older version" in capsys.readouterr().err and r["errors"] == 0


def test_a_file_that_is_not_a_log_is_counted_and_the_feed_goes_on(tmp_path, phantom_frames, capsys):
    db = tmp_path / "s.db"
    db.write_bytes(b"this is not sqlite" * 100)
    r = run_frames(phantom_frames, log=str(db))
    assert r["frames_out"] == len(phantom_frames) and r["errors_by_stage"]["log"] >= 1
    assert r["log_rows_lost"] == r["pairs_scored"] > 0
    assert capsys.readouterr().err.count("cannot open the session log") == 1


def test_video_that_cannot_be_played_back_is_an_error(tmp_path, phantom_frames, monkeypatch):
    from rating_edge.runtime.sinks import VideoFileSink

    real_release = cv2.VideoWriter.release

    class Trunc(VideoFileSink):  # what a full disk does: the file ends early, the writer says nothing
        def close(self):
            if self.writer is not None:
                real_release(self.writer)
                self.writer = None
                with open(self.path, "r+b") as f:
                    f.truncate(self.path.stat().st_size // 3)
            self.verify()

    monkeypatch.setattr(app_mod, "VideoFileSink", Trunc)
    r = run_frames(phantom_frames, out=str(tmp_path / "o.mp4"))
    assert r["errors_by_stage"]["sinks"] == 1 and r["broken_sinks"] == [f"video {tmp_path / 'o.mp4'}"]


def test_stats_memory_is_bounded():
    st = RunStats()
    for i in range(20000):
        st.add("render", float(i % 100))
    assert st.lat["render"].values().size == 8192 and 45 <= st.latency()["render"]["p50"] <= 55


def test_errors_reported_before_the_log_opens_reach_it(tmp_path, phantom_frames):
    db = tmp_path / "s.db"
    run(frames_cfg(tmp_path, log=str(db)), runner=Refusing(EngineUnavailable("no GPU here")),
        source=FramesSource(list(phantom_frames[:5])))
    ev = sqlite3.connect(db).execute("SELECT kind, message FROM events").fetchall()
    assert ("engine", "EngineUnavailable: no GPU here") in ev


def test_threads_end_with_the_run(phantom_frames):
    before = threading.active_count()
    run(RunConfig(source="frames", pace=False), runner=FakeRunner(), source=FramesSource(list(phantom_frames[:10])))
    assert threading.active_count() == before


def test_soak_reports_resources_and_queues_at_start_and_end(tmp_path):
    pytest.importorskip("psutil")
    from test_runtime_fixtures import make_onnx_package

    from rating_edge.runtime.soak import soak

    pkg = make_onnx_package(tmp_path / "pkg")
    before = threading.active_count()
    r = soak(str(pkg), 0.1, size="640x360", warmup_s=1.0)
    for k in ("start", "end"):
        assert {"rss_mb", "open_files", "threads", "queues"} <= set(r[k])
        assert {"capture_slot", "worker_slot", "worker_results", "log_pending"} <= set(r[k]["queues"])
    assert r["end"]["frames_out"] > r["start"]["frames_out"] > 0 and r["log_bytes"] > 0
    assert r["run_report"]["stopped_by"] == "soak finished" and r["run_report"]["errors"] == 0
    assert threading.active_count() == before


def test_live_source_whose_read_raises_reconnects_and_is_counted(phantom_frames, capsys):
    class Flaky(FramesSource):
        live = True

        def read(self):
            if self.i in (5, 6):
                self.i += 1
                raise OSError("capture card unplugged")
            return super().read()

    r = run(RunConfig(source="flaky", pace=False, max_frames=20), runner=FakeRunner(),
            source=Flaky(list(phantom_frames[:20])))
    assert r["errors_by_stage"]["capture"] == 2 and r["reconnects"] == 2  # the feed went on after each
    assert r["frames_in"] >= 12 and capsys.readouterr().err.count("capture card unplugged") == 1
