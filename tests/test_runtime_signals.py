"""A stop by signal is a clean stop: `rating-edge run` in a subprocess gets a real SIGTERM / SIGINT / SIGHUP
mid-run and leaves a playable video, a report and a closed session log; the Docker image and the systemd
unit send the signal the code handles. A full disk (a file size limit) is counted and not a silent exit 0."""
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from test_runtime_fixtures import make_onnx_package

from rating_edge.runtime.app import STOP_SIGNALS

ROOT = Path(__file__).resolve().parents[1]
video = pytest.importorskip("rating_edge.phantom.video")


def _cli(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RATING_EDGE_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "rating_edge", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def _frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.mark.parametrize("sig", ["SIGTERM", pytest.param("SIGINT", marks=pytest.mark.slow),
                                 pytest.param("SIGHUP", marks=pytest.mark.slow)])
def test_signal_mid_run_leaves_video_report_and_log(tmp_path, sig):
    pkg = make_onnx_package(tmp_path / "pkg")
    out, rep, log = tmp_path / "o.mp4", tmp_path / "r.json", tmp_path / "s.db"
    proc = _cli(["run", "--package", str(pkg), "--source", "phantom://?seed=5&fps=15&size=640x360&layout=dual",
                 "--out", str(out), "--report", str(rep), "--log", str(log)])
    try:
        end = time.time() + 120
        while time.time() < end and proc.poll() is None:
            if out.exists() and out.stat().st_size > 0 and log.exists():
                con = sqlite3.connect(f"file:{log}?mode=ro", uri=True)
                try:
                    n = con.execute("SELECT COUNT(*) FROM pairs").fetchone()[0]
                except sqlite3.Error:
                    n = 0
                con.close()
                if n >= 2:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(getattr(signal, sig))
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert f"stopped by {sig}" in stdout
    r = json.loads(rep.read_text())
    assert r["stopped_by"] == sig and r["frames_out"] > 0 and r["pairs_scored"] >= 2
    assert _frames(out) == r["frames_out"]  # finalised: every frame written plays back
    assert not Path(f"{log}-wal").exists() or Path(f"{log}-wal").stat().st_size == 0  # closed, checkpointed
    con = sqlite3.connect(log)
    assert con.execute("SELECT COUNT(*) FROM pairs").fetchone()[0] == r["pairs_scored"]
    con.close()


def test_docker_and_systemd_send_a_handled_signal():
    jet = ROOT / "jetson"
    stop = re.search(r"^STOPSIGNAL (\w+)", (jet / "Dockerfile").read_text(), re.M)
    kill = re.search(r"^KillSignal=(\w+)", (jet / "rating-edge.service").read_text(), re.M)
    handled = {s.name for s in STOP_SIGNALS}
    assert stop and stop.group(1) in handled
    assert kill and kill.group(1) in handled


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_full_disk_is_counted_the_feed_goes_on_and_the_exit_is_not_0(tmp_path):
    """RLIMIT_FSIZE makes every write past 48 KB fail with EFBIG, as a full disk fails with ENOSPC."""
    import resource

    mp4, _ = video.write_video(tmp_path / "s.mp4", 6, fps=10, size=(640, 360), layout="single", seed=11)
    pkg = make_onnx_package(tmp_path / "pkg")
    out, rep, log = tmp_path / "o.mp4", tmp_path / "r.json", tmp_path / "s.db"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (48_000, 48_000))

    proc = _cli(["run", "--package", str(pkg), "--source", str(mp4), "--every-pair", "--out", str(out),
                 "--report", str(rep), "--log", str(log)], preexec_fn=limit)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1, stderr
    assert "Traceback" not in stderr and "output incomplete" in stderr
    r = json.loads(rep.read_text())
    assert r["frames_out"] == r["frames_in"] == 60  # the feed went on
    assert r["errors_by_stage"]["sinks"] >= 1 and r["errors_by_stage"]["log"] >= 1
    assert stderr.count("cannot write the session log") <= 1 and stderr.count("is incomplete") == 1
