"""The `rating-official` preprocessing profile: what the authors' published code feeds its networks.

Networks imported from the official checkpoints learnt this input, so it is reproduced operation for
operation (SSRSGJYD/RATING, datasets/GSDOPPLER_dataset.py and datasets/DOPPLER_dataset.py at test time,
util/augmentation.py ROICropResize and MaskedDoppler):

- ROI boxes are (left, top, right, bottom) clamped to the image (ROICropResize, policy "roi" /
  "roi_random" at test time); here they arrive as (x, y, w, h) and are converted.
- GS: Pillow `convert("L")`, crop, Pillow bilinear resize (antialiased when reducing), three equal
  channels.
- Doppler: crop the colour image, Pillow bilinear resize in RGB, then pixels whose 8-bit OpenCV HSV
  saturation exceeds 40 % of 255 become RGB (0, 0, 255), i.e. blue; others keep their colour.

Pillow does the resize (not OpenCV) because the two differ by a grey level on many pixels, and the
networks were trained on Pillow's output. numpy + OpenCV + Pillow only: the runtime stays torch-free.
"""
from __future__ import annotations

import cv2
import numpy as np

from rating_edge.errors import RatingEdgeError

PROFILE = "rating-official"
SATURATION_CUT = 40 / 100 * 255  # MaskedDoppler: mask = S > 40 / 100 * 255
BLUE_RGB = (0, 0, 255)


def _pil():
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - declared in the runtime extra
        raise RatingEdgeError("the rating-official preprocessing profile needs Pillow "
                              "(pip install 'rating-edge[runtime]')") from None
    return Image


def clamp_box(shape, roi) -> tuple[int, int, int, int]:
    """(x, y, w, h) or None -> (left, top, right, bottom) clamped to the image, as the official crop."""
    H, W = shape[:2]
    if roi is None:
        return 0, 0, W, H
    x, y, w, h = (int(v) for v in roi)
    left, top, right, bottom = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if right <= left or bottom <= top:
        raise RatingEdgeError(f"ROI {[x, y, w, h]} does not overlap the {W}x{H} image")
    return left, top, right, bottom


def _crop(image_bgr: np.ndarray, roi) -> np.ndarray:
    left, top, right, bottom = clamp_box(image_bgr.shape, roi)
    return image_bgr[top:bottom, left:right]


def official_gs(image_bgr: np.ndarray, roi, size: int) -> np.ndarray:
    """GS network input, uint8 RGB (S, S, 3) with R = G = B."""
    Image = _pil()
    rgb = np.ascontiguousarray(_crop(image_bgr, roi)[:, :, ::-1])
    # convert("L") is per pixel, so converting the crop equals cropping the converted image
    gray = np.asarray(Image.fromarray(rgb).convert("L").resize((size, size), Image.BILINEAR))
    return np.repeat(gray[:, :, None], 3, axis=2)


def paint_blue(rgb: np.ndarray) -> np.ndarray:
    """MaskedDoppler on a resized RGB image (in place and returned). OpenCV's BGR2HSV is applied to the
    RGB array as in the official code; saturation does not depend on channel order."""
    sat = cv2.cvtColor(rgb, cv2.COLOR_BGR2HSV)[:, :, 1]
    rgb[sat > SATURATION_CUT] = BLUE_RGB
    return rgb


def official_doppler(image_bgr: np.ndarray, roi, size: int) -> np.ndarray:
    """Doppler network input, uint8 RGB (S, S, 3): resized colour crop with saturated pixels blue."""
    Image = _pil()
    rgb = np.ascontiguousarray(_crop(image_bgr, roi)[:, :, ::-1])
    out = np.array(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))  # a writable copy
    return paint_blue(out)
