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
