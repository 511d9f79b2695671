"""Frame fuzzing: any size from 1 to 4096 px a side, 1/3/4 channels, 8/16 bit, noise, flat or a scanner
screen squeezed to that size, goes through every stage of the run pipeline (capture conversion, layout,
pairing, scoring, aggregation, overlay, video sink) without an exception and without a stage having to
fail open."""
import cv2
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from test_runtime_fixtures import FakeRunner  # noqa: E402

from rating_edge.runtime.app import RunConfig, run  # noqa: E402
from rating_edge.runtime.capture import FramesSource  # noqa: E402

video = pytest.importorskip("rating_edge.phantom.video")
_SCREEN = {}


def screen():
    if not _SCREEN:
        sc = video.PhantomScanner(seed=2, size=(640, 360), fps=10, layout="single")
        _SCREEN["gs"], _SCREEN["dop"] = sc.frame(0)[0], sc.frame(25)[0]
    return _SCREEN


def make_frame(h, w, channels, bits, kind, seed):
    rng = np.random.default_rng(seed)
    dtype, top = (np.uint8, 255) if bits == 8 else (np.uint16, 65535)
    if kind == "noise":
        a = rng.integers(0, top, (h, w, channels), dtype, endpoint=True)
    elif kind == "flat":
        a = np.full((h, w, channels), int(rng.integers(0, top)), dtype)
    else:
        s = cv2.resize(screen()[kind], (w, h), interpolation=cv2.INTER_AREA)
        s = {1: cv2.cvtColor(s, cv2.COLOR_BGR2GRAY)[..., None], 3: s, 4: cv2.cvtColor(s, cv2.COLOR_BGR2BGRA)}[channels]
        a = s.astype(dtype) * (257 if bits == 16 else 1)
    return a[..., 0] if channels == 1 and seed % 2 else a  # gray as HxW or HxWx1


side = st.one_of(st.integers(1, 64), st.integers(1, 4096), st.sampled_from([1, 2, 3, 8, 15, 16, 17, 4096]))
frames = st.tuples(side, side, st.sampled_from([1, 3, 4]), st.sampled_from([8, 16]),
                   st.sampled_from(["noise", "flat", "gs", "dop"]), st.integers(0, 2**16))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(st.lists(frames, min_size=1, max_size=3))
def test_fuzzed_frames_flow_through_every_stage(tmp_path_factory, specs):
    imgs = [make_frame(*s) for s in specs if s[0] * s[1] <= 2048 * 4096]  # keep each example under ~100 MB
    imgs = imgs or [make_frame(8, 8, 3, 8, "noise", 0)]
    seq = [screen()["gs"], *imgs, screen()["dop"], *imgs[:1]]
    out = tmp_path_factory.mktemp("fz") / "o.avi"
    r = run(RunConfig(source="fuzz", every_pair=True, pace=False, out=str(out)), runner=FakeRunner(),
            source=FramesSource(seq))
    assert r["frames_out"] == len(seq)
    bad = {k: v for k, v in r["errors_by_stage"].items() if v}
    assert not bad, bad


json_values = st.recursive(st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True)
                           | st.text(max_size=8), lambda kids: st.lists(kids, max_size=5)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=12)
box = st.lists(st.one_of(st.integers(-5000, 5000), st.floats(allow_nan=True), st.text(max_size=2)), min_size=0, max_size=5)
profiles = st.fixed_dictionaries({}, optional={
    "layout": st.sampled_from(["auto", "single", "dual", "triple", 3]), "frame_size": st.one_of(box, json_values),
    "areas": st.one_of(st.lists(box, max_size=3), json_values), "ui_regions": st.one_of(st.lists(box, max_size=3), json_values),
    "roi": st.one_of(st.sampled_from(["doppler_box", "area", "x"]), box), "detect": json_values, "doppler": json_values,
    "name": json_values})


@settings(max_examples=200, deadline=None, derandomize=True)
@given(profiles)
def test_fuzzed_profiles_are_refused_in_one_line_or_never_crash_detection(d):
    from rating_edge.errors import RatingEdgeError
    from rating_edge.runtime.layout import LayoutDetector, Profile

    try:
        prof = Profile.from_dict(d)
    except RatingEdgeError as e:
        assert "\n" not in str(e)
        return
    det = LayoutDetector(prof)
    for img in (screen()["gs"], screen()["dop"][:100, :50]):
        det.detect(img)
