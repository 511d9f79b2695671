import cv2
import numpy as np
import pytest

from rating_edge.errors import RatingEdgeError
from rating_edge.preprocess import (
    PreprocessParams,
    check_batch,
    crop_roi,
    doppler_mask,
    doppler_transform,
    normalize,
    prepare_doppler,
    prepare_gs,
    prepare_pair,
)


def gray_image(h=120, w=160, seed=0):
    rng = np.random.default_rng(seed)
    g = cv2.GaussianBlur(rng.integers(0, 256, (h, w), dtype=np.uint8), (5, 5), 0)
    g = cv2.putText(g, "12 MHz  D3.0cm", (5, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, 255, 1)
    cv2.line(g, (0, 100), (159, 100), 200, 1)
    return cv2.cvtColor(g, cv2.COLOR_GRAY2BGR)


def with_signal(img, colours):
    out = img.copy()
    truth = np.zeros(img.shape[:2], bool)
    for i, c in enumerate(colours):
        y, x = 40 + 12 * (i // 4), 30 + 25 * (i % 4)
        cv2.ellipse(out, (x, y), (7, 4), 0, 0, 360, c, -1)
        cv2.ellipse(truth.view(np.uint8), (x, y), (7, 4), 0, 0, 360, 1, -1)
    return out, truth


CDUS = [(0, 0, 200), (0, 40, 255), (200, 0, 0), (255, 120, 0)]       # BGR reds and blues
PDUS = [(0, 140, 255), (0, 220, 255), (0, 0, 150), (40, 180, 255)]   # oranges, yellows, dark red


@pytest.mark.parametrize("colours", [CDUS, PDUS], ids=["cdus", "pdus"])
def test_doppler_mask_finds_signal_not_gray_text_or_lines(colours):
    img, truth = with_signal(gray_image(), colours)
    m = doppler_mask(img)
    assert m.shape == img.shape[:2] and m.dtype == bool
    iou = (m & truth).sum() / (m | truth).sum()
    assert iou > 0.95


def test_gray_only_image_has_empty_mask_and_transform_is_gray():
    img = gray_image()
    assert not doppler_mask(img).any()
    t = doppler_transform(img)
    assert np.array_equal(t[..., 0], t[..., 1]) and np.array_equal(t[..., 1], t[..., 2])


def test_jpeg_chroma_noise_is_not_signal():
    img = gray_image(seed=3)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 70])
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert not doppler_mask(dec).any()
    sig, truth = with_signal(gray_image(seed=3), CDUS + PDUS)
    ok, buf = cv2.imencode(".jpg", sig, [cv2.IMWRITE_JPEG_QUALITY, 85])
    m = doppler_mask(cv2.imdecode(buf, cv2.IMREAD_COLOR))
    assert (m & truth).sum() / (m | truth).sum() > 0.8
    assert (m & ~cv2.dilate(truth.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)).sum() == 0


def test_transform_paints_pure_red_on_gray():
    img, truth = with_signal(gray_image(), PDUS)
    t = doppler_transform(img)
    m = doppler_mask(img)
    assert np.all(t[m] == (0, 0, 255))
    rest = t[~m]
    assert np.all(rest[:, 0] == rest[:, 1]) and np.all(rest[:, 1] == rest[:, 2])


def test_cdus_and_pdus_look_alike_after_transform():
    base = gray_image(seed=5)
    a, _ = with_signal(base, CDUS)
    b, _ = with_signal(base, PDUS)
    ta, tb = doppler_transform(a), doppler_transform(b)
    ma, mb = doppler_mask(a), doppler_mask(b)
    assert np.array_equal(ta[ma & mb], tb[ma & mb])


def test_prepare_shapes_and_rgb_order():
    img, _ = with_signal(gray_image(), CDUS)
    p = PreprocessParams(input_size=64)
    g, d = prepare_pair(img, img, (10, 10, 120, 100), (10, 10, 120, 100), p)
    assert g.shape == d.shape == (64, 64, 3) and g.dtype == np.uint8
    # transformed Doppler: red is channel 0 in RGB
    red = (d[..., 0] > 200) & (d[..., 1] < 80) & (d[..., 2] < 80)
    assert red.any()
    assert prepare_gs(img, None, p).shape == (64, 64, 3)


@pytest.mark.parametrize("bad,msg", [
    (np.zeros((10, 10), np.uint8), "3-channel"),
    (np.zeros((10, 10, 4), np.uint8), "3-channel"),
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    ([[1, 2, 3]], "numpy"),
])
def test_bad_images_give_clear_errors(bad, msg):
    with pytest.raises(RatingEdgeError, match=msg):
        doppler_mask(bad)
    with pytest.raises(RatingEdgeError, match=msg):
        prepare_doppler(bad)


def test_roi_outside_image_is_an_error():
    with pytest.raises(RatingEdgeError, match="ROI"):
        crop_roi(gray_image(), (100, 100, 100, 100))
    with pytest.raises(RatingEdgeError, match="ROI"):
        crop_roi(gray_image(), (0, 0, 0, 10))


def test_check_batch_and_normalize():
    x = np.full((2, 64, 64, 3), 255, np.uint8)
    check_batch(x, 64, "gs")
    with pytest.raises(RatingEdgeError, match="uint8"):
        check_batch(x.astype(np.float32), 64, "gs")
    with pytest.raises(RatingEdgeError, match="shape"):
        check_batch(x, 32, "gs")
    n = normalize(x)
    assert n.shape == (2, 3, 64, 64) and n.dtype == np.float32
    assert np.allclose(n[0, 0, 0, 0], (1 - 0.485) / 0.229)


def test_params_roundtrip():
    p = PreprocessParams(input_size=96)
    assert PreprocessParams.from_dict(p.to_dict()) == p


def _plain_mask(img, p):
    """The Doppler rule written out plainly (numpy, float32 saturation, explicit component areas)."""
    mx, mn = img.max(axis=2).astype(np.int16), img.min(axis=2).astype(np.int16)
    chroma = mx - mn
    m = (chroma >= p.chroma_min) & (chroma.astype(np.float32) >= np.float32(p.saturation_min) * mx.astype(np.float32))
    if p.min_area > 1 and m.any():
        n, labels = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        areas = np.bincount(labels.ravel(), minlength=n)
        m &= areas[labels] >= p.min_area
    return m


@pytest.mark.parametrize("chroma_min,saturation_min,min_area", [(60, 0.45, 4), (0, 0.0, 1), (10, 0.1, 2),
                                                                 (200, 0.9, 9), (60, 1.5, 4), (255, 0.33, 4)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_mask_and_transform_equal_the_plain_rule(chroma_min, saturation_min, min_area, seed):
    """The LUT compare and per-channel painting are speed-ups only: the same pixels on every input."""
    from rating_edge.preprocess import DopplerParams

    rng = np.random.default_rng(seed)
    img, _ = with_signal(gray_image(seed=seed), CDUS + PDUS)
    # saturated colour next to near-threshold tints and lone specks, then JPEG fringes
    img[rng.random(img.shape[:2]) < 0.05] = rng.integers(0, 256, (3,), dtype=np.uint8)
    img = cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 60])[1], cv2.IMREAD_COLOR)
    noise = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    dp = DopplerParams(chroma_min, saturation_min, min_area)
    for im in (img, noise):
        m = _plain_mask(im, dp)
        assert np.array_equal(doppler_mask(im, dp), m)
        t = cv2.cvtColor(cv2.cvtColor(im, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        t[m] = (0, 0, 255)
        assert np.array_equal(doppler_transform(im, dp), t)
        p = PreprocessParams(input_size=32, doppler=dp)
        want = cv2.resize(t, (32, 32), interpolation=cv2.INTER_AREA)[:, :, ::-1]
        assert np.array_equal(prepare_doppler(im, None, p), want)
