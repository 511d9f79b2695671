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
