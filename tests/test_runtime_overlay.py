"""What the radiologist sees: the heatmap wash, the ROI outline and the score panel on the frame."""
import numpy as np

from rating_edge.runtime.layout import Area, FrameLayout
from rating_edge.runtime.overlay import (
    HEAT_ALPHA,
    HEAT_MIN,
    YELLOW,
    OverlayState,
    render,
)
from rating_edge.runtime.pairing import Pair
from rating_edge.runtime.worker import Result
from rating_edge.scoring import score_probs

W, H = 640, 360
AREA = (60, 40, 400, 300)
ROI = (100, 60, 200, 120)  # inside the area crop


def _state(heat):
    rng = np.random.default_rng(0)
    sh, vs = rng.uniform(0, 1, (2, 5, 3, 2)).astype(np.float32)
    sc = {k: v[0] for k, v in score_probs(sh[None], vs[None]).items()}
    pair = Pair(1, 2, 0.1, 1, None, None, ROI, ROI, AREA, AREA, 0.9)
    st = OverlayState(model_id="m", fps=30.0, status="paired")
    st.result = Result(pair, sc, sh, vs, heat, heat, {}, 0.0)
    return st


def _frame():
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


def test_heat_wash_is_the_yellow_blend_inside_the_roi_only():
    heat = np.zeros((4, 4), np.float32)
    heat[1:3, 1:3] = 1.0  # hot centre, cold border (< 0.2 is left out)
    frame = _frame()
    before = frame.copy()
    lo = FrameLayout("single", [Area(AREA, "doppler", None, 0.1)], size=(W, H))
    st = _state(heat)
    out = render(frame, lo, st)
    assert np.array_equal(frame, before)  # the scanner frame itself is never drawn on
    x, y, w, h = AREA[0] + ROI[0], AREA[1] + ROI[1], ROI[2], ROI[3]
    import cv2

    m = cv2.resize(heat, (w, h), interpolation=cv2.INTER_LINEAR)
    a = np.where(m >= HEAT_MIN, np.clip(m, 0, 1) * HEAT_ALPHA, 0)[..., None]
    want = before[y:y + h, x:x + w] * (1 - a) + np.array(YELLOW) * a
    inner = (slice(y + 3, y + h - 3), slice(x + 3, x + w - 3))  # inside the outline
    got = out[inner].astype(np.float64)
    assert np.abs(got - want[3:-3, 3:-3]).max() <= 1.0
    cold = (a[3:-3, 3:-3, 0] == 0)
    assert cold.any() and np.array_equal(out[inner][cold], before[inner][cold])
    # the rest of the image area is untouched (the panel sits in the right margin)
    ax, ay, aw, ah = AREA
    area_out, area_in = out[ay:ay + ah, ax:ax + aw].copy(), before[ay:ay + ah, ax:ax + aw].copy()
    area_out[ROI[1] - 3:ROI[1] + ROI[3] + 3, ROI[0] - 3:ROI[0] + ROI[2] + 3] = 0
    area_in[ROI[1] - 3:ROI[1] + ROI[3] + 3, ROI[0] - 3:ROI[0] + ROI[2] + 3] = 0
    assert np.array_equal(area_out, area_in)
    assert not np.array_equal(out[:, ax + aw:], before[:, ax + aw:])  # the score panel is in the margin


def test_heat_toggle_and_cached_wash_follow_the_result():
    heat = np.full((4, 4), 0.9, np.float32)
    lo = FrameLayout("single", [Area(AREA, "doppler", None, 0.1)], size=(W, H))
    st = _state(heat)
    f1, f2 = _frame(), _frame()[::-1].copy()
    a1 = render(f1, lo, st)
    a2 = render(f2, lo, st)  # same result, new frame: the wash is blended onto the new pixels
    fresh = _state(heat)
    assert np.array_equal(a2, render(f2, lo, fresh))
    st.show_heat = False
    b = render(f1, lo, st)
    x, y = AREA[0] + ROI[0] + 10, AREA[1] + ROI[1] + 10
    assert not np.array_equal(a1[y, x], f1[y, x]) and np.array_equal(b[y, x], f1[y, x])
    st.result = _state(np.zeros((4, 4), np.float32)).result  # a cold map draws no wash at all
    c = render(f1, lo, st)
    assert np.array_equal(c[y:y + 50, x:x + 50], f1[y:y + 50, x:x + 50])


def test_score_panel_avoids_the_scanners_colour_bar_and_text():
    """The right margin's top holds a colour bar and labels (as on most scanners): the panel moves to
    the quiet part of the margin instead of covering them, and never over the image area."""
    import cv2

    frame = np.zeros((H, W, 3), np.uint8)
    frame[60:200, 480:500] = np.linspace(0, 255, 140, dtype=np.uint8)[:, None, None] * np.array([0, 0, 1], np.uint8)
    cv2.putText(frame, "cm/s", (505, 130), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    lo = FrameLayout("single", [Area(AREA, "doppler", None, 0.1)], size=(W, H))
    st = _state(np.zeros((4, 4), np.float32))
    out = render(frame, lo, st)
    changed = np.argwhere((out != frame).any(axis=2))
    panel = changed[changed[:, 1] >= AREA[0] + AREA[2]]  # what was drawn in the right margin
    assert len(panel) > 0
    assert panel[:, 0].min() > 200  # below the bar and its label
    ax, ay, aw, ah = AREA  # nothing drawn over the picture except the (empty) ROI outline
    inside = changed[(changed[:, 1] >= ax) & (changed[:, 1] < ax + aw) & (changed[:, 0] >= ay) & (changed[:, 0] < ay + ah)]
    rx, ry, rw, rh = ax + ROI[0], ay + ROI[1], ROI[2], ROI[3]
    on_outline = ((np.abs(inside[:, 1] - rx) <= 2) | (np.abs(inside[:, 1] - (rx + rw - 1)) <= 2)
                  | (np.abs(inside[:, 0] - ry) <= 2) | (np.abs(inside[:, 0] - (ry + rh - 1)) <= 2))
    assert on_outline.all()


def test_each_new_result_gets_its_own_wash():
    """A new result replacing the old one (CPython may give it the old one's id) shows its own map."""
    lo = FrameLayout("single", [Area(AREA, "doppler", None, 0.1)], size=(W, H))
    left, right = np.zeros((4, 4), np.float32), np.zeros((4, 4), np.float32)
    left[:, 0], right[:, -1] = 1.0, 1.0
    st = _state(left)
    frame = _frame()
    x0, y0 = AREA[0] + ROI[0], AREA[1] + ROI[1] + ROI[3] // 2
    lx, rx = x0 + 10, x0 + ROI[2] - 10
    for heat, hot, cold in [(left, lx, rx), (right, rx, lx), (left, lx, rx)] * 3:
        st.result = None
        st.result = _state(heat).result
        out = render(frame, lo, st)
        assert not np.array_equal(out[y0, hot], frame[y0, hot]) and np.array_equal(out[y0, cold], frame[y0, cold])


def test_wash_made_on_the_inference_thread_draws_the_same():
    """The worker prepares the pair's wash beside the engine (`Result.washes`); the frame path then
    only blends it, with the same pixels as a wash the overlay prepares itself."""
    from rating_edge.runtime.worker import _washes

    heat = np.random.default_rng(3).uniform(0, 1, (7, 7)).astype(np.float32)
    lo = FrameLayout("single", [Area(AREA, "doppler", None, 0.1)], size=(W, H))
    mine, theirs = _state(heat), _state(heat)
    theirs.result.washes = _washes(theirs.result.pair, heat, heat)
    assert list(theirs.result.washes) == [("doppler", ROI[2], ROI[3])]  # single layout: Doppler only
    f = _frame()
    assert np.array_equal(render(f, lo, mine), render(f, lo, theirs))
    assert theirs.extra["alpha"][next(iter(theirs.extra["alpha"]))][1] is theirs.result.washes[("doppler", ROI[2], ROI[3])]
