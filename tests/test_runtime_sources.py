"""Every source kind that can exist here: video file, image folder, DICOM (uncompressed, RLE, JPEG
baseline, JPEG 2000; RGB, YBR, palette), phantom, an HTTP stream served by ffmpeg; plus the capture
thread's drop counting and NO SIGNAL reconnect, and the no-torch rule."""
import shutil
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from rating_edge.errors import RatingEdgeError
from rating_edge.runtime.capture import (
    CaptureThread,
    LatestSlot,
    Source,
    dicom_frames,
    open_source,
    read_frames,
    read_one_frame,
)

video = pytest.importorskip("rating_edge.phantom.video")


def frames_of(src, limit=1000):
    return read_frames(src, limit)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip")
    sc = video.PhantomScanner(seed=9, size=(320, 240), fps=10, layout="single", theme="tundra")
    return d, [sc.frame(i)[0] for i in range(6)]


def test_video_file_and_image_folder(tmp_path, clip):
    d, frames = clip
    mp4 = tmp_path / "c.mp4"
    w = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for f in frames:
        w.write(f)
    w.release()
    src = open_source(str(mp4))
    got = frames_of(src)
    assert len(got) == 6 and got[0].shape == (240, 320, 3) and abs(src.fps - 10) < 1e-6
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, f in enumerate(frames):  # natural order: img2 before img10
        cv2.imwrite(str(folder / f"img{i * 5}.png"), f)
    got = frames_of(open_source(str(folder)))
    assert len(got) == 6 and all(np.array_equal(a, b) for a, b in zip(got, frames))
    assert np.array_equal(read_one_frame(str(folder), 3), frames[3])
    assert read_one_frame(str(mp4), 2).shape == (240, 320, 3)


US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"


def _us_dataset(syntax=None, sop_class=US_MULTIFRAME):
    """An empty ultrasound DICOM dataset with its file meta (transfer syntax, SOP class and instance)."""
    pytest.importorskip("pydicom")
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax or ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "US"
    return ds


def _dicom(path, frames_rgb, photometric="RGB", frame_time=50.0, syntax=None):
    ds = _us_dataset()
    arr = np.stack(frames_rgb) if len(frames_rgb) > 1 else frames_rgb[0]
    ds.set_pixel_data(arr, photometric_interpretation=photometric, bits_stored=8)
    if len(frames_rgb) > 1:
        ds.FrameTime = frame_time
    if syntax is not None:
        ds.compress(syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("kind", ["uncompressed", "rle", "jpeg2000"])
def test_dicom_multiframe_cine(tmp_path, clip, kind):
    pytest.importorskip("pydicom")
    from pydicom.uid import JPEG2000Lossless, RLELossless

    _, frames = clip
    rgb = [f[:, :, ::-1].copy() for f in frames[:4]]
    syntax = {"uncompressed": None, "rle": RLELossless, "jpeg2000": JPEG2000Lossless}[kind]
    if kind == "jpeg2000":
        pytest.importorskip("openjpeg")
    p = _dicom(tmp_path / "cine.dcm", rgb, syntax=syntax)
    bgr, fps = dicom_frames(p)
    assert bgr.shape == (4, 240, 320, 3) and fps == pytest.approx(20.0)
    assert np.array_equal(bgr[2], frames[2])  # lossless: exact, and BGR order restored
    src = open_source(str(p))
    assert len(frames_of(src)) == 4 and src.fps == pytest.approx(20.0)
    assert read_one_frame(str(p), 3).shape == (240, 320, 3)
    with pytest.raises(RatingEdgeError, match="out of range"):
        read_one_frame(str(p), 9)


def test_dicom_jpeg_baseline_ybr(tmp_path, clip):
    pytest.importorskip("pydicom")
    pytest.importorskip("libjpeg")
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    _, frames = clip
    ds = _us_dataset(JPEGBaseline8Bit)
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 240, 320, 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.NumberOfFrames = 3
    ds.FrameTime = 40
    ds.PixelData = encapsulate([cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for f in frames[:3]])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "j.dcm", enforce_file_format=True)
    bgr, fps = dicom_frames(tmp_path / "j.dcm")
    assert bgr.shape == (3, 240, 320, 3) and fps == pytest.approx(25.0)
    err = np.abs(bgr[1].astype(int) - frames[1].astype(int)).mean()
    assert err < 6, err  # YBR converted to RGB and then BGR (a channel swap would be far off)


def test_dicom_single_frame_palette_and_monochrome(tmp_path):
    pytest.importorskip("pydicom")

    idx = np.tile(np.arange(256, dtype=np.uint8), (64, 1))
    ds = _us_dataset(sop_class="1.2.840.10008.5.1.4.1.1.6.1")  # US image (single frame)
    ds.set_pixel_data(idx, photometric_interpretation="PALETTE COLOR", bits_stored=8)
    lut = (np.arange(256, dtype=np.uint16) * 257)
    for c, data in (("Red", lut), ("Green", np.zeros(256, np.uint16)), ("Blue", lut[::-1].copy())):
        setattr(ds, f"{c}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{c}PaletteColorLookupTableData", data.tobytes())
    ds.save_as(tmp_path / "pal.dcm", enforce_file_format=True)
    bgr, fps = dicom_frames(tmp_path / "pal.dcm")
    assert bgr.shape == (1, 64, 256, 3) and bgr.dtype == np.uint8
    assert bgr[0, 0, 255, 2] == 255 and bgr[0, 0, 255, 0] == 0 and bgr[0, 0, 0, 0] == 255  # R high right, B left
    mono = _dicom(tmp_path / "m.dcm", [idx], photometric="MONOCHROME2")
    b2, _ = dicom_frames(mono)
    assert b2.shape == (1, 64, 256, 3) and np.array_equal(b2[0, :, :, 0], b2[0, :, :, 2])


def test_phantom_source_paced():
    src = open_source("phantom://?seed=1&fps=20&size=320x240&seconds=1")
    cap = CaptureThread(src.open())
    t0 = time.perf_counter()
    cap.start()
    n = 0
    while True:
        try:
            fr = cap.slot.get(timeout=2)
        except EOFError:
            break
        if fr is not None:
            n += 1
            assert fr.source_meta["truth"]["frame"] == fr.index
    dt = time.perf_counter() - t0
    assert cap.frames_in == 20 and n >= 1 and dt >= 0.9  # paced at 20 fps, not as fast as possible


def test_gstreamer_pipeline_without_gstreamer_is_a_clear_error():
    from rating_edge.runtime.capture import gstreamer_available

    if gstreamer_available():
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(RatingEdgeError, match="GStreamer"):
        open_source("videotestsrc ! videoconvert ! appsink")


def test_latest_slot_drops_and_counts():
    s = LatestSlot()
    for i in range(5):
        s.put(i, block=False)
    assert s.get(timeout=0.1) == 4 and s.dropped == 4
    assert s.get(timeout=0.05) is None
    s.close()
    with pytest.raises(EOFError):
        s.get(timeout=0.05)


class FlakySource(Source):
    """A live feed that loses its signal after 3 frames and comes back on reopen."""

    live = True

    def __init__(self):
        super().__init__()
        self.fps = 100.0
        self.opens = 0
        self.n = 0

    def open(self):
        self.opens += 1
        self.n = 0
        return self

    def read(self):
        self.n += 1
        if self.opens == 1 and self.n > 3:
            return None, None
        if self.opens >= 2 and self.n > 3:
            return None, {"end": True}
        return np.full((120, 160, 3), 50 * self.opens, np.uint8), None


def test_no_signal_then_reconnect_with_backoff():
    src = FlakySource().open()
    cap = CaptureThread(src, pace=False, max_backoff=0.05)
    cap.slot.put = lambda item, block, stop=None, _orig=cap.slot.put: _orig(item, True, stop)  # keep every frame
    cap.start()
    seen = []
    while True:
        try:
            fr = cap.slot.get(timeout=2)
        except EOFError:
            break
        if fr is not None:
            seen.append(fr.bgr is None)
    assert seen.count(True) == 1 and seen.count(False) == 6  # 3 frames, NO SIGNAL, reconnect, 3 frames
    assert cap.reconnects == 1 and src.opens == 2


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (apt-get install ffmpeg)")
def test_http_stream_served_by_ffmpeg(tmp_path, clip):
    _, frames = clip
    mp4 = tmp_path / "c.mp4"
    w = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for _ in range(5):
        for f in frames:
            w.write(f)
    w.release()
    port = _free_port()
    url = f"http://127.0.0.1:{port}/live.ts"
    srv = subprocess.Popen(["ffmpeg", "-loglevel", "error", "-re", "-i", str(mp4), "-c:v", "mpeg2video", "-q:v", "3",
                            "-f", "mpegts", "-listen", "1", url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        src = None
        for _ in range(50):
            time.sleep(0.2)
            try:
                src = open_source(url).open()
                break
            except RatingEdgeError:
                continue
        assert src is not None, "could not connect to the ffmpeg HTTP server"
        assert src.live
        got = []
        for _ in range(10):
            img, _ = src.read()
            if img is None:
                break
            got.append(img)
        src.close()
        assert len(got) >= 5 and got[0].shape == (240, 320, 3)
    finally:
        srv.kill()
        srv.wait(5)


def test_runtime_never_imports_torch(tmp_path):
    """Every runtime module, the phantom, preprocessing, scoring, package, and the run/inspect command
    paths run without torch in sys.modules."""
    sc = video.PhantomScanner(seed=1, size=(320, 240), fps=10, layout="single")
    img = tmp_path / "f.png"
    cv2.imwrite(str(img), sc.frame(30)[0])
    code = f"""
import sys, importlib, pkgutil
import rating_edge.runtime as rt
for m in pkgutil.iter_modules(rt.__path__):
    if m.name in ("trt_runner", "cuda_buffers"):
        continue  # TensorRT/CUDA back ends: import only where installed (they never import torch either)
    importlib.import_module("rating_edge.runtime." + m.name)
import rating_edge.phantom.video, rating_edge.preprocess, rating_edge.scoring, rating_edge.package
from rating_edge.cli import main
assert main(["inspect", {str(img)!r}, "--json"]) == 0
assert main(["run", "--source", "phantom://?seed=1&fps=50&size=320x240&seconds=0.4", "--max-frames", "10"]) == 0
bad = [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
assert not bad, bad[:5]
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_pipe_and_snapshot_sinks(tmp_path):
    from rating_edge.runtime.sinks import PipeSink, SnapshotSink

    out = tmp_path / "raw.bgr"
    sink = PipeSink(f"sh -c 'cat > {out}'  # {{w}}x{{h}}@{{fps}}", fps=10)
    frames = [np.full((48, 64, 3), i, np.uint8) for i in range(3)]
    for f in frames:
        sink.write(f)
    sink.write(np.zeros((96, 128, 3), np.uint8))  # resolution change: scaled to the pipe's size
    sink.close()
    assert out.stat().st_size == 4 * 48 * 64 * 3
    snap = SnapshotSink(tmp_path / "snaps", every=2)
    for f in frames:
        snap.write(f)
    snap.request()
    snap.write(frames[0])
    assert len(list((tmp_path / "snaps").glob("*.png"))) == 2


def test_profile_detect_cli(tmp_path):
    r = subprocess.run([sys.executable, "-m", "rating_edge", "profile", "detect", "--source",
                        "phantom://?seed=3&size=640x360&layout=dual&theme=sierra", "--frames", "5", "--out",
                        str(tmp_path / "p.yaml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    from rating_edge.runtime.layout import load_profile

    p = load_profile(tmp_path / "p.yaml")
    assert p.layout == "dual" and len(p.areas) == 2 and p.frame_size == (640, 360)
