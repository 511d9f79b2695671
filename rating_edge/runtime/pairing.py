"""Pairing GS and Doppler images of the same joint section.

RATING scores a (GS, Doppler) pair of one section. A single-layout scanner shows them one after the
other, so a Doppler frame is paired with the most recent GS frame, but only if that GS frame is recent
and shows the same anatomy: the gray structure of the two, downsampled to a coarse grid (which averages
speckle away) with the Doppler-coloured cells left out, must correlate. GS frames that stop resembling
the previous ones start a new section, which also resets temporal aggregation. In dual layout the two
halves of one frame are the pair.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from rating_edge.runtime.layout import FrameLayout, doppler_signal, roi_in_area

GRID = 32
STEP = 4
MAX_SHIFT = 6  # cells of GRID: about a fifth of the image width
# Same-section images correlate >= 0.8 on the phantom, different sections <= 0.67 (measured over seeds)
MIN_SIMILARITY = 0.72


@dataclass
class Pair:
    """A scoreable pair: image-area crops (BGR) and the ROI inside each crop."""

    frame_gs: int
    frame_doppler: int
    t: float
    section: int
    gs_bgr: np.ndarray
    doppler_bgr: np.ndarray
    roi_gs: tuple | None
    roi_doppler: tuple | None
    area_gs: tuple  # boxes in frame pixels, for drawing
    area_doppler: tuple
    similarity: float
    t_capture: float = 0.0
    layout: str = "single"
    # where each crop's first pixel lies in its image area: (0, 0) but for a detached pair, which keeps
    # only the ROI's pixels
    at_gs: tuple = (0, 0)
    at_doppler: tuple = (0, 0)

    def area_roi(self, mode: str) -> tuple | None:
        """The ROI of the GS or Doppler image in image-area pixels (what the overlay outlines)."""
        roi, (ax, ay) = (self.roi_doppler, self.at_doppler) if mode == "doppler" else (self.roi_gs, self.at_gs)
        return None if roi is None else (roi[0] + ax, roi[1] + ay, roi[2], roi[3])

    def detached(self, frame: np.ndarray) -> "Pair":
        """This pair with its own copies of any crop that is a view of `frame`, so the overlay can be
        drawn on that frame in place while the worker still reads the crops. Only the ROI's pixels are
        copied (preprocessing reads nothing else): a quarter of an image area, on the frame path of
        every pair."""
        changes = {}
        for name in ("gs", "doppler"):
            crop, roi = getattr(self, f"{name}_bgr"), getattr(self, f"roi_{name}")
            if crop is None or not np.may_share_memory(crop, frame):
                continue
            x, y, w, h = (int(v) for v in roi) if roi is not None else (0, 0, 0, 0)
            if roi is None or w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > crop.shape[1] or y + h > crop.shape[0]:
                changes[f"{name}_bgr"] = np.array(crop)  # whole (an ROI outside stays the scorer's error)
                continue
            ax, ay = getattr(self, f"at_{name}")
            changes.update({f"{name}_bgr": np.array(crop[y:y + h, x:x + w]), f"roi_{name}": (0, 0, w, h),
                            f"at_{name}": (ax + x, ay + y)})
        return dataclasses.replace(self, **changes) if changes else self


def structure(area_bgr: np.ndarray, dop_mask=None) -> tuple[np.ndarray, np.ndarray]:
    """Coarse gray structure of an image area and which cells are valid (not Doppler-coloured).

    Computed from every STEP-th pixel: a 24x24 grid of a 1000-pixel-wide area needs no more."""
    return gray_structure(cv2.cvtColor(area_bgr[::STEP, ::STEP], cv2.COLOR_BGR2GRAY), dop_mask)


def gray_structure(gray: np.ndarray, dop_mask=None) -> tuple[np.ndarray, np.ndarray]:
    """`structure` from the area's gray image at every STEP-th pixel."""
    if dop_mask is not None and dop_mask.shape != gray.shape:
        dop_mask = cv2.resize(dop_mask.astype(np.uint8), (gray.shape[1], gray.shape[0]),
                              interpolation=cv2.INTER_NEAREST).astype(bool)
    g = cv2.resize(gray, (GRID, GRID), interpolation=cv2.INTER_AREA).astype(np.float32)
    if dop_mask is None:
        return g, np.ones((GRID, GRID), bool)
    m = cv2.resize(dop_mask.astype(np.float32), (GRID, GRID), interpolation=cv2.INTER_AREA)
    return g, m < 0.02


def _rows_centred(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Remove each row's mean (over valid cells): depth-dependent brightness (skin bright, bone shadow
    dark) is common to every finger joint and would make any two sections look alike."""
    n = np.maximum(v.sum(axis=1, keepdims=True), 1)
    return np.where(v, g - (g * v).sum(axis=1, keepdims=True) / n, 0.0)


def similarity(a, b, max_shift: int = MAX_SHIFT) -> float:
    """Best Pearson correlation of two coarse structures over lateral shifts of up to `max_shift` cells.

    The probe slides along the finger while the sonographer switches modes, so the same section may be
    shifted sideways; a different section has other depths and shapes and stays low at every shift.
    All shifts at once from per-shift sums (one-pass Pearson in float64): it runs on every Doppler
    frame, and the loop over shifts cost a tenth of the runtime's per-frame budget."""
    ga, va = a
    gb, vb = b
    ca, cb = _rows_centred(ga, va), _rows_centred(gb, vb)
    rows, n = ga.shape
    k = max(0, min(int(max_shift), n - 1))
    # b's columns shifted by s (s = -k..k) against a's: cell (r, j) of shift s pairs a[r, j] with
    # b[r, j - s]; padding marks the cells that fall off either edge invalid
    bp = np.zeros((rows, n + 2 * k)); bp[:, k:k + n] = cb
    vp = np.zeros((rows, n + 2 * k), bool); vp[:, k:k + n] = vb
    idx = (k - np.arange(-k, k + 1))[:, None] + np.arange(n)[None, :]  # (shifts, n) columns of bp
    y = bp[:, idx].transpose(1, 0, 2)  # (shifts, rows, n)
    v = vp[:, idx].transpose(1, 0, 2) & va[None]
    x = np.where(v, ca[None].astype(np.float64), 0.0)
    y = np.where(v, y, 0.0)
    cnt = v.sum(axis=(1, 2))
    ok = cnt >= GRID * GRID // 4
    if not ok.any():
        return 0.0
    c = np.maximum(cnt, 1)
    sx, sy = x.sum(axis=(1, 2)), y.sum(axis=(1, 2))
    sxy = (x * y).sum(axis=(1, 2)) - sx * sy / c
    sxx = (x * x).sum(axis=(1, 2)) - sx * sx / c
    syy = (y * y).sum(axis=(1, 2)) - sy * sy / c
    den = np.sqrt(np.maximum(sxx, 0.0) * np.maximum(syy, 0.0))
    good = ok & (den > 1e-6)
    if not good.any():
        return 0.0
    return max(0.0, float(np.max(sxy[good] / den[good])))


def _crop(img, box):
    x, y, w, h = box
    return img[y:y + h, x:x + w]


def _subsampled(lo: FrameLayout, box):
    """The area at every STEP-th pixel (BGR, gray), cut from the frame that layout detection already
    subsampled, when that frame is exactly every STEP-th pixel (1920x1080 is; 1280x720 is detected at
    step 2) and the box lies on that grid; else None, and the area is subsampled again."""
    W, H = lo.size
    x, y, w, h = box
    if lo.small is None or lo.step != STEP or W % STEP or H % STEP or (x | y | w | h) % STEP:
        return None
    sl = (slice(y // STEP, (y + h) // STEP), slice(x // STEP, (x + w) // STEP))
    return lo.small[sl], lo.gray[sl]


class Pairer:
    """Stateful pairing over the frame stream. `update` returns (Pair or None, state text)."""

    def __init__(self, max_age_s: float = 3.0, min_similarity: float = MIN_SIMILARITY, roi="doppler_box", doppler_params=None):
        from rating_edge.preprocess import DopplerParams

        self.max_age_s = max_age_s
        self.min_similarity = min_similarity
        self.roi = roi
        self.dp = doppler_params or DopplerParams()
        self.section = 0
        self._gs = None  # (frame index, t, crop, structure, area)
        self._section_ref = None  # structure of the first GS image of the current section
        self._gs_resized = None  # ((GS frame index, Doppler crop shape), the GS image at that size)

    def _new_gs(self, index, t, crop, area, sub=None):
        """Track sections: a GS image unlike the first GS image of the current section starts a new one.

        Comparing with the section's first image, not the previous frame, matters: probe motion between
        sections is gradual, so consecutive frames always look alike."""
        st = structure(crop) if sub is None else gray_structure(sub[1])
        if self._section_ref is None or similarity(st, self._section_ref) < self.min_similarity:
            self.section += 1
            self._section_ref = st
        self._gs = (index, t, crop, st, area)

    def detach(self, frame: np.ndarray) -> None:
        """Copy the held GS image if it is a view of `frame` (the overlay is about to be drawn on that
        frame in place, and the GS image must stay as the scanner showed it for later pairs)."""
        if self._gs is not None and np.may_share_memory(self._gs[2], frame):
            self._gs = (self._gs[0], self._gs[1], self._gs[2].copy(), *self._gs[3:])

    def update(self, index: int, t: float, frame_bgr: np.ndarray, lo: FrameLayout, t_capture: float = 0.0):
        if not lo.signal:
            return None, "NO SIGNAL"
        if not lo.areas:
            return None, "no ultrasound image found"
        if lo.frozen:
            return None, "frozen"
        if lo.layout == "dual" and len(lo.areas) == 2:
            return self._dual(index, t, frame_bgr, lo, t_capture)
        area = lo.areas[0]
        crop = _crop(frame_bgr, area.box)
        sub = _subsampled(lo, area.box)
        if area.mode == "gs":
            self._new_gs(index, t, crop, area, sub)
            return None, "GS: waiting for Doppler"
        if self._gs is None:
            return None, "Doppler: waiting for a GS image of this section"
        gi, gt, gcrop, gst, garea = self._gs
        if t - gt > self.max_age_s:
            return None, f"Doppler: last GS image is {t - gt:.1f} s old; show GS of this section"
        if sub is None:
            sim = similarity(structure(crop, doppler_signal(crop, self.dp, step=STEP)), gst)
        else:  # the same pixels, already subsampled
            sim = similarity(gray_structure(sub[1], doppler_signal(sub[0], self.dp, step=1)), gst)
        if sim < self.min_similarity:
            return None, "Doppler: waiting for a GS image of this section"
        if gcrop.shape != crop.shape:
            # the image area was found a few pixels larger or smaller than on the GS frame: bring the GS
            # image to the Doppler image's size, once per size (every later Doppler frame needs the same)
            key = (gi, crop.shape)
            if self._gs_resized is None or self._gs_resized[0] != key:
                self._gs_resized = (key, cv2.resize(gcrop, (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_AREA))
            gcrop = self._gs_resized[1]
        roi = roi_in_area(area, self.roi)
        pair = Pair(gi, index, t, self.section, gcrop, crop, roi, roi, area.box, area.box, sim, t_capture, "single")
        return pair, "paired"

    def _dual(self, index, t, frame_bgr, lo, t_capture):
        a, b = lo.areas
        modes = (a.mode, b.mode)
        if modes.count("doppler") != 1:
            return None, "dual: waiting for one GS and one Doppler half"
        g, d = (a, b) if a.mode == "gs" else (b, a)
        gcrop, dcrop = _crop(frame_bgr, g.box), _crop(frame_bgr, d.box)
        self._new_gs(index, t, gcrop, g, _subsampled(lo, g.box))
        if gcrop.shape != dcrop.shape:
            gcrop = cv2.resize(gcrop, (dcrop.shape[1], dcrop.shape[0]), interpolation=cv2.INTER_AREA)
        roi = roi_in_area(d, self.roi)
        return Pair(index, index, t, self.section, gcrop, dcrop, roi, roi, g.box, d.box, 1.0, t_capture,
                    "dual"), "paired (dual)"
