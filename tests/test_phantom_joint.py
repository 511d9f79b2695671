"""Phantom pairs: grades, geometry and colour follow the EOSS definitions exactly."""
import subprocess
import sys

import cv2
import numpy as np
import pytest

from rating_edge.errors import RatingEdgeError
from rating_edge.phantom.joint import (
    VS2_COVERAGE,
    VS3_COVERAGE,
    bone_top_line_y,
    make_pair,
    sample_anatomy,
    sample_grades,
    spot_area,
)
from rating_edge.preprocess import (
    PreprocessParams,
    doppler_mask,
    prepare_doppler,
    prepare_gs,
)

VALID = [(s, v) for s in range(4) for v in range(4) if not (s == 0 and v > 0)]


def _pair(sh, vs, kind="cdus", seed=0, size=(256, 320)):
    return make_pair(np.random.default_rng([seed, sh, vs]), sh, vs, kind, size=size)


@pytest.fixture(scope="module")
def pairs():
    return {(sh, vs, kind, seed): _pair(sh, vs, kind, seed)
            for sh, vs in VALID for kind in ("cdus", "pdus") for seed in range(3)}


def _components(mask):
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return stats[1:, cv2.CC_STAT_AREA]


def _surface(pair):
    """Columns with synovium and the row of its top surface in each."""
    m = pair.synovium_mask
    cols = np.nonzero(m.any(axis=0))[0]
    return cols, np.array([np.argmax(m[:, c]) for c in cols])


def test_sample_grades_is_eoss_consistent_and_covers_all():
    rng = np.random.default_rng(0)
    g = np.array([sample_grades(rng) for _ in range(400)])
    assert np.all(g[g[:, 0] == 0, 1] == 0)
    assert set(g[:, 0]) == {0, 1, 2, 3} and set(g[:, 1]) == {0, 1, 2, 3}
    comb = g.max(axis=1)
    assert np.bincount(comb, minlength=4).min() >= 60  # every combined grade well represented


def test_invalid_grades_are_refused():
    rng = np.random.default_rng(0)
    with pytest.raises(RatingEdgeError, match="SH = 0 implies VS = 0"):
        make_pair(rng, 0, 2)
    with pytest.raises(RatingEdgeError):
        make_pair(rng, 4, 0)
    with pytest.raises(RatingEdgeError, match="Doppler kind"):
        make_pair(rng, 1, 1, "mri")
    with pytest.raises(RatingEdgeError, match="size"):
        make_pair(rng, 1, 1, size=(20, 20))


def test_labels_and_masks_are_consistent(pairs):
    for (sh, vs, kind, _), p in pairs.items():
        H, W = p.gs.shape[:2]
        assert (p.sh, p.vs, p.combined, p.kind) == (sh, vs, max(sh, vs), kind)
        assert p.doppler.shape == p.gs.shape and p.gs.dtype == np.uint8
        x, y, w, h = p.roi
        assert 0 <= x and 0 <= y and x + w <= W and y + h <= H
        bx, by, bw, bh = p.doppler_box
        assert bx <= x and by <= y and bx + bw >= x + w and by + bh >= y + h, "Doppler box holds the ROI"
        assert bx >= 0 and by >= 0 and bx + bw <= W and by + bh <= H
        inside = np.zeros_like(p.synovium_mask)
        inside[y:y + h, x:x + w] = True
        assert not (p.synovium_mask & ~inside).any(), "synovium lies inside the ROI"
        assert not (p.signal_mask & ~p.synovium_mask).any(), "Doppler signal lies inside the synovium"
        if sh == 0:
            assert not p.synovium_mask.any() and not p.signal_mask.any()
        else:
            assert p.synovium_mask.sum() > 200
        assert p.signal_mask.any() == (vs > 0)


def test_vascularity_bands(pairs):
    max_spot = spot_area(1.0)
    for (sh, vs, kind, _), p in pairs.items():
        if sh == 0:
            continue
        cov = p.signal_mask.sum() / p.synovium_mask.sum()
        comps = _components(p.signal_mask)
        if vs == 1:
            assert 1 <= len(comps) <= 3, "VS 1: up to three single spots"
            assert comps.max() <= max_spot
        elif vs == 2:
            assert VS2_COVERAGE[0] - 0.03 <= cov < 0.5, cov
            assert comps.max() > max_spot, "VS 2 is confluent, not spots"
        elif vs == 3:
            assert cov > 0.5 and cov >= VS3_COVERAGE[0] - 0.03, cov


def test_synovitis_geometry_follows_the_bone_top_line(pairs):
    for (sh, vs, kind, _), p in pairs.items():
        if sh == 0:
            continue
        cols, top = _surface(p)
        rel = top - bone_top_line_y(p, cols)          # > 0: below the line (deeper)
        n = len(cols)
        c, t = cols[n // 5:n - n // 5], top[n // 5:n - n // 5]
        curv = np.polyfit(c, t, 2)[0]                 # > 0: bulging up in the middle (convex)
        if sh == 1:
            assert rel.min() >= 0, "SH 1 stays below the line joining the bone tops"
        elif sh == 2:
            assert rel.min() <= -6, "SH 2 rises above the bone-top line"
            assert curv < 0.0015, "SH 2 has a flat or concave surface"
        else:
            assert rel.min() <= -15, "SH 3 bulges well above the line"
            assert curv > 0.003, "SH 3 is convex"
    # the tendon is lifted by a grade-3 bulge
    p3 = pairs[(3, 0, "cdus", 0)]
    cols, top = _surface(p3)
    assert np.all(p3.landmarks["tendon_bottom"][cols] < top)


def test_gray_stays_gray_and_mask_is_exactly_the_signal(pairs):
    for (sh, vs, kind, _), p in pairs.items():
        assert np.array_equal(p.gs[:, :, 0], p.gs[:, :, 1]) and np.array_equal(p.gs[:, :, 1], p.gs[:, :, 2])
        d = p.doppler[~p.signal_mask]
        assert np.array_equal(d[:, 0], d[:, 1]) and np.array_equal(d[:, 1], d[:, 2])
        assert np.array_equal(doppler_mask(p.doppler), p.signal_mask)
        assert not doppler_mask(p.gs).any()
        if vs:
            col = p.doppler[p.signal_mask].astype(int)
            chroma = col.max(axis=1) - col.min(axis=1)
            assert chroma.min() >= 70 and (chroma / col.max(axis=1)).min() >= 0.5


def test_colour_maps_differ_by_kind(pairs):
    c = pairs[(3, 3, "cdus", 0)]
    pw = pairs[(3, 3, "pdus", 0)]
    cc = c.doppler[c.signal_mask].astype(int)
    pc = pw.doppler[pw.signal_mask].astype(int)
    assert (cc[:, 0] > cc[:, 2]).any() and (cc[:, 2] > cc[:, 0]).any(), "CDUS shows red and blue"
    assert np.all(pc[:, 2] > pc[:, 0]) and np.all(pc[:, 0] == 0), "PDUS is red-orange-yellow only"


def test_mask_survives_jpeg(pairs):
    ious = {1: [], 2: []}
    for (sh, vs, kind, _), p in pairs.items():
        if vs == 0:
            continue
        ok, buf = cv2.imencode(".jpg", p.doppler, [cv2.IMWRITE_JPEG_QUALITY, 85])
        m = doppler_mask(cv2.imdecode(buf, cv2.IMREAD_COLOR))
        s = p.signal_mask
        ious[1 if vs == 1 else 2].append((m & s).sum() / (m | s).sum())
        near = cv2.dilate(s.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        assert not (m & ~near).any(), "no Doppler found away from the painted signal"
        ok, buf = cv2.imencode(".jpg", p.gs, [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert not doppler_mask(cv2.imdecode(buf, cv2.IMREAD_COLOR)).any()
    assert min(ious[1]) >= 0.6 and np.mean(ious[1]) >= 0.8
    assert min(ious[2]) >= 0.8 and np.mean(ious[2]) >= 0.9


def test_deterministic_by_seed():
    a = _pair(2, 3, "pdus", seed=5)
    b = _pair(2, 3, "pdus", seed=5)
    c = _pair(2, 3, "pdus", seed=6)
    assert np.array_equal(a.gs, b.gs) and np.array_equal(a.doppler, b.doppler) and a.roi == b.roi
    assert not np.array_equal(a.gs, c.gs)


def test_same_patient_same_anatomy():
    an = sample_anatomy(np.random.default_rng(3))
    r = np.random.default_rng(4)
    a, b = an.jitter(r), an.jitter(r)
    assert a.head_width == b.head_width == an.head_width and a.gap_x != b.gap_x
    p = make_pair(r, 2, 1, anatomy=a)
    assert p.sh == 2


@pytest.mark.parametrize("size", [(128, 160), (300, 300), (480, 600)])
def test_other_sizes_keep_the_invariants(size):
    for sh, vs in [(1, 1), (2, 2), (3, 3)]:
        p = _pair(sh, vs, "cdus", seed=1, size=size)
        assert p.gs.shape == (*size, 3)
        assert np.array_equal(doppler_mask(p.doppler), p.signal_mask)
        assert p.signal_mask.any() and not (p.signal_mask & ~p.synovium_mask).any()


def test_grade_cues_are_visible_after_roi_crop_at_64px(pairs):
    """At the network input size the synovium is a clearly darker patch than the tissue above it,
    large enough to see, and the Doppler transform shows red where the signal is."""
    pp = PreprocessParams(input_size=64)
    for (sh, vs, kind, seed), p in pairs.items():
        if sh == 0 or kind == "pdus":
            continue
        x, y, w, h = p.roi
        g = prepare_gs(p.gs, p.roi, pp)[:, :, 0].astype(float)
        m = cv2.resize(p.synovium_mask[y:y + h, x:x + w].astype(np.float32), (64, 64), interpolation=cv2.INTER_AREA)
        core = m > 0.9
        assert core.sum() >= {1: 8, 2: 30, 3: 60}[sh], (sh, core.sum())
        above = np.zeros_like(core)
        for c in np.nonzero(core.any(axis=0))[0]:
            t = np.argmax(m[:, c] > 0.05)
            above[max(0, t - 5):max(0, t - 2), c] = True
        assert g[core].mean() < g[above].mean() - 25, (sh, g[core].mean(), g[above].mean())
        if vs >= 2:
            d = prepare_doppler(p.doppler, p.roi, pp)
            red = d[:, :, 0].astype(int) - d[:, :, 1] > 60
            sig = cv2.resize(p.signal_mask[y:y + h, x:x + w].astype(np.float32), (64, 64),
                             interpolation=cv2.INTER_AREA) > 0.5
            assert red.sum() >= 0.5 * sig.sum() > 0


def test_phantom_does_not_import_torch():
    code = ("import sys\nimport rating_edge.phantom.joint, rating_edge.phantom.dataset, rating_edge.phantom.video\n"
            "import rating_edge.phantom.commands\n"
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\nassert not bad, bad[:5]\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
