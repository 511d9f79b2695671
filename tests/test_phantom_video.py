"""Scanner-screen video: the per-frame truth is exact (areas, modes, frozen, no-signal, grades)."""
import json

import cv2
import numpy as np
import pytest

from rating_edge.errors import RatingEdgeError
from rating_edge.phantom.video import (
    THEMES,
    LiveScanner,
    PhantomScanner,
    open_live,
    parse_phantom_url,
    write_video,
)

SIZE = (400, 300)
FPS = 10


def _colour(img):
    """Pixels that count as colour (the thresholds of rating_edge.preprocess.doppler_mask, no area filter)."""
    i = img.astype(np.int16)
    mx, mn = i.max(axis=2), i.min(axis=2)
    return ((mx - mn) >= 60) & ((mx - mn) >= 0.45 * mx)


def _inside(inner, outer):
    x, y, w, h = inner
    X, Y, W, H = outer
    return X <= x and Y <= y and x + w <= X + W and y + h <= Y + H and w > 0 and h > 0


def _frames(layout, theme, seconds=30.0, dropouts=True, seed=3):
    sc = PhantomScanner(seed=seed, size=SIZE, fps=FPS, layout=layout, theme=theme, dropouts=dropouts)
    return sc, [sc.frame(i) for i in range(sc.n_frames(seconds))]


@pytest.fixture(scope="module")
def single():
    return _frames("single", "aurora")


@pytest.fixture(scope="module")
def dual():
    return _frames("dual", "meridian")


def _check_frames(sc, frames, layout):
    W, H = SIZE
    bg = np.array(sc.theme.bg, np.uint8)
    for i, (img, t) in enumerate(frames):
        assert img.shape == (H, W, 3) and img.dtype == np.uint8
        assert set(t) >= {"frame", "t", "layout", "signal", "frozen", "section", "grades", "areas"}
        assert t["frame"] == i and t["t"] == pytest.approx(i / FPS) and t["layout"] == layout
        g = t["grades"]
        assert g["combined"] == max(g["sh"], g["vs"]) and not (g["sh"] == 0 and g["vs"] > 0)
        if not t["signal"]:
            assert t["areas"] == [] and not img.any()
            continue
        modes = [a["mode"] for a in t["areas"]]
        assert modes == (["gs", "doppler"] if layout == "dual" else modes) and len(modes) == (2 if layout == "dual" else 1)
        areas_mask = np.zeros((H, W), bool)
        for a in t["areas"]:
            x, y, w, h = a["box"]
            assert _inside(a["box"], [0, 0, W, H]) and _inside(a["roi"], a["box"])
            areas_mask[y:y + h, x:x + w] = True
            # the area is exactly the ultrasound rectangle: a 1-pixel ring around it is plain background
            ring = np.concatenate([img[y - 1, x - 1:x + w + 1], img[y + h, x - 1:x + w + 1],
                                   img[y:y + h, x - 1], img[y:y + h, x + w]])
            assert (ring == bg).all(), f"frame {i}: UI touches the image area"
            inner = img[y:y + h, x:x + w]
            col = _colour(inner)
            if a["mode"] == "gs":
                assert a["doppler_box"] is None and a["doppler_fraction"] == 0
                assert not col.any(), f"frame {i}: colour in a GS area"
            else:
                bx, by, bw, bh = a["doppler_box"]
                assert _inside(a["doppler_box"], a["box"])
                lx, ly = bx - x, by - y
                outline = np.concatenate([inner[ly, lx:lx + bw], inner[ly + bh - 1, lx:lx + bw],
                                          inner[ly:ly + bh, lx], inner[ly:ly + bh, lx + bw - 1]])
                assert (outline == outline[0]).all() and outline[0, 0] == outline[0, 1] == outline[0, 2] >= 150, \
                    f"frame {i}: Doppler box outline is drawn, gray"
                in_box = np.zeros_like(col)
                in_box[ly + 1:ly + bh - 1, lx + 1:lx + bw - 1] = True
                assert not (col & ~in_box).any(), f"frame {i}: colour outside the Doppler box"
                assert col.any() == (g["vs"] > 0), f"frame {i}: colour iff VS > 0"
                assert a["doppler_fraction"] == pytest.approx(col.sum() / (w * h), abs=1e-6)
        assert _colour(img)[~areas_mask].any(), "coloured UI accents outside the image areas"


def test_single_layout_truth_matches_frames(single):
    _check_frames(*single, "single")


def test_dual_layout_truth_matches_frames(dual):
    sc, frames = dual
    _check_frames(sc, frames, "dual")
    for img, t in frames:
        if t["signal"]:
            a, b = t["areas"]
            assert a["box"][1:] == b["box"][1:] and a["box"][0] + a["box"][2] < b["box"][0]
            # the same section: same ROI relative to each area
            assert [a["roi"][0] - a["box"][0], a["roi"][1] - a["box"][1]] == \
                   [b["roi"][0] - b["box"][0], b["roi"][1] - b["box"][1]]


def test_script_has_modes_sections_frozen_and_dropouts(single):
    sc, frames = single
    truths = [t for _, t in frames]
    sections = [t["section"] for t in truths]
    assert sections == sorted(sections) and sections[-1] >= 3
    assert any(not t["signal"] for t in truths)
    assert any(t["frozen"] for t in truths) and any(t.get("transition") for t in truths)
    for s in set(sections) - {sections[-1]}:  # the last section may be cut by the end of the video
        ts = [t for t in truths if t["section"] == s]
        assert len({json.dumps(t["grades"]) for t in ts}) == 1
        modes = [t["areas"][0]["mode"] for t in ts if t["signal"]]
        assert modes[0] == "gs" and "doppler" in modes, "each section is scanned in GS, then Doppler"
        first_dop = modes.index("doppler")
        assert all(m == "gs" for m in modes[:first_dop])
    n = sum(t["signal"] and not t["frozen"] for t in truths)
    assert n > 0.6 * len(truths)


def test_frozen_frames_are_identical_in_the_image_area(single, dual):
    for sc, frames in (single, dual):
        held = 0
        for i, (img, t) in enumerate(frames):
            if not t["frozen"]:
                continue
            prev_img, prev_t = frames[i - 1]
            for a in t["areas"]:
                x, y, w, h = a["box"]
                if prev_t["frozen"]:
                    assert np.array_equal(img[y:y + h, x:x + w], prev_img[y:y + h, x:x + w])
                    held += 1
                else:  # the freeze holds the last live image, right before it
                    assert prev_t["signal"] and np.array_equal(img[y:y + h, x:x + w], prev_img[y:y + h, x:x + w])
                    assert prev_t["areas"] == t["areas"]
            # the UI marks the freeze outside the image areas
            if prev_t["signal"] and not prev_t["frozen"]:
                assert (img != prev_img).any(axis=2).sum() > 20
        assert held > 5
        # live frames always change (speckle), so "frozen" is detectable
        for i in range(1, len(frames)):
            (a, ta), (b, tb) = frames[i - 1], frames[i]
            if ta["signal"] and tb["signal"] and not tb["frozen"]:
                x, y, w, h = tb["areas"][0]["box"]
                assert not np.array_equal(a[y:y + h, x:x + w], b[y:y + h, x:x + w])


def test_no_dropouts_unless_asked():
    sc, frames = _frames("single", "tundra", seconds=25, dropouts=False, seed=5)
    assert all(t["signal"] for _, t in frames)


def test_deterministic_and_random_access():
    a = PhantomScanner(seed=9, size=SIZE, fps=FPS, dropouts=True)
    b = PhantomScanner(seed=9, size=SIZE, fps=FPS, dropouts=True)
    order = [150, 3, 77, 149, 0, 151]
    fa = {i: a.frame(i) for i in order}
    for i in sorted(order):
        img, t = b.frame(i)
        assert np.array_equal(img, fa[i][0]) and t == fa[i][1]
    c = PhantomScanner(seed=10, size=SIZE, fps=FPS)
    assert not np.array_equal(c.frame(3)[0], fa[3][0])


@pytest.mark.parametrize("theme", sorted(THEMES))
def test_every_theme_draws_ui_outside_areas(theme):
    for layout in ("single", "dual"):
        sc = PhantomScanner(seed=1, size=(640, 360), fps=FPS, layout=layout, theme=theme)
        img, t = sc.frame(40)
        mask = np.zeros(img.shape[:2], bool)
        for a in t["areas"]:
            x, y, w, h = a["box"]
            mask[y:y + h, x:x + w] = True
            assert w >= 100 and h >= 100
        assert _colour(img)[~mask].sum() > 30


def test_bad_arguments_are_refused():
    with pytest.raises(RatingEdgeError, match="size"):
        PhantomScanner(size=(100, 50))
    with pytest.raises(RatingEdgeError, match="theme"):
        PhantomScanner(theme="nope")
    with pytest.raises(RatingEdgeError, match="layout"):
        PhantomScanner(layout="triple")
    with pytest.raises(RatingEdgeError, match="seed"):
        PhantomScanner(seed=-3)
    with pytest.raises(RatingEdgeError, match="mp4"):
        write_video("/tmp/x.avi", 1)


def test_write_video_and_sidecar(tmp_path):
    mp4, side = write_video(tmp_path / "v.mp4", seconds=2.5, fps=FPS, size=(320, 240), layout="dual", seed=2,
                            dropouts=True)
    assert side.name == "v.mp4.jsonl"
    lines = [json.loads(x) for x in side.read_text().splitlines()]
    assert len(lines) == 25
    sc = PhantomScanner(seed=2, size=(320, 240), fps=FPS, layout="dual", dropouts=True)
    cap = cv2.VideoCapture(str(mp4))
    n = 0
    while True:
        ok, img = cap.read()
        if not ok:
            break
        ref, t = sc.frame(n)
        assert t == lines[n]
        assert img.shape == ref.shape
        assert np.abs(img.astype(int) - ref).mean() < 12
        n += 1
    assert n == 25


def test_parse_phantom_url():
    kw = parse_phantom_url("phantom://?seed=1&fps=30&size=1280x720&layout=dual&seconds=20&dropouts=1&theme=sierra")
    assert kw == {"seed": 1, "fps": 30.0, "size": (1280, 720), "layout": "dual", "seconds": 20.0,
                  "dropouts": True, "theme": "sierra"}
    assert parse_phantom_url("phantom://") == {}
    for bad in ("phantom://?colour=1", "phantom://?layout=quad", "phantom://?size=big", "phantom://?fps=x",
                "rtsp://host/stream", "phantom://?theme=acme", "phantom://?dropouts=maybe"):
        with pytest.raises(RatingEdgeError):
            parse_phantom_url(bad)


class _FakeClock:
    def __init__(self):
        self.now = 100.0
        self.slept = []

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.slept.append(s)
        self.now += s


def test_live_scanner_paces_and_skips():
    clk = _FakeClock()
    cap = LiveScanner(seed=1, fps=10, size=(320, 240), seconds=2, clock=clk, sleep=clk.sleep)
    ref = PhantomScanner(seed=1, size=(320, 240), fps=10)
    got = []
    for _ in range(3):  # a fast reader waits for each frame
        ok, img = cap.read()
        assert ok and np.array_equal(img, ref.frame(cap.last_index)[0])
        got.append(cap.last_index)
    assert got == [0, 1, 2] and clk.slept and sum(clk.slept) == pytest.approx(0.2)
    clk.now += 0.55  # a slow reader gets the frame due now; the ones in between are skipped
    ok, img = cap.read()
    assert ok and cap.last_index == 7 and cap.skipped == 4 and cap.last_truth["frame"] == 7
    n = sum(1 for _ in cap)
    assert cap.last_index == 19 and n == 12
    assert cap.read() == (False, None)
    assert cap.get(cv2.CAP_PROP_FPS) == 10 and cap.get(cv2.CAP_PROP_FRAME_WIDTH) == 320


def test_open_live_unpaced():
    cap = open_live("phantom://?seed=4&fps=20&size=320x240&seconds=1&realtime=0&layout=dual")
    frames = list(cap)
    assert len(frames) == 20 and cap.isOpened()
    assert frames[0][1]["layout"] == "dual"
    cap.release()
    assert cap.read() == (False, None)
