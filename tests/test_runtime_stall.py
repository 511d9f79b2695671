"""A live stream that stays connected but sends nothing shows NO SIGNAL after --stall-timeout and is
reopened (a local MJPEG-over-HTTP server on 127.0.0.1 that stops sending mid-connection)."""
import http.server
import socketserver
import threading
import time

import cv2
import numpy as np
import pytest

from rating_edge.runtime.app import RunConfig, run

FRAMES_PER_CONNECTION = 15


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


@pytest.fixture
def stalling_stream():
    conns = []
    stop = threading.Event()
    rng = np.random.default_rng(0)
    jpg = cv2.imencode(".jpg", rng.integers(0, 255, (180, 320, 3), np.uint8))[1].tobytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            conns.append(time.perf_counter())
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
            self.end_headers()
            try:
                for _ in range(FRAMES_PER_CONNECTION):
                    self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpg)
                                     + jpg + b"\r\n")
                    self.wfile.flush()
                    time.sleep(0.04)
            except OSError:
                return
            stop.wait(60)  # connected, silent

    try:
        srv = _Server(("127.0.0.1", 0), Handler)
    except OSError as e:
        pytest.skip(f"cannot start a local HTTP server: {e}")
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/feed.mjpg", conns
    stop.set()
    srv.shutdown()
    srv.server_close()


def test_stalled_stream_shows_no_signal_and_reconnects(stalling_stream):
    url, conns = stalling_stream
    seen = []  # (perf_counter, signal)
    r = run(RunConfig(source=url, stall_timeout_s=1.0, max_frames=FRAMES_PER_CONNECTION + 5),
            on_frame=lambda fr, lo, st, img: seen.append((time.perf_counter(), lo.signal, st.status)))
    assert len(conns) >= 2 and r["reconnects"] >= 1 and r["stalls"] >= 1
    assert r["modes"]["no_signal"] >= 1 and r["frames_in"] > FRAMES_PER_CONNECTION  # frames of the new connection
    last_live = max(t for t, sig, _ in seen[:next(i for i, s in enumerate(seen) if not s[1])])
    first_dark = next(t for t, sig, _ in seen if not sig)
    assert 0.8 <= first_dark - last_live <= 2.5  # NO SIGNAL within the stall timeout, not OpenCV's ~30 s
    assert any(status == "NO SIGNAL" for _, sig, status in seen if not sig)
