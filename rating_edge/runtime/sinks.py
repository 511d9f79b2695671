"""Where overlaid frames go: a window, a video file, an FFmpeg/GStreamer pipe, PNG snapshots.

Every sink has `write(frame)` and `close()`; the window sink also returns key presses. A sink that
fails mid-session (pipe closed, disk full) is reported once and then skipped, so it cannot stop the
others or the display.
"""
from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np

from rating_edge.errors import RatingEdgeError

MIN_VIDEO_SIDE = 16


def gui_available() -> bool:
    info = cv2.getBuildInformation()
    for line in info.splitlines():
        if line.strip().startswith("GUI:"):
            return "NONE" not in line
    return True


class Sink:
    name = "sink"

    def write(self, frame: np.ndarray):
        raise NotImplementedError  # pragma: no cover

    def close(self):
        pass


class VideoFileSink(Sink):
    """mp4 (mp4v), avi (MJPG) or mkv; opened on the first frame so a resolution is known."""

    def __init__(self, path, fps: float = 30.0):
        self.path = Path(path)
        self.fps = fps
        self.name = f"video {self.path}"
        self.writer = None
        self.size = None
        self.frames = 0
        self.skipped = 0  # tiny frames before the first usable one (not in the file)

    def _open(self, w, h):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ext = self.path.suffix.lower()
        fourcc = {".avi": "MJPG", ".mkv": "MJPG"}.get(ext, "mp4v")
        wr = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*fourcc), float(self.fps), (w, h))
        if not wr.isOpened():
            raise RatingEdgeError(f"cannot write video {self.path} (codec {fourcc})")
        self.writer, self.size = wr, (w, h)

    def write(self, frame):
        h, w = frame.shape[:2]
        if self.writer is None:
            if min(w, h) < MIN_VIDEO_SIDE:
                # the file's size is set by its first frame; FFmpeg's encoders abort the whole process
                # on a 1x1 picture, and a thumbnail-sized video would shrink every later frame to it
                self.skipped += 1
                return
            self._open(w, h)
        if (w, h) != self.size:  # resolution change mid-stream: keep the file's size
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(frame)
        self.frames += 1

    def close(self):
        """Finalise the file and check it plays back: OpenCV's writer reports no write error, so a full
        disk would otherwise leave an unplayable file behind a clean exit."""
        if self.writer is None:
            return
        self.writer.release()
        self.writer = None
        self.verify()

    def verify(self) -> None:
        cap = cv2.VideoCapture(str(self.path))
        try:
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
            ok = cap.isOpened() and cap.read()[0]
        finally:
            cap.release()
        if not ok or n < self.frames:
            raise RatingEdgeError(f"video {self.path} is incomplete: {n if ok else 0} of {self.frames} frames "
                                  "can be played back (disk full or not writable?)")


class PipeSink(Sink):
    """Raw BGR frames into a command's stdin, e.g.
    `ffmpeg -f rawvideo -pix_fmt bgr24 -s {w}x{h} -r {fps} -i - -f mpegts udp://host:port`
    or a `gst-launch-1.0 fdsrc ! ...` pipeline. {w}, {h}, {fps} are filled in on the first frame."""

    def __init__(self, command: str, fps: float = 30.0):
        self.command = command
        self.fps = fps
        self.name = f"pipe {command.split()[0] if command.split() else command}"
        self.proc = None
        self.size = None

    def write(self, frame):
        h, w = frame.shape[:2]
        if self.proc is None:
            cmd = self.command.format(w=w, h=h, fps=f"{self.fps:g}")
            try:
                self.proc = subprocess.Popen(shlex.split(cmd), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL)
            except OSError as e:
                raise RatingEdgeError(f"cannot start output pipe {cmd!r}: {e}") from None
            self.size = (w, h)
        if (w, h) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self.proc.stdin.write(np.ascontiguousarray(frame).tobytes())

    def close(self):
        if self.proc is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None


class SnapshotSink(Sink):
    """PNG snapshots on demand (key `s`, or every N-th frame with `every`); `on_save(path)`, when set, hears
    of each file written (the session log records it)."""

    def __init__(self, folder, every: int = 0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.every = every
        self.name = f"snapshots {self.folder}"
        self.count = 0
        self.n = 0
        self.pending = False
        self.on_save = None

    def request(self):
        self.pending = True

    def write(self, frame):
        self.n += 1
        if self.pending or (self.every and self.n % self.every == 0):
            self.pending = False
            self.count += 1
            path = self.folder / f"snapshot_{self.count:04d}_{int(time.time())}.png"
            if cv2.imwrite(str(path), frame) and self.on_save is not None:
                self.on_save(path)


class WindowControls:
    """The mouse side of the window, without a GUI: a left-button drag of more than 8 px each way
    becomes the user's ROI (frame pixels); `drag` is the rectangle being drawn."""

    def __init__(self):
        self.drag = None
        self.roi = None  # (x, y, w, h) once a drag ends

    def mouse(self, event, x, y, flags=0, param=None):
        if event == cv2.EVENT_LBUTTONDOWN:
            self.drag = (x, y, x, y)
        elif event == cv2.EVENT_MOUSEMOVE and self.drag is not None:
            self.drag = (self.drag[0], self.drag[1], x, y)
        elif event == cv2.EVENT_LBUTTONUP and self.drag is not None:
            x0, y0, x1, y1 = self.drag[0], self.drag[1], x, y
            self.drag = None
            if abs(x1 - x0) > 8 and abs(y1 - y0) > 8:
                self.roi = (min(x0, x1), min(y0, y1), abs(x1 - x0), abs(y1 - y0))

    def with_drag(self, frame: np.ndarray) -> np.ndarray:
        """The frame to show: a copy with the rectangle being dragged, or the frame itself."""
        if self.drag is None:
            return frame
        frame = frame.copy()
        x0, y0, x1, y1 = self.drag
        cv2.rectangle(frame, (x0, y0), (x1, y1), (255, 255, 255), 1)
        return frame


class WindowSink(Sink, WindowControls):
    """cv2.imshow window with keys and mouse ROI drawing; needs an OpenCV with a GUI backend."""

    def __init__(self, title: str = "rating-edge", fullscreen: bool = False):
        if not gui_available():
            raise RatingEdgeError("this OpenCV build has no GUI (opencv-python-headless), so --display cannot open "
                                  "a window; install opencv-python (not -headless) or use --out / --pipe")
        WindowControls.__init__(self)
        self.title = title
        self.name = "window"
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        if fullscreen:
            cv2.setWindowProperty(title, cv2.WND_PROP_FULLSCREEN, cv2.WINDOW_FULLSCREEN)
        cv2.setMouseCallback(title, self.mouse)

    def write(self, frame):
        cv2.imshow(self.title, self.with_drag(frame))

    def key(self) -> int:
        return cv2.waitKey(1) & 0xFF

    def close(self):
        try:
            cv2.destroyWindow(self.title)
        except cv2.error:
            pass
