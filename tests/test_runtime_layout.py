"""Screen understanding against the phantom scanner's exact truth: modes, layout, frozen, no signal."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from rating_edge.runtime.layout import (
    LayoutDetector,
    Profile,
    detect_layout,
    load_profile,
    propose_profile,
)

video = pytest.importorskip("rating_edge.phantom.video")


def agreement(frames_truth):
    """Share of frames where signal, frozen, layout and every area's mode match the truth."""
    det = LayoutDetector()
    ok = 0
    bad = []
    for img, t in frames_truth:
        lo = det.detect(img)
        good = lo.signal == t["signal"]
        if good and t["signal"]:
            good = (lo.frozen == t["frozen"] and lo.layout == t["layout"] and len(lo.areas) == len(t["areas"])
                    and all(a.mode == ta["mode"] for a, ta in zip(lo.areas, t["areas"])))
        ok += good
        if not good:
            bad.append(t["frame"])
    return ok / len(frames_truth), bad


def iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0, min(ay + ah, by + bh) - max(ay, by))
    return ix * iy / (aw * ah + bw * bh - ix * iy)


@pytest.mark.parametrize("theme,layout,seed", [("aurora", "single", 1), ("meridian", "single", 2),
                                               ("sierra", "dual", 3), ("tundra", "dual", 4)])
def test_modes_agree_with_truth_on_rendered_frames(theme, layout, seed):
    sc = video.PhantomScanner(seed=seed, size=(640, 360), fps=10, layout=layout, theme=theme, dropouts=True)
    ft = [sc.frame(i) for i in range(100)]
    share, bad = agreement(ft)
    assert share >= 0.99, (share, bad)
    # image areas are the ultrasound pictures, not UI: boxes match the truth closely
    det = LayoutDetector()
    for img, t in ft[::10]:
        lo = det.detect(img)
        for a, ta in zip(lo.areas, t["areas"]):
            assert iou(a.box, ta["box"]) > 0.9


@pytest.mark.parametrize("layout,theme", [("single", "tundra"), ("dual", "aurora")])
def test_modes_agree_after_mp4_compression(tmp_path, layout, theme):
    mp4, side = video.write_video(tmp_path / "v.mp4", 8, fps=12, size=(640, 360), layout=layout, seed=7,
                                  theme=theme, dropouts=True)
    truth = [json.loads(x) for x in side.read_text().splitlines()]
    cap = cv2.VideoCapture(str(mp4))
    ft = []
    for t in truth:
        ok, img = cap.read()
        assert ok
        ft.append((img, t))
    share, bad = agreement(ft)
    assert share >= 0.99, (share, bad)
    assert any(t["frozen"] for t in truth) or layout == "dual"


def test_doppler_box_found_even_without_flow():
    """VS 0 in Doppler mode: no colour at all, only the box outline; still Doppler, box where drawn."""
    sc = video.PhantomScanner(seed=0, size=(800, 480), fps=10, layout="single", theme="halcyon")
    hits = 0
    for i in range(0, 400, 5):
        img, t = sc.frame(i)
        if not t["signal"] or t["frozen"] or t["areas"][0]["mode"] != "doppler":
            continue
        a = detect_layout(img).areas[0]
        assert a.mode == "doppler"
        tb = t["areas"][0]["doppler_box"]
        ax, ay, aw, ah = t["areas"][0]["box"]
        clipped = [max(tb[0], ax), max(tb[1], ay)]
        clipped += [min(tb[0] + tb[2], ax + aw) - clipped[0], min(tb[1] + tb[3], ay + ah) - clipped[1]]
        assert iou(a.doppler_box, clipped) > 0.8, (a.doppler_box, tb)
        hits += 1
    assert hits > 5


def test_coloured_ui_and_jpeg_fringes_are_not_doppler(tmp_path):
    """GS frames whose UI carries logos, colour bars and coloured text, saved as a lossy JPEG."""
    sc = video.PhantomScanner(seed=3, size=(960, 540), fps=10, layout="single", theme="sierra")
    n = 0
    for i in range(0, 60):
        img, t = sc.frame(i)
        if not t["signal"] or t["areas"][0]["mode"] != "gs":
            continue
        # coloured text and a marker drawn onto the picture itself (annotation), plus JPEG chroma damage
        x, y, w, h = t["areas"][0]["box"]
        cv2.putText(img, "R MCP2", (x + 20, y + 40), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 255, 255), 1)
        cv2.drawMarker(img, (x + w // 2, y + h // 2), (0, 255, 0), cv2.MARKER_CROSS, 20, 1)
        ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 60])
        dec = cv2.imdecode(enc, cv2.IMREAD_COLOR)
        lo = detect_layout(dec)
        assert lo.layout == "single" and len(lo.areas) == 1
        assert lo.areas[0].mode == "gs", lo.to_json()
        assert iou(lo.areas[0].box, t["areas"][0]["box"]) > 0.9  # colour bar and scale are outside the area
        n += 1
    assert n >= 5


def test_no_signal_and_resolution_change():
    det = LayoutDetector()
    black = np.zeros((360, 640, 3), np.uint8)
    cv2.putText(black, "NO SIGNAL", (250, 180), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
    lo = det.detect(black)
    assert not lo.signal and lo.areas == [] and lo.mode == "no_signal"
    blue = np.full((360, 640, 3), (255, 0, 0), np.uint8)
    assert not det.detect(blue).signal
    a = video.PhantomScanner(seed=1, size=(640, 360), layout="single").frame(5)[0]
    b = video.PhantomScanner(seed=1, size=(1280, 720), layout="single").frame(5)[0]
    la, lb = det.detect(a), det.detect(b)
    assert la.signal and lb.signal and not lb.frozen
    assert lb.areas[0].box[2] > 1.8 * la.areas[0].box[2]


def test_profile_roundtrip_and_fixed_areas(tmp_path):
    sc = video.PhantomScanner(seed=2, size=(640, 360), fps=10, layout="dual", theme="meridian")
    frames = [sc.frame(i)[0] for i in range(0, 40, 4)]
    prof = propose_profile(frames, name="meridian-dual")
    assert prof.layout == "dual" and len(prof.areas) == 2
    truth = sc.frame(0)[1]["areas"]
    for a, t in zip(prof.areas, truth):
        assert iou(a, t["box"]) > 0.9
    for ext in ("json", "yaml"):
        p = prof.save(tmp_path / f"p.{ext}")
        back = load_profile(p)
        assert back.areas == prof.areas and back.layout == "dual"
    # a fixed profile scales to another resolution
    big = video.PhantomScanner(seed=2, size=(1280, 720), fps=10, layout="dual", theme="meridian")
    img, t = big.frame(3)
    lo = LayoutDetector(prof).detect(img)
    assert lo.layout == "dual"
    for a, ta in zip(lo.areas, t["areas"]):
        assert iou(a.box, ta["box"]) > 0.9 and a.mode == ta["mode"]
    with pytest.raises(Exception, match="frame_size"):
        Profile.from_dict({"areas": [[0, 0, 10, 10]]})


def test_inspect_cli_json_shape(tmp_path):
    sc = video.PhantomScanner(seed=4, size=(640, 360), fps=10, layout="single", theme="aurora")
    img, t = next((f for f in (sc.frame(i) for i in range(200)) if f[1]["signal"] and f[1]["areas"][0]["mode"] == "doppler"))
    p = tmp_path / "f.png"
    cv2.imwrite(str(p), img)
    r = subprocess.run([sys.executable, "-m", "rating_edge", "inspect", str(p), "--json", "--png", str(tmp_path / "o.png")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert set(d) >= {"layout", "areas", "frozen", "signal"}
    assert d["layout"] == "single" and d["signal"] is True and d["frozen"] is False
    a = d["areas"][0]
    assert set(a) >= {"box", "mode", "doppler_box", "doppler_fraction"}
    assert a["mode"] == "doppler" and len(a["box"]) == 4 and isinstance(a["doppler_fraction"], float)
    assert (tmp_path / "o.png").is_file()
    bad = subprocess.run([sys.executable, "-m", "rating_edge", "inspect", str(tmp_path / "missing.png")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "does not exist" in bad.stderr + bad.stdout


def test_run_loop_detector_skips_only_the_fraction():
    """fractions=False (the run loop) gives the same modes, boxes and Doppler boxes; only an area whose
    box outline already says Doppler is left without its Doppler fraction."""
    from rating_edge.phantom.video import PhantomScanner
    from rating_edge.runtime.layout import LayoutDetector

    sc = PhantomScanner(seed=2, size=(960, 540), fps=10, layout="dual")
    full, lean = LayoutDetector(), LayoutDetector(fractions=False)
    skipped = 0
    for i in range(0, 200, 3):
        img, _ = sc.frame(i)
        a, b = full.detect(img), lean.detect(img)
        assert (a.layout, a.frozen, a.signal) == (b.layout, b.frozen, b.signal)
        for x, y in zip(a.areas, b.areas):
            assert (x.box, x.mode, x.doppler_box) == (y.box, y.mode, y.doppler_box)
            if y.doppler_fraction is None:
                skipped += 1
                assert x.mode == "doppler"
            else:
                assert y.doppler_fraction == x.doppler_fraction
    assert skipped > 0


def _doppler_and_gs_frames(n_doppler=3):
    """Single-layout phantom frames: Doppler frames whose box outline is found, from two sections when
    the box moved between them, and GS frames."""
    sc = video.PhantomScanner(seed=0, size=(800, 480), fps=10, layout="single", theme="halcyon")
    dop, gs = [], []
    for i in range(0, 600, 3):
        img, t = sc.frame(i)
        if not t["signal"] or t["frozen"]:
            continue
        (gs if t["areas"][0]["mode"] == "gs" else dop).append((img, t))
    dop = [(img, t) for img, t in dop if detect_layout(img).areas and detect_layout(img).areas[0].doppler_box]
    return dop, gs


def test_kept_doppler_box_never_changes_the_answer():
    """The run loop keeps a found Doppler box while its sides are still drawn: on any sequence it must
    give what a fresh search of each frame gives (a GS frame right after, a box moved elsewhere)."""
    dop, gs = _doppler_and_gs_frames()
    assert len(dop) > 4 and gs
    moved = next(img for img, t in dop[1:] if t["areas"][0]["doppler_box"] != dop[0][1]["areas"][0]["doppler_box"])
    seq = [dop[0][0]] * 3 + [gs[0][0], dop[0][0], dop[0][0], moved, moved, dop[0][0]]
    det = LayoutDetector(fractions=False)
    for k, img in enumerate(seq):
        got, want = det.detect(img), LayoutDetector(fractions=False).detect(img)
        assert [(a.box, a.mode, a.doppler_box) for a in got.areas] == \
            [(a.box, a.mode, a.doppler_box) for a in want.areas], k


def test_background_area_search_follows_a_shrinking_picture():
    """With `background=True` the periodic area search runs on another thread and is taken SEARCH_LAG
    frames later: a picture that shrinks (the screen around it unchanged, so only the periodic search
    sees it) is followed within redetect_every + SEARCH_LAG frames, and the answers do not depend on
    thread timing (two runs agree frame by frame)."""
    from rating_edge.runtime.layout import SEARCH_LAG

    sc = video.PhantomScanner(seed=3, size=(960, 540), fps=10, layout="single")
    img, t = next((img, t) for img, t in (sc.frame(i) for i in range(0, 100)) if t["signal"] and not t["frozen"])
    x, y, w, h = t["areas"][0]["box"]
    small = img.copy()
    black = int(np.percentile(img[:y, :], 5)) if y > 0 else 0
    small[y + h // 2:y + h, x:x + w] = black  # the picture's lower half goes: half the depth
    sync0 = LayoutDetector()
    big_box = sync0.detect(img).areas[0].box
    small_box = LayoutDetector().detect(small).areas[0].box
    assert small_box[3] < 0.8 * big_box[3]  # the frames do show a smaller picture
    p = sync0.p
    frames = [img] * 5 + [small] * (p.redetect_every + SEARCH_LAG + 5)
    runs = []
    for background in (True, True, False):
        det = LayoutDetector(background=background)
        runs.append([det.detect(f).areas[0].box for f in frames])
    assert runs[0] == runs[1]
    for boxes in runs:
        assert boxes[0] == big_box and boxes[-1] == small_box
        switched = boxes.index(small_box)
        assert switched <= 5 + p.redetect_every + SEARCH_LAG
    assert runs[0].index(small_box) >= runs[2].index(small_box)  # background: a few frames later at most


def test_capture_card_bars_are_not_the_scanner_screen():
    """A screen fitted into a capture frame of another aspect ratio (equal black bars left and right, or
    top and bottom) is understood on its own: the same areas and modes as the screen alone, in frame
    pixels. A scanner's own black margin on one side is not taken for padding, nor is a black frame."""
    from rating_edge.runtime.layout import capture_padding

    sc = video.PhantomScanner(seed=5, size=(960, 720), fps=10, layout="single", theme="meridian")
    img, t = next((img, t) for img, t in (sc.frame(i) for i in range(0, 200, 7))
                  if t["signal"] and not t["frozen"] and t["areas"][0]["mode"] == "doppler")
    want = LayoutDetector().detect(img)
    # the phantom's own screen is drawn on dark grey, not on the bars' pure black
    boxed = np.zeros((720, 1280, 3), np.uint8)
    boxed[:, 160:1120] = img
    x, y, w, h = capture_padding(boxed)  # to the sampling grid: at most 7 bar columns stay inside
    assert 153 <= x <= 160 and y == 0 and 960 <= w <= 967 and h == 720
    got = LayoutDetector().detect(boxed)
    assert got.layout == want.layout and len(got.areas) == len(want.areas) == 1
    a, b = got.areas[0], want.areas[0]
    assert a.mode == b.mode == "doppler"

    def near(p, q):  # the area search's grid may fall a pixel or two differently on the cropped screen
        return all(abs(u - v) <= 4 for u, v in zip(p, q))

    assert near(a.box, (b.box[0] + 160, b.box[1], b.box[2], b.box[3]))
    assert near(a.doppler_box, (b.doppler_box[0] + 160, b.doppler_box[1], b.doppler_box[2], b.doppler_box[3]))
    letter = np.zeros((900, 960, 3), np.uint8)
    letter[90:810] = img
    pad = capture_padding(letter)
    assert pad is not None and pad[0] == 0 and pad[1] in range(81, 91) and pad[2] == 960
    one_side = np.zeros((720, 1280, 3), np.uint8)
    one_side[:, 320:] = img[:, :960]
    assert capture_padding(one_side) is None  # unequal: the scanner's own margin, not padding
    assert capture_padding(np.zeros((720, 1280, 3), np.uint8)) is None


@pytest.mark.parametrize("bad,msg", [
    (np.zeros((120, 160, 4), np.uint8), "3-channel"),  # BGRA from a grabber
    (np.full((120, 160, 3), 0.5, np.float32), "uint8"),
])
def test_odd_frames_are_one_line_errors_before_the_capture_bar_look(bad, msg):
    """The capture-bar look runs before detection proper: a frame it cannot read is refused with the same
    one-line error as before it existed, not a traceback."""
    from rating_edge.errors import RatingEdgeError

    with pytest.raises(RatingEdgeError, match=msg):
        LayoutDetector().detect(bad)
