"""Section tracking: pairs and temporal aggregation must never mix two joint sections."""
import collections

import pytest

from rating_edge.phantom.video import PhantomScanner
from rating_edge.runtime.layout import LayoutDetector
from rating_edge.runtime.pairing import Pairer


@pytest.mark.parametrize("seed", [3, 7])
def test_sections_follow_probe_motion(seed):
    sc = PhantomScanner(seed=seed, size=(640, 360), fps=10, layout="single")
    det, pairer = LayoutDetector(), Pairer()
    seen = collections.defaultdict(set)
    truth_sections = set()
    for i in range(360):
        img, truth = sc.frame(i)
        truth_sections.add(truth["section"])
        pair, _ = pairer.update(i, i / 10, img, det.detect(img))
        if pair is not None:
            assert sc.frame(pair.frame_gs)[1]["section"] == truth["section"]  # never a cross-section pair
            if not truth.get("transition"):
                seen[pair.section].add(truth["section"])
    assert len(truth_sections) >= 3
    # every detected section holds one true section (over-splitting is harmless, merging is not)
    assert all(len(v) == 1 for v in seen.values()), dict(seen)
    # and sections were really told apart (the old frame-to-frame rule merged all of them into one)
    assert len({next(iter(v)) for v in seen.values()}) >= len(truth_sections) - 1


@pytest.mark.parametrize("size,layout", [((1920, 1080), "single"), ((1920, 1080), "dual"), ((1280, 720), "single"),
                                         ((1922, 1082), "single")])
def test_pairing_reuses_detections_subsampled_frame_exactly(size, layout):
    """Pairing cuts the area's every-4th-pixel image from layout detection's subsampled frame where that
    is exactly the same pixels; the pairs, similarities and sections are those of subsampling afresh."""
    import dataclasses

    import numpy as np

    from rating_edge.runtime.pairing import STEP, _subsampled

    sc = PhantomScanner(seed=4, size=size, fps=10, layout=layout)
    det, fast, slow = LayoutDetector(), Pairer(), Pairer()
    reused = 0
    for i in range(0, 240, 2):
        img, _ = sc.frame(i)
        lo = det.detect(img)
        for a in lo.areas:
            sub = _subsampled(lo, a.box)
            if sub is not None:
                reused += 1
                x, y, w, h = a.box
                assert np.array_equal(sub[0], img[y:y + h:STEP, x:x + w:STEP])
        pf, sf = fast.update(i, i / 10, img, lo)
        ps, ss = slow.update(i, i / 10, img, dataclasses.replace(lo, small=None, gray=None))
        assert sf == ss and (pf is None) == (ps is None)
        if pf is not None:
            assert (pf.similarity, pf.section, pf.frame_gs) == (ps.similarity, ps.section, ps.frame_gs)
    from rating_edge.runtime.layout import DETECT_WIDTH

    assert (reused > 0) == (size[0] // DETECT_WIDTH == STEP and size[0] % STEP == 0 and size[1] % STEP == 0)


def _similarity_by_loop(a, b, max_shift=6):
    """The plain definition: Pearson correlation over the valid cells of each lateral shift, the best."""
    import numpy as np

    from rating_edge.runtime.pairing import GRID, _rows_centred

    (ga, va), (gb, vb) = a, b
    ca, cb = _rows_centred(ga, va), _rows_centred(gb, vb)
    n, best = ga.shape[1], 0.0
    for s in range(-max_shift, max_shift + 1):
        sa, sb = slice(max(0, s), n + min(0, s)), slice(max(0, -s), n + min(0, -s))
        v = va[:, sa] & vb[:, sb]
        if v.sum() < GRID * GRID // 4:
            continue
        x, y = ca[:, sa][v], cb[:, sb][v]
        x, y = x - x.mean(), y - y.mean()
        den = float(np.sqrt((x * x).sum() * (y * y).sum()))
        if den > 1e-6:
            best = max(best, float((x * y).sum() / den))
    return best


def test_similarity_all_shifts_at_once_is_the_plain_definition():
    """`similarity` computes every shift from sums in one go (it runs on every Doppler frame); it must
    equal the per-shift loop, masked cells, flat images and shifted copies included."""
    import numpy as np

    from rating_edge.runtime.pairing import similarity

    rng = np.random.default_rng(0)
    for i in range(400):
        g1 = rng.uniform(0, 255, (32, 32)).astype(np.float32)
        g2 = np.roll(g1 * rng.uniform(0, 1) + rng.uniform(0, 255, (32, 32)) * rng.uniform(0, 1),
                     int(rng.integers(-8, 8)), axis=1).astype(np.float32)
        if i % 9 == 0:
            g2[:] = 7.0  # flat: no correlation defined
        v1, v2 = (rng.uniform(size=(32, 32)) > rng.uniform(0, 0.95) for _ in range(2))
        a, b = (g1, v1), (g2, v2)
        assert abs(similarity(a, b) - _similarity_by_loop(a, b)) < 1e-9
    g = rng.uniform(0, 255, (32, 32)).astype(np.float32)
    ok = np.ones((32, 32), bool)
    assert similarity((g, ok), (np.roll(g, 3, axis=1), ok)) > 0.99  # a shifted copy is found


@pytest.mark.parametrize("roi", [(40, 30, 200, 120), None, (300, 10, 100, 100)])
def test_detached_pair_keeps_the_roi_pixels_and_the_same_inputs(roi):
    """Before the overlay draws on the frame, a pair that views it gets its own pixels: only the ROI's
    (all preprocessing reads), the same engine inputs, the same ROI outlined on the screen; an ROI that
    does not fit the crop keeps the whole crop, so the scorer still reports it."""
    import numpy as np

    from rating_edge.preprocess import PreprocessParams, prepare_doppler, prepare_gs
    from rating_edge.runtime.pairing import Pair

    frame = np.random.default_rng(0).integers(0, 256, (360, 640, 3), dtype=np.uint8)
    frame[100:160, 120:200] = (0, 0, 230)  # some "flow"
    gs, dop = frame[20:300, 10:330], frame[20:300, 320:640]
    p = Pair(1, 1, 0.0, 1, gs, dop, roi, roi, (10, 20, 320, 280), (320, 20, 320, 280), 1.0, layout="dual")
    d = p.detached(frame)
    assert not np.may_share_memory(d.gs_bgr, frame) and not np.may_share_memory(d.doppler_bgr, frame)
    assert d.area_roi("gs") == p.area_roi("gs") and d.area_roi("doppler") == p.area_roi("doppler")
    params = PreprocessParams(input_size=64)
    fits = roi is None or roi[0] + roi[2] <= 320
    if fits:
        assert np.array_equal(prepare_gs(d.gs_bgr, d.roi_gs, params), prepare_gs(gs, roi, params))
        assert np.array_equal(prepare_doppler(d.doppler_bgr, d.roi_doppler, params), prepare_doppler(dop, roi, params))
    if roi is not None and fits:
        assert d.doppler_bgr.shape[:2] == (roi[3], roi[2])
    else:
        assert d.doppler_bgr.shape == dop.shape
    frame[:] = 0  # the overlay draws: the detached pair is unchanged
    assert d.doppler_bgr.any()
