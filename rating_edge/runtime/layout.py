"""Understanding the scanner screen: image areas, layout, GS/Doppler mode, frozen, no signal.

The runtime sees the scanner's whole video output (UI text, logos, colour bars, markers around the
ultrasound picture), so it first finds the picture: large regions of content standing out from the
screen background, with thin things (text strokes, colour bars, lines, markers) removed by a
morphological opening. Mode comes from Doppler signal inside each picture: saturated colour in compact
blobs; coloured strokes (text, markers, box outlines) and JPEG chroma specks are opened away first.
A scanner profile (JSON/YAML) pins the areas, UI regions and ROI when automatic detection is not wanted.

Detection works on downsampled copies so a 1920x1080 frame costs a few milliseconds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from rating_edge.errors import RatingEdgeError
from rating_edge.preprocess import DopplerParams, check_image, colour_mask_u8, max_and_chroma

DETECT_WIDTH = 480  # working width of area detection


@dataclass
class LayoutParams:
    """Thresholds of screen understanding (all overridable in a profile under "detect")."""

    texture_density: float = 0.5  # share of textured pixels (5x5) that marks ultrasound
    col_rel: float = 0.8  # a column belongs to an area when its texture share is >= this x the median
    row_rel: float = 0.6  # ... rows likewise (near-field rows are darker and smoother)
    bg_delta: int = 1  # gray distance from the local screen background that is not background
    off_bg_share: float = 0.4  # rows with this share off the background belong to the area (shadows)
    open_frac: float = 1 / 50  # opening kernel as a fraction of the working width: removes text, bars
    min_area_frac: float = 0.04  # an image area covers at least this much of the frame
    min_w_frac: float = 0.12
    min_h_frac: float = 0.2
    doppler_min_fraction: float = 0.002  # Doppler signal share of an area that makes it a Doppler image
    doppler_min_pixels: int = 12  # ... and at least this many signal pixels at half resolution
    frozen_delta: float = 0.3  # mean |difference| (gray levels) under which consecutive images freeze
    unfreeze_delta: float = 4.0  # a frozen image thaws when it moves this far from the held image ...
    unfreeze_share: float = 0.01  # ... or this share of its pixels change by more than 20 levels
    box_ridge: int = 10  # a Doppler-box outline pixel is this much brighter than pixels 2 px either side
    box_min_gray: int = 100  # box outlines are drawn light gray; dim noise dots in shadows are not outline
    box_column_share: float = 0.45  # share of an area's rows on one outline column (speckle stays < 0.3)
    no_signal_std: float = 3.0
    redetect_every: int = 30  # find image areas at least every N frames (a screen layout changes rarely) ...
    redetect_change: float = 6.0  # ... and as soon as the screen outside them changes by this mean gray level


@dataclass
class Area:
    box: tuple  # x, y, w, h in frame pixels
    mode: str = "gs"  # "gs" | "doppler"
    doppler_box: tuple | None = None
    doppler_fraction: float | None = 0.0  # None: not measured (a detector made with fractions=False)

    def to_json(self) -> dict:
        return {"box": [int(v) for v in self.box], "mode": self.mode,
                "doppler_box": None if self.doppler_box is None else [int(v) for v in self.doppler_box],
                "doppler_fraction": None if self.doppler_fraction is None else round(float(self.doppler_fraction), 6)}


@dataclass
class FrameLayout:
    layout: str  # "single" | "dual"
    areas: list
    frozen: bool = False
    signal: bool = True
    size: tuple = (0, 0)  # W, H
    # the frame at every `step`-th pixel (BGR and gray) as detection saw it, for pairing to reuse
    small: np.ndarray | None = field(default=None, repr=False, compare=False)
    gray: np.ndarray | None = field(default=None, repr=False, compare=False)
    step: int = 1

    def to_json(self) -> dict:
        return {"layout": self.layout, "areas": [a.to_json() for a in self.areas],
                "frozen": bool(self.frozen), "signal": bool(self.signal)}

    @property
    def mode(self) -> str:
        """Frame-level mode for counting: no_signal, frozen, doppler (any area) or gs."""
        if not self.signal:
            return "no_signal"
        if self.frozen:
            return "frozen"
        if any(a.mode == "doppler" for a in self.areas):
            return "doppler"
        return "gs"


@dataclass
class Profile:
    """A scanner profile: what a given scanner/preset puts where.

    areas: fixed image areas [x, y, w, h] (None = detect every frame); ui_regions: rectangles whose
    pixels never count (logos, coloured banners inside detected regions); roi: "doppler_box" (follow
    the colour box), "area" (whole image area) or [x, y, w, h] relative to the area; layout: "auto",
    "single" or "dual"; frame_size: the [W, H] the coordinates refer to (scaled on resolution change).
    """

    name: str = "auto"
    frame_size: tuple | None = None
    layout: str = "auto"
    areas: list | None = None
    ui_regions: list = field(default_factory=list)
    roi: object = "doppler_box"
    detect: LayoutParams = field(default_factory=LayoutParams)
    doppler: DopplerParams | None = None

    def to_dict(self) -> dict:
        d = {"name": self.name, "frame_size": list(self.frame_size) if self.frame_size else None,
             "layout": self.layout, "areas": [list(map(int, a)) for a in self.areas] if self.areas else None,
             "ui_regions": [list(map(int, r)) for r in self.ui_regions], "roi": self.roi,
             "detect": dict(self.detect.__dict__)}
        if self.doppler is not None:
            d["doppler"] = dict(self.doppler.__dict__)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Profile":
        d = dict(d or {})
        lay = d.get("layout", "auto")
        if lay not in ("auto", "single", "dual"):
            raise RatingEdgeError(f"profile: layout must be auto, single or dual, not {lay!r}")
        roi = d.get("roi", "doppler_box")
        if not (roi in ("doppler_box", "area") or (isinstance(roi, (list, tuple)) and len(roi) == 4)):
            raise RatingEdgeError(f"profile: roi must be 'doppler_box', 'area' or [x, y, w, h]; got {roi!r}")
        from rating_edge.manifest import validate
        from rating_edge.schemas import PROFILE

        validate(d, PROFILE, "profile")
        areas = d.get("areas")
        fs = d.get("frame_size")
        for a in areas or []:
            if a[0] < 0 or a[1] < 0 or a[2] <= 0 or a[3] <= 0:
                raise RatingEdgeError(f"profile: area {a!r} is not [x, y, w, h] with x, y >= 0 and positive size")
            if fs and (a[0] + a[2] > fs[0] or a[1] + a[3] > fs[1]):
                raise RatingEdgeError(f"profile: area {a!r} does not lie inside the frame_size {list(fs)}")
        if isinstance(roi, (list, tuple)) and (roi[2] <= 0 or roi[3] <= 0 or roi[0] < 0 or roi[1] < 0):
            raise RatingEdgeError(f"profile: roi {list(roi)!r} is not [x, y, w, h] with x, y >= 0 and positive size")
        try:
            detect = LayoutParams(**d.get("detect", {}))
            dop = DopplerParams(**d["doppler"]) if d.get("doppler") else None
        except TypeError as e:
            raise RatingEdgeError(f"profile: unknown setting ({e})") from None
        if areas and not fs:
            raise RatingEdgeError("profile: fixed areas need frame_size [W, H] (the resolution they refer to)")
        return cls(name=str(d.get("name", "profile")), frame_size=tuple(fs) if fs else None, layout=lay,
                   areas=[tuple(a) for a in areas] if areas else None,
                   ui_regions=[tuple(r) for r in d.get("ui_regions", [])], roi=roi, detect=detect, doppler=dop)

    def save(self, path) -> Path:
        path = Path(path)
        d = self.to_dict()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            path.write_text(yaml.safe_dump(d, sort_keys=False))
        else:
            path.write_text(json.dumps(d, indent=2))
        return path


PROFILE_MAX_BYTES = 1 << 20  # a profile is a few hundred bytes


def load_profile(path) -> Profile:
    path = Path(path)
    if not path.is_file():
        raise RatingEdgeError(f"profile {path} does not exist; make one with `rating-edge profile detect`")
    from rating_edge.manifest import MAX_DEPTH, check_depth, flow_nesting, read_json

    if path.suffix.lower() not in (".yaml", ".yml"):
        d = read_json(path, "profile", max_bytes=PROFILE_MAX_BYTES)
    else:
        import yaml

        if path.stat().st_size > PROFILE_MAX_BYTES:
            raise RatingEdgeError(f"profile {path}: too large for a profile (limit {PROFILE_MAX_BYTES} bytes)")
        try:
            text = path.read_bytes().decode("utf-8")
            if flow_nesting(text) > MAX_DEPTH:  # PyYAML takes seconds to reach its recursion limit
                raise RatingEdgeError(f"profile {path}: nested deeper than {MAX_DEPTH} levels")
            d = yaml.safe_load(text)
        except UnicodeDecodeError:
            raise RatingEdgeError(f"profile {path}: not a text file") from None
        except RatingEdgeError:
            raise
        except RecursionError:
            raise RatingEdgeError(f"profile {path}: nested too deeply") from None
        except Exception as e:  # noqa: BLE001 - yaml's errors
            raise RatingEdgeError(f"profile {path}: cannot parse ({str(e).splitlines()[0]})") from None
        check_depth(d, path, "profile")
    if not isinstance(d, dict):
        raise RatingEdgeError(f"profile {path}: expected a mapping at the top level")
    try:
        return Profile.from_dict(d)
    except RatingEdgeError as e:  # name the file: "profile: areas[0]: ..." -> "profile p.yaml: areas[0]: ..."
        raise RatingEdgeError(f"profile {path}:{str(e).split(':', 1)[1]}") from None


def _scale_box(box, sx, sy):
    x, y, w, h = box
    return (int(round(x * sx)), int(round(y * sy)), int(round(w * sx)), int(round(h * sy)))


def no_signal(small_gray: np.ndarray, p: LayoutParams) -> bool:
    """A black/blue capture-card screen: nearly every pixel has the most common gray level (a 'NO
    SIGNAL' caption is a small share)."""
    hist = cv2.calcHist([small_gray], [0], None, [256], [0, 256]).ravel()
    m = int(hist.argmax())
    return bool(hist[max(0, m - 20):m + 21].sum() >= 0.99 * small_gray.size)


def _runs(profile: np.ndarray, thr: float, min_len: int) -> list:
    """[start, end) runs where profile > thr, at least min_len long."""
    on = np.concatenate([[False], profile > thr, [False]])
    d = np.diff(on.astype(np.int8))
    starts, ends = np.nonzero(d == 1)[0], np.nonzero(d == -1)[0]
    return [(int(a), int(b)) for a, b in zip(starts, ends) if b - a >= min_len]


def texture_map(small_gray: np.ndarray) -> np.ndarray:
    """Pixels that differ from their 3x3 mean: dense in ultrasound speckle (and its noise floor, even in
    dark regions), absent from flat UI fills, sparse around text and lines."""
    return cv2.absdiff(small_gray, cv2.blur(small_gray, (3, 3))) >= 2


def find_image_areas(small_gray: np.ndarray, p: LayoutParams, ui_mask=None, small_bgr=None) -> list:
    """Image areas in working (downsampled) pixels.

    Dense-texture regions survive an opening that removes text, bars, scales and markers; each
    region's exact edges come from column/row texture profiles, which also split side-by-side areas
    that the smoothing joined across their narrow gap.
    """
    h, w = small_gray.shape
    T = texture_map(small_gray)
    if small_bgr is not None:  # Doppler colour is picture content, however smooth (large confluent flow)
        T |= max_and_chroma(small_bgr)[1] >= 40
    if ui_mask is not None:
        T &= ~ui_mask
    Tf = T.astype(np.float32)
    dense = (cv2.blur(Tf, (5, 5)) > p.texture_density).astype(np.uint8)
    k = max(3, int(round(w * p.open_frac)) | 1)
    opened = cv2.morphologyEx(dense, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    min_w, min_h = p.min_w_frac * w, p.min_h_frac * h
    out = []
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if area < p.min_area_frac * w * h or bw < min_w or bh < min_h:
            continue
        x0, x1 = max(0, x - k), min(w, x + bw + k)
        band = Tf[y:y + bh, x:x + bw].mean(axis=1)  # densest rows (tissue): shadows do not thin the columns
        band_rows = np.nonzero(band >= p.col_rel * float(np.median(band)))[0] + y
        cols = Tf[band_rows, x0:x1].mean(axis=0)
        for cs, ce in _runs(cols, p.col_rel * float(np.median(cols[x - x0:x - x0 + bw])), int(min_w)):
            ax0, ax1 = x0 + cs, x0 + ce
            # rows: textured, or (dark acoustic shadows) off the screen background beside the area
            strips = [small_gray[:, max(ax0 - 4, 0):max(ax0 - 1, 0)], small_gray[:, ax1 + 1:ax1 + 4]]
            side = np.concatenate([s_.ravel() for s_ in strips if s_.size])
            bg = int(np.median(side)) if side.size else 0
            off_bg = (np.abs(small_gray[:, ax0:ax1].astype(np.int16) - bg) >= p.bg_delta).mean(axis=1)
            tex = Tf[:, ax0:ax1].mean(axis=1)
            ok = (tex >= p.row_rel * float(np.median(tex[y:y + bh]))) | (off_bg >= p.off_bg_share)
            rr = _runs(ok.astype(np.float32), 0.5, int(min_h))
            if not rr:
                continue
            rs, re_ = max(rr, key=lambda r: min(r[1], y + bh) - max(r[0], y))
            box = (ax0, rs, ax1 - ax0, re_ - rs)
            if box[2] * box[3] >= p.min_area_frac * w * h:
                out.append(box)
    out.sort(key=lambda b: -b[2] * b[3])
    return out


def decide_layout(boxes: list) -> str:
    if len(boxes) >= 2:
        a, b = sorted(boxes[:2], key=lambda r: r[0])
        overlap = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
        if a[0] + a[2] <= b[0] + 2 and overlap > 0.5 * min(a[3], b[3]) and min(a[3], b[3]) > 0.6 * max(a[3], b[3]):
            return "dual"
    return "single"


def doppler_signal(area_bgr: np.ndarray, dp: DopplerParams, step: int = 2) -> np.ndarray:
    """Doppler signal mask at 1/step resolution: saturated colour in compact blobs.

    The colour rule of preprocess.doppler_mask (chroma and saturation) on every step-th pixel; a 3x3
    opening removes strokes (coloured text, markers, box outlines) and chroma fringes.
    """
    return doppler_signal_u8(area_bgr, dp, step) > 0


def doppler_signal_u8(area_bgr: np.ndarray, dp: DopplerParams, step: int = 2) -> np.ndarray:
    """`doppler_signal` as uint8 0/255, for counting and boxing with OpenCV."""
    h, w = area_bgr.shape[:2]
    small = cv2.resize(area_bgr, ((w + step - 1) // step, (h + step - 1) // step),
                       interpolation=cv2.INTER_NEAREST) if step > 1 else area_bgr
    mask = colour_mask_u8(small, dp)
    if cv2.countNonZero(mask):
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _OPEN3)
    return mask


_OPEN3 = np.ones((3, 3), np.uint8)


def _edge_columns(share: np.ndarray, thr: float) -> list:
    """Centres of runs of columns whose ridge share exceeds thr (one per drawn line)."""
    return [(a + b - 1) // 2 for a, b in _runs(share, thr, 1)]


def doppler_box_outline(area_bgr: np.ndarray, p: LayoutParams, row_step: int = 3):
    """The Doppler colour box a scanner draws in Doppler mode, as (x, y, w, h) in area pixels, or None.

    Found from its vertical sides: thin bright columns that run straight over a large share of the
    area's rows (ultrasound has no long vertical ridges; its bright structures are horizontal or curved).
    The top and bottom come from where those columns' ridge pixels start and end.
    """
    gray = cv2.cvtColor(area_bgr[::row_step], cv2.COLOR_BGR2GRAY)
    H, W = gray.shape
    if W < 8 or H < 8:
        return None
    ridge = np.zeros_like(gray, dtype=bool)
    centre, side_max = gray[:, 2:-2], cv2.max(gray[:, :-4], gray[:, 4:])
    if p.box_ridge >= 1:  # uint8 saturating difference: the same test without an int16 image
        ridge[:, 2:-2] = cv2.bitwise_and(cv2.compare(cv2.subtract(centre, side_max), p.box_ridge, cv2.CMP_GE),
                                         cv2.compare(centre, p.box_min_gray, cv2.CMP_GE)) > 0
    else:
        ridge[:, 2:-2] = ((centre.astype(np.int16) - side_max) >= p.box_ridge) & (centre >= p.box_min_gray)
    share = cv2.reduce(ridge.view(np.uint8), 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[0] / H  # ridge rows per column
    share[:4] = 0  # the area's own border is not a box side
    share[-4:] = 0
    cols = _edge_columns(share, p.box_column_share)
    if not cols:
        return None
    # the sides' vertical extent: the longest stretch where the side columns are mostly ridge
    side = ridge[:, max(cols[0] - 1, 0):cols[0] + 2].any(axis=1).astype(np.float32)
    if len(cols) > 1:
        side = np.maximum(side, ridge[:, max(cols[-1] - 1, 0):cols[-1] + 2].any(axis=1))
    runs = _runs(np.convolve(side, np.ones(9, np.float32) / 9, mode="same"), 0.5, max(3, H // 8))
    if not runs:
        return None
    y0, y1 = max(runs, key=lambda r: r[1] - r[0])
    y1 -= 1
    x0 = cols[0] if len(cols) > 1 or cols[0] < W / 2 else 0
    x1 = cols[-1] if len(cols) > 1 or cols[0] >= W / 2 else W - 1
    if x1 - x0 < W // 6:
        return None
    y0, y1 = int(y0) * row_step, min(int(y1) * row_step + row_step, area_bgr.shape[0] - 1)
    return (int(x0), y0, int(x1 - x0 + 1), y1 - y0 + 1)


def _same_boxes(old, new, tol: int) -> bool:
    """Whether two area searches found the same areas up to `tol` pixels per edge. Keeping the earlier
    boxes then keeps crops, ROIs and pairing from shifting with search noise (a GS image held for a
    section would otherwise need resizing to every Doppler frame's slightly different area)."""
    return len(old) == len(new) and all(abs(a - b) <= tol for bo, bn in zip(old, new) for a, b in zip(bo, bn))


class LayoutDetector:
    """Per-frame screen understanding with a little state (the previous frame, for `frozen`)."""

    def __init__(self, profile: Profile | None = None, doppler: DopplerParams | None = None, fractions: bool = True):
        """`fractions=False`: an area whose Doppler box outline already says "Doppler" is not also
        segmented for its Doppler fraction (left None); the run loop needs only the mode and the box,
        and this is the most expensive step of a Doppler frame's detection."""
        self.fractions = fractions
        self.profile = profile or Profile()
        self.p = self.profile.detect
        self.dp = self.profile.doppler or doppler or DopplerParams()
        self._prev = None
        self._held = None
        self._prev_size = None
        self._boxes = None  # image areas found on a recent frame
        self._since = 0
        self._ref = self._outside = None  # small gray frame of the last area search, and the screen around the areas

    def reset(self):
        self._prev = self._held = self._boxes = None

    def _ui_mask(self, W, H, f):
        if not self.profile.ui_regions:
            return None
        sx, sy = self._profile_scale(W, H)
        hs, ws = int(np.ceil(H / f)), int(np.ceil(W / f))
        m = np.zeros((hs, ws), bool)
        for r in self.profile.ui_regions:
            x, y, w, h = _scale_box(r, sx / f, sy / f)
            m[max(y, 0):y + h, max(x, 0):x + w] = True
        return m

    def _profile_scale(self, W, H):
        fs = self.profile.frame_size
        if not fs:
            return 1.0, 1.0
        return W / fs[0], H / fs[1]

    def detect(self, frame_bgr: np.ndarray) -> FrameLayout:
        img = check_image(frame_bgr, "frame")
        H, W = img.shape[:2]
        if self._prev_size != (W, H):  # resolution change: nothing from before is comparable
            self._prev, self._prev_size, self._boxes = None, (W, H), None
        f = max(1, W // DETECT_WIDTH)
        # every f-th pixel, contiguous (nearest-neighbour keeps the speckle texture that area averaging
        # would smooth away)
        small = cv2.resize(img, ((W + f - 1) // f, (H + f - 1) // f), interpolation=cv2.INTER_NEAREST) if f > 1 else img
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        if no_signal(gray, self.p):
            self._boxes = None
            return FrameLayout("single", [], frozen=False, signal=False, size=(W, H))
        if self.profile.areas:
            sx, sy = self._profile_scale(W, H)
            boxes_full = [_scale_box(a, sx, sy) for a in self.profile.areas]
        elif self._boxes is not None and self._since < self.p.redetect_every - 1 and not self._screen_changed(gray):
            self._since += 1
            boxes_full = self._boxes
        else:
            boxes = find_image_areas(gray, self.p, self._ui_mask(W, H, f), small)
            boxes_full = [(x * f, y * f, min(w * f, W - x * f), min(h * f, H - y * f)) for x, y, w, h in boxes]
            if self._boxes is not None and _same_boxes(self._boxes, boxes_full, 2 * f):
                boxes_full = self._boxes  # the same picture found again a grid step off: keep it steady
            self._boxes, self._since = boxes_full, 0
            self._outside = np.full(gray.shape, 255, np.uint8)  # the screen around the areas, to watch
            for x, y, w, h in boxes:
                self._outside[y:y + h, x:x + w] = 0
            self._ref = gray
        if self.profile.layout == "auto":
            layout = decide_layout(boxes_full)
        else:
            layout = self.profile.layout
        boxes_full = sorted(boxes_full[:2] if layout == "dual" else boxes_full[:1], key=lambda b: b[0])
        areas = [self._area(img, b) for b in boxes_full]
        frozen = self._frozen(gray, boxes_full, f)
        return FrameLayout(layout, areas, frozen=frozen, signal=True, size=(W, H), small=small, gray=gray, step=f)

    def _screen_changed(self, gray) -> bool:
        """The screen around the image areas changed since they were found (a second image appeared, the
        picture grew, another preset): look again now rather than at the next periodic search. Scanner UI
        around the picture is static but for a clock, so a mean change of a few gray levels is a new layout."""
        if self._ref is None or self._ref.shape != gray.shape or not cv2.countNonZero(self._outside):
            return True
        return cv2.mean(cv2.absdiff(gray, self._ref), self._outside)[0] >= self.p.redetect_change

    def _area(self, img, box) -> Area:
        """Mode of one image area: Doppler when it holds Doppler colour or the Doppler box outline (a
        scanner in Doppler mode draws the box even when there is no flow to colour)."""
        x, y, w, h = box
        crop = img[y:y + h, x:x + w]
        outline = doppler_box_outline(crop, self.p)
        if outline is not None and not self.fractions:
            bx, by, bw, bh = outline
            return Area(box, "doppler", (x + bx, y + by, bw, bh), None)
        step = 2
        m = doppler_signal_u8(crop, self.dp, step)
        if self.profile.ui_regions:
            sx, sy = self._profile_scale(*img.shape[1::-1])
            for r in self.profile.ui_regions:
                rx, ry, rw, rh = _scale_box(r, sx, sy)
                x0, y0 = max(rx - x, 0) // step, max(ry - y, 0) // step
                x1, y1 = max(rx + rw - x, 0) // step + 1, max(ry + rh - y, 0) // step + 1
                m[y0:y1, x0:x1] = 0
        count = cv2.countNonZero(m)
        frac = count / float(m.size)
        colour = count >= self.p.doppler_min_pixels and frac >= self.p.doppler_min_fraction
        if outline is not None:
            bx, by, bw, bh = outline
            return Area(box, "doppler", (x + bx, y + by, bw, bh), frac)
        if colour:
            bx, by, bw, bh = cv2.boundingRect(m)
            x0, x1 = bx * step, min((bx + bw) * step, w)
            y0, y1 = by * step, min((by + bh) * step, h)
            return Area(box, "doppler", (x + int(x0), y + int(y0), int(x1 - x0), int(y1 - y0)), frac)
        return Area(box, "gs", None, frac)

    def _frozen(self, gray, boxes_full, f) -> bool:
        """Frozen = the image stopped changing. Enter on a near-zero change between consecutive frames;
        stay while the image remains close to the held one (video keyframes re-quantise a held image a
        little, live scanning moves speckle a lot). Compared at the same screen pixels (the current
        area box), so a box that wobbles by a pixel changes nothing; the frame before a signal dropout
        is kept, since a scanner may come back frozen on it."""
        prev, self._prev = self._prev, gray
        if not boxes_full:
            return False
        if prev is None or prev.shape != gray.shape:
            self._held = None
            return False
        x, y, w, h = (v // f for v in boxes_full[0])
        patch = gray[y:y + h, x:x + w]
        if self._held is not None and self._held.shape == gray.shape:
            d = cv2.absdiff(self._held[y:y + h, x:x + w], patch)
            if float(d.mean()) < self.p.unfreeze_delta and float((d > 20).mean()) < self.p.unfreeze_share:
                return True
            self._held = None
        if float(cv2.absdiff(prev[y:y + h, x:x + w], patch).mean()) < self.p.frozen_delta:
            self._held = prev
            return True
        return False


def _common(a, b):
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    return a[:h, :w], b[:h, :w]


def detect_layout(frame_bgr, profile: Profile | None = None, previous=None) -> FrameLayout:
    """One-shot detection of a single frame (no history: `frozen` needs `previous`, the frame before)."""
    det = LayoutDetector(profile)
    if previous is not None:
        det.detect(previous)
    return det.detect(frame_bgr)


def propose_profile(frames: list, name: str = "detected") -> Profile:
    """A profile from a few frames: the median of each detected area (per layout slot)."""
    det = LayoutDetector()
    layouts = [det.detect(f) for f in frames if f is not None]
    layouts = [lo for lo in layouts if lo.signal and lo.areas]
    if not layouts:
        raise RatingEdgeError("no ultrasound image area found in these frames (all blank, no signal or UI only)")
    counts = {"single": 0, "dual": 0}
    for lo in layouts:
        counts[lo.layout] += 1
    layout = max(counts, key=lambda k: counts[k])
    same = [lo for lo in layouts if lo.layout == layout]
    n = 2 if layout == "dual" else 1
    areas = []
    for i in range(n):
        boxes = np.array([lo.areas[i].box for lo in same if len(lo.areas) > i])
        areas.append(tuple(int(v) for v in np.median(boxes, axis=0)))
    W, H = same[0].size
    return Profile(name=name, frame_size=(W, H), layout=layout, areas=areas)


def draw_layout(frame_bgr: np.ndarray, lo: FrameLayout) -> np.ndarray:
    """What `inspect --png` shows: image areas (green GS, magenta Doppler), Doppler boxes, flags."""
    out = frame_bgr.copy()
    for a in lo.areas:
        x, y, w, h = a.box
        col = (255, 0, 255) if a.mode == "doppler" else (0, 255, 0)
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), col, 2)
        cv2.putText(out, f"{a.mode} {'-' if a.doppler_fraction is None else format(a.doppler_fraction, '.3f')}", (x + 4, max(y - 6, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5, col, 1, cv2.LINE_AA)
        if a.doppler_box is not None:
            dx, dy, dw, dh = a.doppler_box
            cv2.rectangle(out, (dx, dy), (dx + dw - 1, dy + dh - 1), (0, 255, 255), 1)
    cv2.putText(out, f"layout={lo.layout} frozen={lo.frozen} signal={lo.signal}", (8, out.shape[0] - 10),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out
