"""Frame sources and the capture thread.

A scanner feed must never be held back by the scorer, so capture runs in its own thread and hands
frames over through a one-slot buffer: a live source overwrites the slot (the older frame is dropped
and counted), an offline source (file, folder, DICOM) waits for the slot to empty, so every frame of a
recording is processed unless the user asks for real-time pacing. Live sources that lose their signal
report NO SIGNAL and reconnect with back-off instead of ending the session.
"""
from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from rating_edge.errors import RatingEdgeError

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
STREAM_SCHEMES = ("udp://", "rtsp://", "rtp://", "http://", "https://", "tcp://", "rtmp://", "srt://")


@dataclass
class Frame:
    """One captured frame. `bgr` is None for a NO SIGNAL tick of a live source."""

    index: int
    t: float  # seconds on the source's clock (frame index / fps for recordings)
    bgr: np.ndarray | None
    t_capture: float = field(default_factory=time.perf_counter)  # perf_counter when the frame was read
    capture_ms: float = 0.0
    source_meta: dict | None = None  # e.g. phantom truth

    @property
    def signal(self) -> bool:
        return self.bgr is not None


class Source:
    """A frame source: `open()`, `read() -> (bgr or None, meta)`, `close()`; None means end/lost."""

    live = False  # live sources drop frames and reconnect; recordings end
    can_stall = False  # a signal that can stop arriving (devices, streams): watched by --stall-timeout
    name = "source"

    def __init__(self):
        self.fps = 30.0

    def open(self) -> "Source":
        return self

    def read(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return self.name


class OpenCVSource(Source):
    """Video files, capture devices and FFmpeg network streams through cv2.VideoCapture."""

    def __init__(self, target, live: bool, api: int = cv2.CAP_ANY, name: str | None = None):
        super().__init__()
        self.target = target
        self.live = self.can_stall = live
        self.api = api
        self.name = name or str(target)
        self.cap = None
        self.stall_timeout_s: float | None = None  # set by the capture thread for network streams

    def open(self):
        if self.stall_timeout_s and self.api == cv2.CAP_FFMPEG:
            # FFmpeg otherwise waits ~30 s on a stream that stays connected but sends nothing; with a
            # read timeout the read fails and the capture thread shows NO SIGNAL and reconnects
            ms = int(max(self.stall_timeout_s, 0.1) * 1000)
            cap = cv2.VideoCapture(self.target, self.api, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, max(ms, 2000),
                                                           cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        else:
            cap = cv2.VideoCapture(self.target, self.api)
        if not cap.isOpened():
            cap.release()
            raise RatingEdgeError(f"cannot open video source {self.name!r} (OpenCV could not open it: check the path, "
                                  "device or URL)")
        self.cap = cap
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 1 <= fps <= 1000 else 30.0
        return self

    def read(self):
        if self.cap is None:
            return None, None
        ok, img = self.cap.read()
        if not ok or img is None:
            return None, None
        if img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        elif img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
        return img, None

    def close(self):
        if self.cap is not None:
            self.cap.release()
            self.cap = None


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


class ImageFolderSource(Source):
    """A folder of still images in natural order (img2 before img10), played at `fps`."""

    def __init__(self, folder, fps: float = 30.0):
        super().__init__()
        self.folder = Path(folder)
        self.fps = fps
        self.name = str(folder)
        self.files = sorted((p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_EXT), key=_natural_key)
        if not self.files:
            raise RatingEdgeError(f"{folder}: no images ({', '.join(sorted(IMAGE_EXT))}) in this folder")
        self.i = 0
        self.unreadable: list[str] = []  # reported and counted by the run loop, never skipped silently

    def read(self):
        while self.i < len(self.files):
            p = self.files[self.i]
            self.i += 1
            try:
                img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            except cv2.error:
                img = None
            if img is not None:
                return img, {"file": p.name}
            self.unreadable.append(p.name)
        return None, None


def is_dicom(path) -> bool:
    p = Path(path)
    if p.suffix.lower() in (".dcm", ".dicom"):
        return True
    try:
        with open(p, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def dicom_frames(path) -> tuple[np.ndarray, float]:
    """All frames of a DICOM file as BGR uint8 (N, H, W, 3) and its frame rate (see `dataset_frames`)."""
    try:
        import pydicom
    except ImportError as e:  # pragma: no cover - install issue
        raise RatingEdgeError("reading DICOM needs pydicom: pip install 'rating-edge[runtime]'") from e
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as e:  # noqa: BLE001 - pydicom raises several types
        raise RatingEdgeError(f"{path}: not a readable DICOM file ({e})") from None
    return dataset_frames(ds, path)


def dataset_frames(ds, name="DICOM dataset") -> tuple[np.ndarray, float]:
    """All frames of a pydicom dataset (read from a file or received over DICOMweb) as BGR uint8
    (N, H, W, 3) and its frame rate.

    pydicom decodes the pixel data (uncompressed, RLE natively; JPEG and JPEG 2000 through the
    pylibjpeg plugins when installed); YBR is converted to RGB, palette colour through its LUT, and
    monochrome (with MONOCHROME1 inverted) expanded to three equal channels.
    """
    from pydicom.pixels import apply_color_lut

    path = name
    if "PixelData" not in ds:
        raise RatingEdgeError(f"{path}: this DICOM file holds no image (no PixelData)")
    try:
        arr = ds.pixel_array  # pydicom 3 converts YBR_* to RGB by default
    except Exception as e:  # noqa: BLE001
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "?")
        raise RatingEdgeError(f"{path}: cannot decode pixel data with transfer syntax {ts} ({str(e).splitlines()[0]}); "
                              "install the decoders: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg "
                              "pylibjpeg-rle") from None
    photometric = str(ds.get("PhotometricInterpretation", "RGB"))
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    spp = int(ds.get("SamplesPerPixel", 1))
    if photometric == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
        spp = 3
    if nframes == 1:
        arr = arr[None]
    if spp == 1:
        if arr.dtype != np.uint8:
            a = arr.astype(np.float32)
            lo, hi = float(a.min()), float(a.max())
            arr = ((a - lo) * (255.0 / max(hi - lo, 1e-6))).astype(np.uint8)
        if photometric == "MONOCHROME1":
            arr = 255 - arr
        arr = np.repeat(arr[..., None], 3, axis=-1)
    elif arr.dtype != np.uint8:
        arr = (arr.astype(np.float32) * (255.0 / float(max(arr.max(), 1)))).astype(np.uint8) \
            if arr.max() > 255 else arr.astype(np.uint8)
    bgr = np.ascontiguousarray(arr[..., ::-1])
    fps = 30.0
    ft = ds.get("FrameTime")  # milliseconds per frame
    if ft not in (None, "") and float(ft) > 0:
        fps = 1000.0 / float(ft)
    elif ds.get("CineRate") not in (None, ""):
        fps = float(ds.CineRate)
    elif ds.get("RecommendedDisplayFrameRate") not in (None, ""):
        fps = float(ds.RecommendedDisplayFrameRate)
    return bgr, fps


class DicomSource(Source):
    """A single-frame or multi-frame (cine) DICOM file, played at the rate from its FrameTime."""

    def __init__(self, path):
        super().__init__()
        self.name = str(path)
        self.frames, self.fps = dicom_frames(path)
        self.i = 0

    def read(self):
        if self.i >= len(self.frames):
            return None, None
        img = self.frames[self.i]
        self.i += 1
        return img, None


class PhantomLiveSource(Source):
    """phantom:// URL: the synthetic scanner, rendered frame by frame (paced by the capture thread)."""

    live = True

    def __init__(self, url: str):
        super().__init__()
        from rating_edge.phantom.video import PhantomScanner, parse_phantom_url

        self.name = url
        opts = dict(parse_phantom_url(url))
        self.seconds = opts.pop("seconds", None)
        self.fps = float(opts.get("fps", 30))
        known = {"seed", "size", "fps", "layout", "theme", "dropouts"}
        self.scanner = PhantomScanner(**{k: v for k, v in opts.items() if k in known})
        self.i = 0
        self.n = int(round(self.seconds * self.fps)) if self.seconds else None

    def read(self):
        if self.n is not None and self.i >= self.n:
            return None, {"end": True}
        img, truth = self.scanner.frame(self.i)
        self.i += 1
        return img, {"truth": truth}


def gstreamer_available() -> bool:
    info = cv2.getBuildInformation()
    for line in info.splitlines():
        if "GStreamer" in line:
            return "YES" in line
    return False


def open_source(spec, fps: float | None = None) -> Source:
    """Turn a --source string into a Source (not yet opened).

    Recognised: phantom://..., a capture device index or /dev/videoN, udp/rtsp/http(s)/tcp/rtmp URLs,
    GStreamer pipelines (contain '!' and end in appsink), a folder of images, a DICOM file, a video file.
    """
    s = str(spec)
    if s.startswith("phantom://"):
        return PhantomLiveSource(s)
    if s.isdigit():
        return OpenCVSource(int(s), live=True, name=f"capture device {s}")
    if s.startswith("/dev/video"):
        return OpenCVSource(s, live=True, api=cv2.CAP_V4L2, name=s)
    if s.startswith(STREAM_SCHEMES):
        return OpenCVSource(s, live=True, api=cv2.CAP_FFMPEG, name=s)
    if "!" in s and not os.path.exists(s):
        if not gstreamer_available():
            raise RatingEdgeError("this OpenCV build has no GStreamer support, so GStreamer pipeline sources cannot "
                                  "be opened; install an OpenCV built with GStreamer (e.g. the system python3-opencv "
                                  "on Jetson) or use a file/URL/device source")
        return OpenCVSource(s, live=True, api=cv2.CAP_GSTREAMER, name="gstreamer pipeline")
    p = Path(s)
    if not p.exists():
        raise RatingEdgeError(f"source {s!r} does not exist (expected a video file, image folder, DICOM file, "
                              "device, stream URL or phantom:// URL)")
    if p.is_dir():
        return ImageFolderSource(p, fps or 30.0)
    if is_dicom(p):
        return DicomSource(p)
    if p.suffix.lower() in IMAGE_EXT:
        src = ImageFolderSource.__new__(ImageFolderSource)
        Source.__init__(src)
        src.folder, src.fps, src.name, src.files, src.i, src.unreadable = p.parent, fps or 30.0, str(p), [p], 0, []
        return src
    return OpenCVSource(str(p), live=False, name=str(p))


def read_frames(src: Source, limit: int) -> list[np.ndarray]:
    """Up to `limit` frames from the start of a source, closed afterwards (profile detection, tests)."""
    src.open()
    out = []
    try:
        while len(out) < limit:
            img, _ = src.read()
            if img is None:
                break
            out.append(img)
    finally:
        src.close()
    return out


def read_one_frame(spec, k: int = 0) -> np.ndarray:
    """Frame `k` of an image, video, DICOM, folder or phantom source (for `inspect`)."""
    src = open_source(spec).open()
    try:
        if isinstance(src, DicomSource):
            if not 0 <= k < len(src.frames):
                raise RatingEdgeError(f"{spec}: frame {k} out of range (the file has {len(src.frames)} frames)")
            return src.frames[k]
        if isinstance(src, PhantomLiveSource):
            return src.scanner.frame(k)[0]
        if isinstance(src, OpenCVSource) and not src.live and k > 0:
            src.cap.set(cv2.CAP_PROP_POS_FRAMES, k)
            img, _ = src.read()
        else:
            for _ in range(k):
                if src.read()[0] is None:
                    break
            img, _ = src.read()
        if img is None:
            raise RatingEdgeError(f"{spec}: no frame {k}")
        return img
    finally:
        src.close()


class FramesSource(Source):
    """Frames already in memory, handed out as copies (what a frame grabber does): `bench --runtime`
    runs the real pipeline on them so the renderer of a synthetic feed is not timed as capture."""

    def __init__(self, frames: list, fps: float = 30.0, name: str = "frames"):
        super().__init__()
        self.frames, self.fps, self.name, self.i = frames, fps, name, 0

    def read(self):
        if self.i >= len(self.frames):
            return None, None
        self.i += 1
        return self.frames[self.i - 1].copy(), None


def as_bgr8(img) -> np.ndarray:
    """Any decoded frame as the HxWx3 uint8 BGR the pipeline works on: gray and BGRA are converted,
    16-bit (and float 0..1) scaled to 8 bits. Raises ValueError for what is not an image."""
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)) or a.size == 0:
        raise ValueError(f"not an image: array of shape {a.shape}")
    if a.dtype == np.uint16:
        a = (a >> 8).astype(np.uint8)
    elif a.dtype.kind == "f":
        a = (np.clip(np.nan_to_num(a), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    elif a.dtype != np.uint8:
        raise ValueError(f"not an image: dtype {a.dtype}")
    if a.ndim == 2:
        return cv2.cvtColor(a, cv2.COLOR_GRAY2BGR)
    if a.shape[2] == 4:
        return cv2.cvtColor(a, cv2.COLOR_BGRA2BGR)
    return a


class LatestSlot:
    """One-slot hand-over: `put` replaces (live) or waits (offline); `get` takes the newest item."""

    def __init__(self):
        self._item = None
        self._has = False
        self._closed = False
        self._cv = threading.Condition()
        self.dropped = 0

    def put(self, item, block: bool, stop: threading.Event | None = None) -> None:
        with self._cv:
            if block:
                while self._has and not self._closed and not (stop and stop.is_set()):
                    self._cv.wait(0.05)
            elif self._has:
                self.dropped += 1
            self._item, self._has = item, True
            self._cv.notify_all()

    def get(self, timeout: float | None = None):
        """The newest item, or None on timeout; raises EOFError once closed and drained."""
        with self._cv:
            end = None if timeout is None else time.monotonic() + timeout
            while not self._has:
                if self._closed:
                    raise EOFError
                rem = None if end is None else end - time.monotonic()
                if rem is not None and rem <= 0:
                    return None
                self._cv.wait(rem if rem is not None else 0.1)
            item, self._item, self._has = self._item, None, False
            self._cv.notify_all()
            return item

    def close(self):
        with self._cv:
            self._closed = True
            self._cv.notify_all()


class CaptureThread(threading.Thread):
    """Reads the source as fast as it delivers (or paced at its fps) into a LatestSlot.

    Live sources: a failed read emits a NO SIGNAL frame (bgr None) and reopens with exponential
    back-off (0.25 s doubling to `max_backoff`). `pace` plays recordings at their frame rate and
    then drops like a live source, for real-time rehearsal on a file.
    """

    def __init__(self, source: Source, pace: bool | None = None, max_frames: int | None = None,
                 max_backoff: float = 4.0, max_reconnects: int | None = None):
        super().__init__(name="capture", daemon=True)
        self.source = source
        self.slot = LatestSlot()
        self.pace = source.live if pace is None else pace
        self.max_frames = max_frames
        self.max_backoff = max_backoff
        self.max_reconnects = max_reconnects
        self.stop_event = threading.Event()
        self.frames_in = 0
        self.reconnects = 0
        self.read_errors: list = []  # live sources: reads that raised (reported and counted by the run loop)
        self.error: Exception | None = None

    @property
    def dropped(self) -> int:
        return self.slot.dropped

    def stop(self):
        self.stop_event.set()

    def _emit(self, frame: Frame):
        self.slot.put(frame, block=not (self.source.live or self.pace), stop=self.stop_event)

    def run(self):
        src = self.source
        idx = 0
        t0 = time.perf_counter()
        backoff = 0.25
        try:
            while not self.stop_event.is_set():
                if self.max_frames is not None and idx >= self.max_frames:
                    break
                if self.pace and not (isinstance(src, OpenCVSource) and src.live):
                    # recordings and the phantom carry no wall clock: pace them at their fps (devices pace themselves)
                    due = t0 + idx / max(src.fps, 1e-3)
                    wait = due - time.perf_counter()
                    if wait > 0:
                        self.stop_event.wait(wait)
                a = time.perf_counter()
                try:
                    img, meta = src.read()
                except Exception as e:  # noqa: BLE001 - a live feed treats a failed read as lost signal
                    if not src.live:
                        raise
                    self.read_errors.append(e)
                    img, meta = None, None
                b = time.perf_counter()
                if img is None:
                    if not src.live or (meta or {}).get("end"):
                        break
                    # lost signal: tell the renderer, then reconnect with back-off
                    self._emit(Frame(idx, idx / src.fps, None, b, (b - a) * 1e3, {"no_signal": True}))
                    idx += 1
                    if self.max_reconnects is not None and self.reconnects >= self.max_reconnects:
                        break
                    self.stop_event.wait(backoff)
                    backoff = min(backoff * 2, self.max_backoff)
                    self.reconnects += 1
                    try:
                        src.close()
                        src.open()
                    except Exception:  # noqa: BLE001 - not back yet (cv2.error, OSError too): try again later
                        pass
                    continue
                backoff = 0.25
                self.frames_in += 1
                self._emit(Frame(idx, idx / src.fps, img, b, (b - a) * 1e3, meta))
                idx += 1
        except Exception as e:  # noqa: BLE001 - surfaced by the app, never kills the process silently
            self.error = e
        finally:
            self.slot.close()
