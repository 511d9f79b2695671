"""The one preprocessing implementation (numpy + OpenCV), used by training, calibration and runtime.

What an engine sees must be exactly what training saw, so every path that turns a scanner image into
network input goes through `prepare_gs` / `prepare_doppler`. Engines take the uint8 RGB result; the
float cast and ImageNet normalisation happen inside the graph (and in `normalize` for PyTorch).

Doppler transform: Doppler signal (coloured pixels) becomes pure red on the gray image, which makes
colour Doppler (red/blue maps) and power Doppler (orange/yellow maps) look alike to the networks.

Two profiles, recorded in every package (`PreprocessParams.profile`): "rating-edge" (the above, for
networks trained here) and "rating-official" (the authors' published operations, blue paint and
Pillow resize, for networks imported from their checkpoints: rating_edge.preprocess_official).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from rating_edge.errors import RatingEdgeError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RED_BGR = (0, 0, 255)
PROFILES = ("rating-edge", "rating-official")


@dataclass(frozen=True)
class DopplerParams:
    """Thresholds of the Doppler segmentation.

    Chroma (max - min channel) separates colour from gray; saturation (chroma / max) rejects dim
    tinted gray; small components are JPEG chroma fringes around gray edges, not flow.
    """

    chroma_min: int = 60
    saturation_min: float = 0.45
    min_area: int = 4


@dataclass(frozen=True)
class PreprocessParams:
    input_size: int = 224
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    interpolation: str = "area"
    doppler: DopplerParams = field(default_factory=DopplerParams)
    profile: str = "rating-edge"

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise RatingEdgeError(f"unknown preprocessing profile {self.profile!r}; one of {', '.join(PROFILES)}")

    @classmethod
    def official(cls, input_size: int = 224) -> "PreprocessParams":
        """The authors' operations (Pillow bilinear resize, blue paint on saturated pixels)."""
        return cls(input_size=input_size, interpolation="pil-bilinear", profile="rating-official")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"] = list(self.mean)
        d["std"] = list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessParams":
        d = dict(d)
        dop = DopplerParams(**d.pop("doppler", {}))
        return cls(
            input_size=int(d.get("input_size", 224)),
            mean=tuple(float(x) for x in d.get("mean", IMAGENET_MEAN)),
            std=tuple(float(x) for x in d.get("std", IMAGENET_STD)),
            interpolation=d.get("interpolation", "area"),
            doppler=dop,
            profile=str(d.get("profile", "rating-edge")),
        )


_INTERP = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}


def check_image(image, name: str = "image") -> np.ndarray:
    """Reject anything that is not an HxWx3 uint8 colour image, with a message that says what it got."""
    if not isinstance(image, np.ndarray):
        raise RatingEdgeError(f"{name}: expected a numpy uint8 array of shape (H, W, 3), got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise RatingEdgeError(f"{name}: expected dtype uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise RatingEdgeError(f"{name}: expected a 3-channel colour image of shape (H, W, 3), got shape {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise RatingEdgeError(f"{name}: image of shape {image.shape} is too small")
    return image


def crop_roi(image: np.ndarray, roi=None, name: str = "image") -> np.ndarray:
    """Crop (x, y, w, h); None means the whole image. An ROI outside the image is an error, not a clip."""
    check_image(image, name)
    if roi is None:
        return image
    x, y, w, h = (int(v) for v in roi)
    H, W = image.shape[:2]
    if w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > W or y + h > H:
        raise RatingEdgeError(f"{name}: ROI {[x, y, w, h]} does not lie inside the {W}x{H} image")
    return image[y:y + h, x:x + w]


def _chroma_thresholds(p: DopplerParams):
    """Per channel-maximum value, the least chroma that passes both colour tests, as a uint8 LUT.

    `chroma >= chroma_min and chroma >= saturation_min * max` (float32, as first written) depends on
    the pair (chroma, max) only through this threshold, so one table lookup and one compare replace the
    float image. None when some threshold is out of uint8 range (then nothing at that max can pass,
    and the float test is used).
    """
    key = (p.chroma_min, float(p.saturation_min))
    lut = _LUTS.get(key)
    if lut is None and key not in _LUTS:
        sat = np.float32(p.saturation_min) * np.arange(256, dtype=np.float32)
        t = np.maximum(np.ceil(sat.astype(np.float64)), p.chroma_min)
        lut = t.astype(np.uint8).reshape(1, 256) if t.max() <= 255 and t.min() >= 0 else None
        _LUTS[key] = lut
    return lut


_LUTS: dict = {}


def max_and_chroma(image_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the largest channel and the chroma (largest minus smallest channel), uint8.

    OpenCV max/min over the split channels: identical values, ~15x faster than numpy's axis=2 reduce
    (and split is 3x slower on a strided ROI view than on a contiguous copy of it)."""
    b, g, r = cv2.split(np.ascontiguousarray(image_bgr))
    mx = cv2.max(cv2.max(b, g), r)
    return mx, cv2.subtract(mx, cv2.min(cv2.min(b, g), r))  # mx >= mn, so no saturation


def colour_mask_u8(image_bgr: np.ndarray, p: DopplerParams) -> np.ndarray:
    """Pixels that pass the chroma and saturation tests (uint8 0/255), before the speck filter; the
    runtime's mode detection applies the same rule to subsampled frames."""
    mx, chroma = max_and_chroma(image_bgr)
    lut = _chroma_thresholds(p)
    if lut is not None:
        return cv2.compare(chroma, cv2.LUT(mx, lut), cv2.CMP_GE)
    # saturation = chroma / max >= s  <=>  chroma >= s * max (no division)
    ok = (chroma >= p.chroma_min) & (chroma.astype(np.float32) >= p.saturation_min * mx.astype(np.float32))
    return ok.astype(np.uint8) * np.uint8(255)


def doppler_mask_u8(image_bgr: np.ndarray, params: DopplerParams | None = None) -> np.ndarray:
    """`doppler_mask` as a uint8 0/255 image: the form OpenCV consumes, without a bool round trip."""
    p = params or DopplerParams()
    m8 = colour_mask_u8(check_image(image_bgr, "doppler image"), p)
    if p.min_area > 1 and cv2.countNonZero(m8):
        # components lie inside the bounding box of all signal pixels: label only that (flow is local)
        x, y, w, h = cv2.boundingRect(m8)
        sub = m8[y:y + h, x:x + w]
        # 16-bit labels are 3x faster; safe while the box cannot hold 65535 separate 8-connected
        # components (at most one per 2x2 block)
        ltype = cv2.CV_16U if ((h + 1) // 2) * ((w + 1) // 2) < 65535 else cv2.CV_32S
        n, labels, stats, _ = cv2.connectedComponentsWithStats(sub, connectivity=8, ltype=ltype)
        keep = stats[:, cv2.CC_STAT_AREA] >= p.min_area
        keep[0] = False
        if not keep[1:].all():  # relabelling costs as much as labelling: only when a speck must go
            sub[:] = (keep.astype(np.uint8) * np.uint8(255))[labels]
    return m8


def doppler_mask(image_bgr: np.ndarray, params: DopplerParams | None = None) -> np.ndarray:
    """Boolean mask of Doppler signal pixels (stable name).

    Gray pixels (R = G = B), white/gray text and lines have no chroma; JPEG chroma noise has low
    chroma or forms specks smaller than `min_area`, both rejected.
    """
    return doppler_mask_u8(image_bgr, params) > 0


def _red_planes(img: np.ndarray, m8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The red plane and the (equal) green and blue planes of `img` in gray with the mask pure red:
    the same pixels as a boolean-indexed assignment, several times faster on scanner-size crops."""
    gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return cv2.bitwise_or(gray, m8), cv2.bitwise_and(gray, cv2.bitwise_not(m8))


def doppler_transform(image_bgr: np.ndarray, params: DopplerParams | None = None, mask=None) -> np.ndarray:
    """Gray image with the Doppler signal painted pure red (BGR out), so CDUS and PDUS look alike."""
    img = check_image(image_bgr, "doppler image")
    if mask is None:
        m8 = doppler_mask_u8(img, params)
    elif mask.shape != img.shape[:2] or mask.dtype != bool:
        raise RatingEdgeError(f"doppler mask of shape {mask.shape}/{mask.dtype} does not fit image {img.shape[:2]}")
    else:
        m8 = mask.astype(np.uint8) * np.uint8(255)
    r, gb = _red_planes(img, m8)
    return cv2.merge([gb, gb, r])


def _resize(image: np.ndarray, size: int, interpolation: str) -> np.ndarray:
    if size < 8:
        raise RatingEdgeError(f"input size {size} is too small")
    interp = _INTERP.get(interpolation)
    if interp is None:
        raise RatingEdgeError(f"unknown interpolation {interpolation!r}; use one of {sorted(_INTERP)}")
    return cv2.resize(image, (size, size), interpolation=interp)


def _resize_rgb(image_bgr: np.ndarray, size: int, interpolation: str) -> np.ndarray:
    return np.ascontiguousarray(_resize(image_bgr, size, interpolation)[:, :, ::-1])


def prepare_gs(image_bgr: np.ndarray, roi=None, params: PreprocessParams | None = None) -> np.ndarray:
    """Scanner GS image (BGR) -> network input: uint8 RGB (S, S, 3)."""
    p = params or PreprocessParams()
    if p.profile == "rating-official":
        from rating_edge.preprocess_official import official_gs

        return official_gs(check_image(image_bgr, "GS image"), roi, p.input_size)
    return _resize_rgb(crop_roi(image_bgr, roi, "GS image"), p.input_size, p.interpolation)


def prepare_doppler(image_bgr: np.ndarray, roi=None, params: PreprocessParams | None = None) -> np.ndarray:
    """Scanner Doppler image (BGR) -> transformed network input: uint8 RGB (S, S, 3).

    The transform runs before the resize so thin vessels are segmented at full resolution.
    """
    p = params or PreprocessParams()
    if p.profile == "rating-official":
        from rating_edge.preprocess_official import official_doppler

        return official_doppler(check_image(image_bgr, "Doppler image"), roi, p.input_size)
    crop = crop_roi(image_bgr, roi, "Doppler image")
    # The resize treats channels independently, so resizing the red plane and the (equal) green/blue
    # plane once each and merging in RGB order equals resizing the BGR transform and flipping it, for
    # two thirds of the work
    r, gb = _red_planes(crop, doppler_mask_u8(crop, p.doppler))
    r, gb = _resize(r, p.input_size, p.interpolation), _resize(gb, p.input_size, p.interpolation)
    return cv2.merge([r, gb, gb])


def prepare_pair(gs_bgr, doppler_bgr, roi_gs=None, roi_doppler=None, params: PreprocessParams | None = None):
    """A (GS, Doppler) scanner pair -> the two uint8 RGB network inputs."""
    return prepare_gs(gs_bgr, roi_gs, params), prepare_doppler(doppler_bgr, roi_doppler, params)


def check_batch(x, size: int, name: str) -> np.ndarray:
    """Engine/reference inputs: uint8 RGB NHWC (B, S, S, 3)."""
    if not isinstance(x, np.ndarray):
        raise RatingEdgeError(f"{name}: expected a numpy array, got {type(x).__name__}")
    if x.dtype != np.uint8:
        raise RatingEdgeError(f"{name}: expected uint8 RGB NHWC input, got dtype {x.dtype}")
    if x.ndim != 4 or x.shape[1:] != (size, size, 3):
        raise RatingEdgeError(f"{name}: expected shape (B, {size}, {size}, 3), got {x.shape}")
    if x.shape[0] < 1:
        raise RatingEdgeError(f"{name}: empty batch")
    return x


def normalize(batch_rgb: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    """uint8 RGB NHWC -> float32 NCHW, ImageNet-normalised (the same arithmetic the graphs do)."""
    x = batch_rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
