"""Understanding the scanner screen: image areas, layout, GS/Doppler mode, frozen, no signal.

The runtime sees the scanner's whole video output (UI text, logos, colour bars, markers around the
ultrasound picture), so it first finds the picture: large, filled regions of picture content (speckle,
or the noise floor just above the screen's black; not flat UI fills) with thin things (text strokes,
ticks, calipers, ECG traces) removed by a morphological opening: sector and convex fans, linear images,
touching duals split at their seam (docs/screens.md). Mode comes from Doppler signal inside each
picture: saturated colour in compact blobs (coloured strokes and JPEG chroma specks opened away first),
or the Doppler box a scanner draws even without flow: vertical sides, or two straight steep strokes
(steered parallelograms, fan segments) in any outline colour.
A scanner profile (JSON/YAML) pins the areas, UI regions and ROI when automatic detection is not wanted.

Detection works on downsampled copies so a 1920x1080 frame costs a few milliseconds.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from rating_edge.errors import RatingEdgeError
from rating_edge.preprocess import (
    DopplerParams,
    check_image,
    colour_mask_u8,
    max_and_chroma,
)

DETECT_WIDTH = 480  # working width of area detection
MIN_FRAME_SIDE = 16  # frames (and profile areas) smaller than this hold no ultrasound image to find
PROFILE_MAX_BYTES = 1 << 20


@dataclass
class LayoutParams:
    """Thresholds of screen understanding (all overridable in a profile under "detect")."""

    texture_density: float = 0.5  # share of picture-content pixels (5x5) that marks a picture
    flat_range: int = 2  # a 3x3 neighbourhood this flat (max - min) is a UI fill, not picture ...
    noise_floor: int = 3  # ... unless within this many gray levels of the screen's black (an empty fan)
    dark_texture: int = 2  # a pixel this far from its 3x3 mean is speckle, even at the level of the black ...
    dark_level: int = 24  # ... when within this many gray levels of the black (dark tissue)
    open_frac: float = 1 / 50  # opening kernel as a fraction of the working width: removes text, bars
    off_bg_share: float = 0.5  # a row beside which the screen is plain, differing from it this much, is picture
    min_fill: float = 0.3  # a picture fills at least this share of its bounding box (a fan about half)
    seam_corr: float = 0.2  # neighbouring columns correlating less than this are two pictures touching ...
    seam_typical: float = 0.5  # ... when the columns of the pictures correlate at least this much
    gutter_max: float = 0.05  # ... or a flat gutter at most this share of the joint width separates them
    seam_min_part: float = 0.3  # ... and each picture is at least this share of the joint width
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
    box_max_ink: float = 0.45  # a box side is a stroke: at most this share of its 7x7 neighbourhood is stroke
    box_side_len: float = 0.25  # a box side spans at least this share of the area's height
    box_every: int = 30  # search for slanted box sides every N frames per area, about 1 s (checked in between)
    no_signal_std: float = 3.0
    redetect_every: int = 30  # find image areas at least every N frames (a screen layout changes rarely) ...
    redetect_change: float = 6.0  # ... and as soon as the screen outside them changes by this mean gray level


# settings of the earlier texture-profile area search: profiles saved then still load (they are ignored)
_RETIRED_DETECT = {"col_rel", "row_rel", "bg_delta"}


@dataclass
class Area:
    box: tuple  # x, y, w, h in frame pixels
    mode: str = "gs"  # "gs" | "doppler"
    doppler_box: tuple | None = None
    doppler_fraction: float | None = 0.0  # None: not measured (a detector made with fractions=False)
    doppler_outline: list | None = None  # the box outline's corners as found (slanted/fan boxes), frame pixels

    def to_json(self) -> dict:
        d = {"box": [int(v) for v in self.box], "mode": self.mode,
             "doppler_box": None if self.doppler_box is None else [int(v) for v in self.doppler_box],
             "doppler_fraction": None if self.doppler_fraction is None else round(float(self.doppler_fraction), 6)}
        if self.doppler_outline is not None:
            d["doppler_outline"] = [[int(x), int(y)] for x, y in self.doppler_outline]
        return d


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
        if not (roi in ("doppler_box", "area") or (_ints(roi, 4) and roi[2] > 0 and roi[3] > 0)):
            raise RatingEdgeError(f"profile: roi must be 'doppler_box', 'area' or [x, y, w, h]; got {roi!r}")
        areas = d.get("areas")
        fs = d.get("frame_size")
        if fs is not None and not (_ints(fs, 2) and fs[0] > 0 and fs[1] > 0):
            raise RatingEdgeError(f"profile: frame_size must be [W, H] with W, H > 0 pixels; got {fs!r}")
        if areas is not None and not isinstance(areas, list):
            raise RatingEdgeError(f"profile: areas must be a list of [x, y, w, h]; got {areas!r}")
        if not isinstance(d.get("ui_regions") or [], list):
            raise RatingEdgeError("profile: ui_regions must be a list of [x, y, w, h]")
        for key, boxes in (("area", areas or []), ("ui region", d.get("ui_regions") or [])):
            for a in boxes:
                if not (_ints(a, 4) and a[0] >= 0 and a[1] >= 0 and a[2] > 0 and a[3] > 0):
                    raise RatingEdgeError(f"profile: {key} {a!r} is not [x, y, w, h] with x, y >= 0 and positive size")
                if fs and (a[0] + a[2] > fs[0] or a[1] + a[3] > fs[1]):
                    raise RatingEdgeError(f"profile: {key} {a!r} does not lie inside the frame_size {list(fs)}")
        for key, cls_ in (("detect", LayoutParams), ("doppler", DopplerParams)):
            sub = d.get(key) or {}
            if not isinstance(sub, dict):
                raise RatingEdgeError(f"profile: {key} must be a mapping of settings; got {type(sub).__name__}")
            if key == "detect":  # settings of the earlier detector: profiles saved with them still load
                sub = {k: v for k, v in sub.items() if k not in _RETIRED_DETECT}
            known = {f.name for f in dataclasses.fields(cls_)}
            unknown = sorted(repr(k) for k in sub if k not in known)
            if unknown:
                raise RatingEdgeError(f"profile: unknown {key} setting(s) {', '.join(unknown)} "
                                      f"(known: {', '.join(sorted(known))})")
            bad = sorted(k for k, v in sub.items() if isinstance(v, bool) or not isinstance(v, (int, float))
                         or not np.isfinite(v))
            if bad:
                raise RatingEdgeError(f"profile: {key}.{bad[0]} must be a finite number; got {sub[bad[0]]!r}")
        from rating_edge.manifest import validate
        from rating_edge.schemas import PROFILE

        validate(d, PROFILE, "profile")  # what the checks above do not cover: names, types, Doppler thresholds
        detect = LayoutParams(**{k: v for k, v in (d.get("detect") or {}).items() if k not in _RETIRED_DETECT})
        dop = DopplerParams(**d["doppler"]) if d.get("doppler") else None
        if areas and not fs:
            raise RatingEdgeError("profile: fixed areas need frame_size [W, H] (the resolution they refer to)")
        return cls(name=str(d.get("name", "profile")), frame_size=tuple(fs) if fs else None, layout=lay,
                   areas=[tuple(a) for a in areas] if areas else None,
                   ui_regions=[tuple(r) for r in d.get("ui_regions") or []], roi=roi, detect=detect, doppler=dop)

    def save(self, path) -> Path:
        path = Path(path)
        d = self.to_dict()
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            path.write_text(yaml.safe_dump(d, sort_keys=False))
        else:
            path.write_text(json.dumps(d, indent=2))
        return path


def _ints(v, n: int) -> bool:
    return (isinstance(v, (list, tuple)) and len(v) == n
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x) for x in v))


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


def _clip_box(box, W, H, min_side: int = MIN_FRAME_SIDE):
    """The part of `box` inside a W x H frame, or None when too little of it is (a profile made for
    another screen must not crash the feed nor make the scorer read pixels that are not there)."""
    x, y, w, h = box
    x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
    if x1 - x0 < min_side or y1 - y0 < min_side:
        return None
    return (x0, y0, x1 - x0, y1 - y0)


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


def background_level(small_gray: np.ndarray, share: float = 0.02) -> int:
    """The screen's black: what surrounds the picture.

    The level that dominates the screen's outermost rows and columns when it is a dark display
    background (some scanners use a dark grey; the picture's own black may be darker), otherwise the
    darkest gray level covering a visible share of the screen: scanners draw the picture on black and
    map "no echo" to (almost) that black, whatever colour the UI panels around it have.
    """
    hist = cv2.calcHist([small_gray], [0], None, [256], [0, 256]).ravel()
    border = np.concatenate([small_gray[:2].ravel(), small_gray[-2:].ravel(),
                             small_gray[:, :2].ravel(), small_gray[:, -2:].ravel()])
    b = int(np.bincount(border, minlength=256).argmax())
    if b <= _DARK_SCREEN and hist[b] >= 0.2 * small_gray.size:
        return b
    common = np.nonzero(hist >= share * small_gray.size)[0]
    return int(common[0]) if common.size else int(hist.argmax())


_DARK_SCREEN = 40  # a display background darker than this is a "black" the picture is drawn on


def content_mask(small_gray: np.ndarray, p: "LayoutParams", small_bgr=None, ui_mask=None, bg=None) -> np.ndarray:
    """Pixels that can belong to an ultrasound picture (uint8 0/1).

    Not the screen's black, and not a flat fill above it: a scan-converted picture has speckle
    everywhere but at its noise floor (a level or two above black, which is where an empty fan or the
    dark wings of a sector still differ from the screen outside), while UI panels, bars and buttons are
    flat fills of a level clearly above black. Doppler colour counts, however smooth.
    """
    bg = background_level(small_gray) if bg is None else bg
    dist = cv2.absdiff(small_gray, np.full_like(small_gray, bg))
    rng = cv2.subtract(cv2.dilate(small_gray, _OPEN3), cv2.erode(small_gray, _OPEN3))
    flat = cv2.compare(rng, p.flat_range, cv2.CMP_LE)
    dim = cv2.compare(dist, p.noise_floor, cv2.CMP_LE)
    # clearly off black and not a flat fill above it: speckle, tissue (and text strokes, removed later);
    # flat patches darker than the screen's black are the picture's own black (a grey-background screen)
    above = cv2.compare(small_gray, bg, cv2.CMP_GT)
    c = cv2.bitwise_and(cv2.bitwise_not(dim), cv2.bitwise_not(cv2.bitwise_and(flat, above)))
    # just off black: the noise floor of an empty fan or of dark sector wings, when it covers a region
    # wider than the opening; thinner dim seams are video-compression ringing around edges and text
    floor = cv2.bitwise_and(dim, cv2.compare(dist, 0, cv2.CMP_GT))
    k = max(3, int(round(small_gray.shape[1] * p.open_frac)) | 1)
    floor = cv2.compare(cv2.blur(floor, (5, 5)), 127, cv2.CMP_GT)
    c = cv2.bitwise_or(c, cv2.morphologyEx(floor, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))))
    # ... and so is dark speckle around the screen's own level (a picture whose black is the screen's black),
    # over regions twice as wide: ringing-filled gutters and the gaps to bars beside a picture are narrower
    dark_tex = cv2.bitwise_and(cv2.compare(cv2.absdiff(small_gray, cv2.blur(small_gray, (3, 3))), p.dark_texture, cv2.CMP_GE),
                               cv2.compare(dist, p.dark_level, cv2.CMP_LE))
    dark_tex = cv2.compare(cv2.blur(dark_tex, (5, 5)), 100, cv2.CMP_GT)
    k2 = 2 * k + 1
    c = cv2.bitwise_or(c, cv2.morphologyEx(dark_tex, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k2, k2))))
    if small_bgr is not None:
        c = cv2.bitwise_or(c, cv2.compare(max_and_chroma(small_bgr)[1], 40, cv2.CMP_GE))
    if ui_mask is not None:
        c[ui_mask] = 0
    return (c > 0).astype(np.uint8)


def _seam_columns(gray: np.ndarray, rows: np.ndarray, p: "LayoutParams") -> list:
    """Columns where two pictures touch: neighbouring columns of one picture are strongly correlated
    (speckle is wider than a pixel, scan lines are interpolated), columns from two pictures are not.
    Median over row blocks, so text or a marker on a few rows does not make or hide a seam."""
    g = gray[rows].astype(np.float32)
    nb = 8
    if g.shape[0] < 4 * nb or g.shape[1] < 8:
        return []
    cs, flat = [], []
    for r in np.array_split(np.arange(g.shape[0]), nb):
        a, b = g[r, :-1], g[r, 1:]
        a = a - a.mean(0)
        b = b - b.mean(0)
        va, vb = (a * a).mean(0), (b * b).mean(0)
        c = (a * b).mean(0) / np.sqrt(va * vb + 1e-6)
        c[(va < 4) | (vb < 4)] = np.nan  # flat in this block (black wing, UI): says nothing
        cs.append(c)
        flat.append(va < 4)
    cs = np.array(cs)
    valid = (~np.isnan(cs)).sum(0)
    if valid.max() < nb // 2:
        return []
    # a narrow gutter, flat over (nearly) the full height, between textured columns: two pictures that
    # video compression or a thin frame line joined into one component
    flat_share = np.mean(flat, axis=0)
    gutters = [c for a, b in _runs(flat_share, 0.5, 1)  # both ends: the gutter itself is no picture
               if a > 0 and b < flat_share.size and b - a <= max(2, int(p.gutter_max * g.shape[1]))
               and flat_share[a:b].max() >= 0.75 for c in (a + 1, b + 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: flat everywhere
        corr = np.nanmedian(cs, axis=0)
    corr[valid < nb // 2] = np.nan
    typical = float(np.nanmedian(corr))
    if not typical >= p.seam_typical:
        return gutters
    low = np.nan_to_num(corr, nan=1.0) < p.seam_corr
    return [int(x) + 1 for x in np.nonzero(low)[0]] + gutters  # a seam lies between x and x + 1


def _strip_lobes(cov: np.ndarray, rise: int = 3, p_lobe: float = 0.25) -> tuple:
    """[start, end) of a picture along one axis from its coverage profile, without small lobes stuck to
    a straight edge (a mode label, a marker or a colour bar that compression ringing joined to the
    picture). A straight edge is a sharp rise of the coverage; a fan's apex or a convex probe's arc
    rises gradually and keeps its rows."""
    n = cov.size
    on = np.nonzero(cov > 0)[0]
    if on.size == 0:
        return 0, n
    lo, hi = int(on[0]), int(on[-1]) + 1
    top = float(cov.max())
    limit = max(2, int(0.15 * n))

    def edge(order):
        seq = list(order)
        for k, i in enumerate(seq[:limit]):
            if cov[i] >= 0.6 * top:
                before = seq[max(0, k - rise):k]
                if k >= rise and all(cov[j] <= p_lobe * top for j in seq[:k - rise + 1]) and cov[before[0]] <= p_lobe * top:
                    return i
                return None
        return None

    a = edge(range(lo, hi))
    b = edge(range(hi - 1, lo - 1, -1))
    return (a if a is not None else lo), (b + 1 if b is not None else hi)


def _extend_rows(gray: np.ndarray, box, p: "LayoutParams") -> tuple:
    """Grow a picture's box over rows (above and below) that still differ from the screen beside it: a
    dark near field or a dark, noisy far field can be too sparse to count as dense content, but it is
    not the screen's background that surrounds the picture."""
    H, W = gray.shape
    x, y, w, h = box
    if x < 5 or x + w > W - 5:
        return box

    def picture_row(r):
        """True/False, or None where the screen beside is not plain (a tick, a label): no evidence."""
        side = np.concatenate([gray[r, x - 5:x - 2], gray[r, x + w + 2:x + w + 5]]).astype(np.int16)
        if int(side.max()) - int(side.min()) > 2 * p.noise_floor:
            return None
        bg = int(np.median(side))
        return float((np.abs(gray[r, x:x + w].astype(np.int16) - bg) > p.noise_floor).mean()) >= p.off_bg_share

    def grow(r, step, stop):
        last, unknown = r, 0
        while r != stop and unknown <= 8:
            v = picture_row(r)
            if v is False:
                break
            unknown = unknown + 1 if v is None else 0
            if v:
                last = r + step
            r += step
        return last

    y1 = grow(y + h, 1, H)
    y0 = grow(y - 1, -1, -1) + 1
    return (x, y0, w, y1 - y0)


def find_image_areas(small_gray: np.ndarray, p: LayoutParams, ui_mask=None, small_bgr=None) -> list:
    """Image areas in working (downsampled) pixels.

    Picture content (`content_mask`) that is dense at the scale of a few pixels survives an opening
    that removes text, ticks, calipers, scales and ECG traces; each large, filled connected component
    is a picture (sector fans, convex and linear images alike: its bounding box), split where two
    touching pictures meet (`_seam_columns`). Header and footer bands are too flat to be a picture.
    """
    h, w = small_gray.shape
    c = content_mask(small_gray, p, small_bgr, ui_mask)
    dense = (cv2.blur(c.astype(np.float32), (5, 5)) > p.texture_density).astype(np.uint8)
    k = max(3, int(round(w * p.open_frac)) | 1)
    opened = cv2.morphologyEx(dense, cv2.MORPH_OPEN, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(opened, connectivity=8)
    min_w, min_h = p.min_w_frac * w, p.min_h_frac * h
    out = []
    for i in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[i])
        if area < p.min_area_frac * w * h or bw < min_w or bh < min_h or area < p.min_fill * bw * bh:
            continue
        comp = labels[y:y + bh, x:x + bw] == i
        rows = np.nonzero(comp.mean(axis=1) >= 0.5)[0]  # rows across the picture's width (not the fan tip)
        cuts = [s for s in _seam_columns(small_gray[y:y + bh, x:x + bw], rows, p)
                if min(s, bw - s) >= p.seam_min_part * bw]
        edges = [0] + sorted(cuts) + [bw]
        for a, b in zip(edges[:-1], edges[1:]):
            part = comp[:, a:b]
            if b - a < min_w or not part.any():
                continue
            r0, r1 = _strip_lobes(part.mean(axis=1))
            c0, c1 = _strip_lobes(part[r0:r1].mean(axis=0))
            box = _extend_rows(small_gray, (x + a + c0, y + r0, c1 - c0, r1 - r0), p)
            if box[2] >= min_w and box[3] >= min_h and box[2] * box[3] >= p.min_area_frac * w * h:
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


def doppler_box_outline(area_bgr: np.ndarray, p: LayoutParams, row_step: int = 3, black: int | None = None):
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
    cols = [c for c in _edge_columns(share, p.box_column_share) if 4 <= c < W - 4]
    if not cols:
        return None
    # a box side lies inside the picture; the picture's own edge (ringing can make it a ridge) does not.
    # Only the columns 4 px beside each candidate are read (the whole-area test cost as much as the rest)
    black = float(np.percentile(gray, 2)) if black is None else float(black)
    beside = sorted({c + d for c in cols for d in (-4, 4)})
    near = np.abs(gray[:, beside].astype(np.float32) - black) > p.noise_floor
    inside = dict(zip(beside, near.mean(axis=0)))
    cols = [c for c in cols if min(inside[c - 4], inside[c + 4]) >= 0.3]
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


def doppler_box_sides(area_bgr: np.ndarray, p: LayoutParams, step: int = 2, black: int | None = None):
    """The Doppler colour box from two long, straight, steep, thin bright strokes, or None.

    Steered linear boxes are parallelograms, sector boxes are fan segments whose sides run along beam
    lines, drawn grey, white, green or yellow: what they share is a pair of straight sides spanning the
    same depths. Tissue lines in an image are mostly flat or curved and wider than a stroke, speckle is
    short, and the picture's own fan edges are steps, not strokes.
    Returns ((x, y, w, h), corners) in area pixels: the sides' bounding box, and the sides' 4 end points.
    """
    H0, W0 = area_bgr.shape[:2]
    if W0 < 16 * step or H0 < 16 * step:
        return None
    # max-pooling keeps a 1-px outline whole (nearest-neighbour subsampling would break a slanted one)
    small = cv2.dilate(area_bgr, np.ones((step, step), np.uint8))[::step, ::step] if step > 1 else area_bgr
    gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    thin = cv2.bitwise_and(cv2.compare(cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, _ELLIPSE5), p.box_ridge, cv2.CMP_GE),
                           cv2.compare(gray, p.box_min_gray, cv2.CMP_GE))
    # a stroke is alone in its neighbourhood; bright speckle and flow texture are not
    crowd = cv2.blur(thin, (7, 7))
    thin = cv2.bitwise_and(thin, cv2.compare(crowd, int(255 * p.box_max_ink), cv2.CMP_LE))
    H, W = thin.shape
    segs = cv2.HoughLinesP(thin, 1, np.pi / 180, threshold=max(10, H // 10), minLineLength=max(8, int(p.box_side_len * H)),
                           maxLineGap=max(5, H // 20))  # a side may cross a bright tissue layer
    if segs is None:
        return None
    steep = []
    for x1, y1, x2, y2 in segs.reshape(-1, 4):
        if y2 < y1:
            x1, y1, x2, y2 = x2, y2, x1, y1
        if abs(int(y2) - int(y1)) >= abs(int(x2) - int(x1)) \
                and _picture_both_sides(gray, (int(x1), int(y1), int(x2), int(y2)), p, black):  # in the picture
            steep.append((int(x1), int(y1), int(x2), int(y2)))
    best = None
    for i, a in enumerate(steep):
        for b in steep[i + 1:]:
            left, right = (a, b) if a[0] + a[2] <= b[0] + b[2] else (b, a)
            if (right[0] + right[2] - left[0] - left[2]) / 2 < W / 8:
                continue
            top, bot = max(left[1], right[1]), min(left[3], right[3])
            span = max(left[3], right[3]) - min(left[1], right[1])
            # the two sides cover the same depths (parallelogram) or the same radii around the apex where
            # their beam lines meet (a fan segment, steered or not)
            if bot - top < 0.7 * span and not _same_radii(left, right):
                continue
            if best is None or span * (right[0] + right[2] - left[0] - left[2]) > best[0]:
                best = (span * (right[0] + right[2] - left[0] - left[2]), left, right)
    if best is None:
        return None
    _, l, r = best
    # bridging gaps (where a side crosses a bright layer) lets a segment run on past a corner through
    # stray stroke pixels: end each side where its stroke is continuous
    l, r = _trim_to_stroke(thin, l), _trim_to_stroke(thin, r)
    xs, ys = [l[0], l[2], r[0], r[2]], [l[1], l[3], r[1], r[3]]
    x0, y0 = min(xs) * step, min(ys) * step
    x1, y1 = min(max(xs) * step + step, W0), min(max(ys) * step + step, H0)
    corners = [(l[0] * step, l[1] * step), (r[0] * step, r[1] * step), (r[2] * step, r[3] * step), (l[2] * step, l[3] * step)]
    return (int(x0), int(y0), int(x1 - x0), int(y1 - y0)), corners


def _same_radii(a, b, tol: float = 0.15) -> bool:
    """Whether two segments (x1, y1, x2, y2), y1 <= y2, lie on beam lines from one apex (above or below
    them) between the same two radii: the sides of a fan-segment Doppler box."""
    (ax1, ay1, ax2, ay2), (bx1, by1, bx2, by2) = a, b
    d1, d2 = np.array([ax2 - ax1, ay2 - ay1], float), np.array([bx2 - bx1, by2 - by1], float)
    den = d1[0] * d2[1] - d1[1] * d2[0]
    if abs(den) < 1e-6 * np.linalg.norm(d1) * np.linalg.norm(d2) + 1e-9:
        return False  # parallel: no apex
    t = ((bx1 - ax1) * d2[1] - (by1 - ay1) * d2[0]) / den
    apex = np.array([ax1, ay1], float) + t * d1
    if min(ay1, by1) < apex[1] < max(ay2, by2):
        return False  # the lines cross between the segments: not two beam lines of one fan
    ra = sorted(np.hypot(*(np.array(p_) - apex)) for p_ in ((ax1, ay1), (ax2, ay2)))
    rb = sorted(np.hypot(*(np.array(p_) - apex)) for p_ in ((bx1, by1), (bx2, by2)))
    span = max(ra[1], rb[1]) - min(ra[0], rb[0])
    return span > 0 and abs(ra[0] - rb[0]) <= tol * span and abs(ra[1] - rb[1]) <= tol * span


def _picture_both_sides(gray: np.ndarray, seg, p: LayoutParams, black=None, off: int = 4) -> bool:
    """A box side lies inside the picture: speckle on both sides of it. The picture's own edge (with
    compression ringing it can look like a stroke) has the screen's black on one side."""
    H, W = gray.shape
    x1, y1, x2, y2 = seg
    t = np.linspace(0.1, 0.9, 16)
    xs = x1 + t * (x2 - x1)
    ys = np.clip(np.round(y1 + t * (y2 - y1)).astype(int), 0, H - 1)
    black = float(np.percentile(gray, 2)) if black is None else float(black)
    for d in (-off, off):
        v = gray[ys, np.clip(np.round(xs + d).astype(int), 0, W - 1)].astype(np.float32)
        if float((np.abs(v - black) > p.noise_floor).mean()) < 0.5:
            return False
    return True


def _trim_to_stroke(mask: np.ndarray, seg, run: int = 5):
    """Shorten a segment (x1, y1, x2, y2) to the first and last point where its stroke is continuous in
    `mask` (a pixel or its horizontal neighbours set on `run` consecutive steps)."""
    H, W = mask.shape
    x1, y1, x2, y2 = seg
    n = max(abs(x2 - x1), abs(y2 - y1), 1)
    t = np.arange(n + 1) / n
    xs = np.clip(np.round(x1 + t * (x2 - x1)).astype(int), 1, W - 2)
    ys = np.clip(np.round(y1 + t * (y2 - y1)).astype(int), 0, H - 1)
    hit = (mask[ys, xs - 1] | mask[ys, xs] | mask[ys, xs + 1]) > 0
    solid = np.convolve(hit.astype(np.int32), np.ones(run, np.int32), mode="valid") >= run
    idx = np.nonzero(solid)[0]
    if idx.size == 0:
        return seg
    i, j = int(idx[0]), int(idx[-1]) + run - 1
    return (int(xs[i]), int(ys[i]), int(xs[j]), int(ys[j]))


def _sides_still_drawn(area_bgr: np.ndarray, corners, p: LayoutParams) -> bool:
    """Whether the two box sides found earlier are still drawn: most points along each side are bright
    and brighter than the pixels 3 px beside them (a stroke, not tissue)."""
    gray_at = area_bgr  # sampled per point: no full-area conversion
    H, W = area_bgr.shape[:2]
    (l0, r0, r1, l1) = corners
    for (xa, ya), (xb, yb) in ((l0, l1), (r0, r1)):
        t = np.linspace(0.05, 0.95, 24)
        xs = np.clip(np.round(xa + t * (xb - xa)).astype(int), 3, W - 4)
        ys = np.clip(np.round(ya + t * (yb - ya)).astype(int), 0, H - 1)
        # a 1-px stroke may sit a pixel off the fitted line: take the brightest of 3 neighbours
        centre = np.max([gray_at[ys, xs + d].max(axis=1) for d in (-1, 0, 1)], axis=0).astype(np.int16)
        side = np.maximum(gray_at[ys, xs - 3].max(axis=1), gray_at[ys, xs + 3].max(axis=1)).astype(np.int16)
        ok = (centre >= p.box_min_gray) & (centre - side >= p.box_ridge)
        if ok.mean() < 0.6:
            return False
    return True


_ELLIPSE5 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))


# A capture card that fits a screen of another aspect ratio into its frame pads it with black bars on both sides
BAR_LEVEL = 16  # padding is (near) pure black ...
BAR_FLAT = 3  # ... and uniform down the whole column (or along the whole row)
BAR_MIN = 0.03  # each bar at least this share of the frame's width (height)
BAR_MAX_FIT = 0.5  # the screen between them at least this share (4:3 in 16:9 fills 75 %)


def capture_padding(frame_bgr: np.ndarray) -> tuple | None:
    """(x, y, w, h) of the scanner's screen inside the black bars a capture card added (pillarbox: bars
    left and right; letterbox: top and bottom), or None. The screen is then understood on its own:
    the bars are not the scanner's black (a screen drawn on dark grey would otherwise be one big picture
    against pure-black bars), and the detection works at the screen's own scale. Bars on both sides
    matter (a card centres the screen; a scanner's own black margin is usually on one side); they may
    differ up to 2:1, since a screen's own black margins add to the card's bars unequally."""
    H, W = frame_bgr.shape[:2]
    s = 8 if min(H, W) >= 256 else 1
    # every s-th pixel (nearest-neighbour at an exact factor), per pixel the largest and smallest channel
    sub = cv2.resize(frame_bgr, ((W + s - 1) // s, (H + s - 1) // s), interpolation=cv2.INTER_NEAREST) if s > 1 \
        else frame_bgr
    mx, chroma = max_and_chroma(sub)
    mn = cv2.subtract(mx, chroma)

    def bars(vmax, vmin, n_px):
        bar = (vmax <= BAR_LEVEL) & (vmax.astype(np.int16) - vmin <= BAR_FLAT)
        n = len(bar)
        if bar.all() or not bar[0] or not bar[-1]:
            return None
        lead, trail = int(np.argmin(bar)), int(np.argmin(bar[::-1]))
        if min(lead, trail) < BAR_MIN * n or abs(lead - trail) > max(2, 0.5 * max(lead, trail)) \
                or n - lead - trail < BAR_MAX_FIT * n:  # a caption on a black frame is not a screen
            return None
        # the last sampled bar line + 1 to the first sampled bar line: unsampled lines stay inside
        return (lead - 1) * s + 1, min(n_px, (n - trail) * s)

    cols = bars(mx.max(axis=0), mn.min(axis=0), W)
    rows = bars(mx.max(axis=1), mn.min(axis=1), H)
    if cols is None and rows is None:
        return None
    x0, x1 = cols or (0, W)
    y0, y1 = rows or (0, H)
    return (x0, y0, x1 - x0, y1 - y0) if x1 - x0 >= MIN_FRAME_SIDE and y1 - y0 >= MIN_FRAME_SIDE else None


def _shift_area(a: Area, dx: int, dy: int) -> Area:
    def box(b):
        return None if b is None else (b[0] + dx, b[1] + dy, b[2], b[3])

    corners = None if a.doppler_outline is None else [(x + dx, y + dy) for x, y in a.doppler_outline]
    return dataclasses.replace(a, box=box(a.box), doppler_box=box(a.doppler_box), doppler_outline=corners)


SEARCH_LAG = 3  # frames between submitting a background area search and taking its result
_SEARCHER = None


def _area_searcher():
    """One thread shared by every detector for background area searches (created on first use)."""
    global _SEARCHER
    if _SEARCHER is None:
        from concurrent.futures import ThreadPoolExecutor

        _SEARCHER = ThreadPoolExecutor(1, thread_name_prefix="area-search")
    return _SEARCHER


def _same_boxes(old, new, tol: int) -> bool:
    """Whether two area searches found the same areas up to `tol` pixels per edge. Keeping the earlier
    boxes then keeps crops, ROIs and pairing from shifting with search noise (a GS image held for a
    section would otherwise need resizing to every Doppler frame's slightly different area)."""
    return len(old) == len(new) and all(abs(a - b) <= tol for bo, bn in zip(old, new) for a, b in zip(bo, bn))


class LayoutDetector:
    """Per-frame screen understanding with a little state (the previous frame, for `frozen`)."""

    def __init__(self, profile: Profile | None = None, doppler: DopplerParams | None = None, fractions: bool = True,
                 background: bool = False):
        """`fractions=False`: an area whose Doppler box outline already says "Doppler" is not also
        segmented for its Doppler fraction (left None); the run loop needs only the mode and the box,
        and this is the most expensive step of a Doppler frame's detection. `background=True` (the run
        loop, with a second core): the periodic area search on a steady screen runs on another thread."""
        self.fractions = fractions
        self.background = bool(background)
        self._pending = None  # (background search, frame count it is taken at, its gray frame, size)
        self._pad = None  # (frame shape, frame number, capture_padding) of the last look for capture bars
        self.profile = profile or Profile()
        self.p = self.profile.detect
        self.dp = self.profile.doppler or doppler or DopplerParams()
        self._prev = None
        self._held = None
        self._prev_size = None
        self._boxes = None  # image areas found on a recent frame
        self._since = 0
        self._sides = {}  # area box -> (frame number of the last box-side search, its result)
        self._outlines = {}  # area box -> (frame number of the last outline search, the box found)
        self._black = None
        self._frame_no = 0
        self._ref = self._outside = None  # small gray frame of the last area search, and the screen around the areas

    def reset(self):
        self._prev = self._held = self._boxes = self._pending = self._pad = None
        self._sides, self._outlines = {}, {}

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
        """The frame's layout, image areas and their modes, in frame pixels. A screen inside a capture
        card's black bars is understood on its own (`capture_padding`); profile areas refer to the whole
        frame, so a profile with areas is applied as it is."""
        if isinstance(frame_bgr, np.ndarray) and frame_bgr.ndim == 3 and min(frame_bgr.shape[:2]) >= MIN_FRAME_SIDE \
                and not self.profile.areas and not self.profile.ui_regions:
            frame_bgr = check_image(frame_bgr, "frame")  # a 4-channel or float frame: its one-line error
            # bars change only with the source's resolution: looked for again at the area-search pace
            key = frame_bgr.shape
            if self._pad is None or self._pad[0] != key or self._boxes is None \
                    or self._frame_no - self._pad[1] >= self.p.redetect_every:  # (no areas: an area search is due)
                self._pad = (key, self._frame_no, capture_padding(frame_bgr))
            pad = self._pad[2]
            if pad is not None:
                x, y, w, h = pad
                lo = self._detect(frame_bgr[y:y + h, x:x + w])
                # the subsampled frame no longer lies on the frame's own grid: pairing subsamples again
                return dataclasses.replace(lo, areas=[_shift_area(a, x, y) for a in lo.areas],
                                           size=(frame_bgr.shape[1], frame_bgr.shape[0]), small=None, gray=None, step=1)
        return self._detect(frame_bgr)

    def _detect(self, frame_bgr: np.ndarray) -> FrameLayout:
        if isinstance(frame_bgr, np.ndarray) and frame_bgr.ndim == 3 and min(frame_bgr.shape[:2]) < MIN_FRAME_SIDE:
            # a thumbnail or a line of pixels holds no ultrasound image (and too few pixels to search)
            self._prev = self._boxes = None
            return FrameLayout("single", [], frozen=False, signal=True, size=(frame_bgr.shape[1], frame_bgr.shape[0]))
        img = check_image(frame_bgr, "frame")
        self._frame_no += 1  # the clock of the per-area box searches (`box_every`)
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
        self._black = background_level(gray)  # the screen's black, for telling a box side from the picture's edge
        if self.profile.areas:
            sx, sy = self._profile_scale(W, H)
            boxes_full = [b for b in (_clip_box(_scale_box(a, sx, sy), W, H) for a in self.profile.areas) if b]
        elif self._boxes is not None and (self.background or self._since < self.p.redetect_every - 1) \
                and not self._screen_changed(gray):
            self._since += 1
            if self.background:
                self._search_in_background(gray, small, W, H, f)
            boxes_full = self._boxes
        else:
            self._pending = None
            boxes_full = self._adopt(find_image_areas(gray, self.p, self._ui_mask(W, H, f), small), gray, W, H, f)
        if self.profile.layout == "auto":
            layout = decide_layout(boxes_full)
        else:
            layout = self.profile.layout
        boxes_full = sorted(boxes_full[:2] if layout == "dual" else boxes_full[:1], key=lambda b: b[0])
        areas = [self._area(img, b) for b in boxes_full]
        frozen = self._frozen(gray, boxes_full, f)
        return FrameLayout(layout, areas, frozen=frozen, signal=True, size=(W, H), small=small, gray=gray, step=f)

    def _adopt(self, boxes, gray, W, H, f) -> list:
        """Take the areas an area search found on `gray` (working pixels) as the current ones."""
        boxes_full = [(x * f, y * f, min(w * f, W - x * f), min(h * f, H - y * f)) for x, y, w, h in boxes]
        if self._boxes is not None and _same_boxes(self._boxes, boxes_full, 2 * f):
            boxes_full = self._boxes  # the same picture found again a grid step off: keep it steady
        self._boxes, self._since = boxes_full, 0
        self._outside = np.full(gray.shape, 255, np.uint8)  # the screen around the areas, to watch
        for x, y, w, h in boxes:
            self._outside[y:y + h, x:x + w] = 0
        self._ref = gray
        return boxes_full

    def _search_in_background(self, gray, small, W, H, f) -> None:
        """The periodic area search on a steady screen, off the frame path: submitted on one frame and
        taken SEARCH_LAG frames later (waiting for it then if need be, so the result does not depend on
        thread timing). It is a safety net for what the outside watch cannot see (a picture that
        shrinks); a search costs several milliseconds, half the runtime's budget on the frame it hits."""
        if self._pending is not None:
            job, due, ref, size = self._pending
            if self._since >= due:
                self._pending = None
                if size == (W, H, f):
                    self._adopt(job.result(), ref, W, H, f)
        elif self._since >= self.p.redetect_every - 1:
            # at full resolution `small` is the frame itself, which the overlay draws on in place
            small = small.copy() if f == 1 else small
            job = _area_searcher().submit(find_image_areas, gray, self.p, self._ui_mask(W, H, f), small)
            self._pending = (job, self._since + SEARCH_LAG, gray, (W, H, f))

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
        outline = self._outline(crop, box)
        corners = None
        if outline is not None:
            bx, by, bw, bh = outline
            corners = [(x + bx, y + by), (x + bx + bw - 1, y + by), (x + bx + bw - 1, y + by + bh - 1),
                       (x + bx, y + by + bh - 1)]
        else:  # slanted (steered) or fan-segment box
            sides = self._box_sides(crop, box)
            if sides is not None:
                outline, cs = sides
                corners = [(x + cx, y + cy) for cx, cy in cs]
        if outline is not None and not self.fractions:
            bx, by, bw, bh = outline
            return Area(box, "doppler", (x + bx, y + by, bw, bh), None, corners)
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
            return Area(box, "doppler", (x + bx, y + by, bw, bh), frac, corners)
        if colour:
            bx, by, bw, bh = cv2.boundingRect(m)
            x0, x1 = bx * step, min((bx + bw) * step, w)
            y0, y1 = by * step, min((by + bh) * step, h)
            return Area(box, "doppler", (x + int(x0), y + int(y0), int(x1 - x0), int(y1 - y0)), frac)
        return Area(box, "gs", None, frac)

    def _outline(self, crop, box):
        """`doppler_box_outline`, with a box found on an earlier frame kept while its drawn sides are
        still there (checked at a few dozen points; searched again every `box_every` frames). Only a
        found box is kept: a frame without one is searched every time, so a switch to Doppler mode
        shows at once."""
        n, found = self._outlines.get(box, (None, None))
        if found is not None and self._frame_no - n < self.p.box_every:
            bx, by, bw, bh = found
            corners = ((bx, by), (bx + bw - 1, by), (bx + bw - 1, by + bh - 1), (bx, by + bh - 1))
            # a box side at the area's own edge (one side found) cannot be checked as a stroke
            if 4 <= bx and bx + bw - 1 < crop.shape[1] - 4 and _sides_still_drawn(crop, corners, self.p):
                return found
        found = doppler_box_outline(crop, self.p, black=self._black)
        if len(self._outlines) > 8:
            self._outlines.clear()
        if found is None:
            self._outlines.pop(box, None)
        else:
            self._outlines[box] = (self._frame_no, found)
        return found

    def _box_sides(self, crop, box):
        """`doppler_box_sides`, searched every `box_every` frames per area: the box is UI and stays put
        between searches, so in between a found box is only checked (its sides still drawn: a few
        hundred pixel reads) and a screen without one is not searched again."""
        n, found = self._sides.get(box, (None, None))
        if n is not None and self._frame_no - n < self.p.box_every:
            if found is None or _sides_still_drawn(crop, found[1], self.p):
                return found
        found = doppler_box_sides(crop, self.p, step=max(2, int(round(crop.shape[1] / 300))),  # ~300 px wide
                                  black=self._black)
        if len(self._sides) > 8:
            self._sides.clear()
        self._sides[box] = (self._frame_no, found)
        return found

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


def _static_boxes(frames: list, boxes: list, p: LayoutParams) -> set:
    """Indices of boxes whose pixels did not change over the frames while another box's did: a
    reference thumbnail or a stored image beside the live one (the live picture moves, UI does not)."""
    if len(frames) < 2 or len(boxes) < 2:
        return set()
    grays = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames if f is not None and f.shape == frames[0].shape]
    moved = []
    for x, y, w, h in boxes:
        d = [float(cv2.absdiff(a[y:y + h, x:x + w], b[y:y + h, x:x + w]).mean()) for a, b in zip(grays, grays[1:])]
        moved.append(max(d) if d else 0.0)
    if max(moved) < p.frozen_delta:  # all frozen: nothing to tell them apart
        return set()
    return {i for i, m in enumerate(moved) if m < p.frozen_delta}


def propose_profile(frames: list, name: str = "detected") -> Profile:
    """A profile from a few frames: the median of each detected area (per layout slot). With several
    frames, temporal cues: areas that stay still while another moves (thumbnails) are dropped."""
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
    static = _static_boxes([f for f in frames if f is not None], areas, det.p)
    if static and len(areas) - len(static) >= 1:
        areas = [a for i, a in enumerate(areas) if i not in static]
        layout = "dual" if len(areas) == 2 else "single"
    W, H = same[0].size
    return Profile(name=name, frame_size=(W, H), layout=layout, areas=areas)


def roi_in_area(area: Area, roi, inset: float = 0.06) -> tuple | None:
    """ROI relative to the area crop: inside the Doppler colour box (scanners draw the box a little
    larger than the region of interest, so it is inset by `inset` per side), the whole area, or a
    fixed [x, y, w, h] from the profile."""
    ax, ay, aw, ah = area.box
    if isinstance(roi, (list, tuple)):
        x, y, w, h = (int(v) for v in roi)
        x, y = min(max(x, 0), aw - 2), min(max(y, 0), ah - 2)
        return (x, y, max(2, min(w, aw - x)), max(2, min(h, ah - y)))
    if roi == "area" or area.doppler_box is None:
        return None
    dx, dy, dw, dh = area.doppler_box
    x0, y0 = max(dx - ax, 0), max(dy - ay, 0)
    x1, y1 = min(dx - ax + dw, aw), min(dy - ay + dh, ah)
    mx, my = int(round((x1 - x0) * inset)), int(round((y1 - y0) * inset))
    x0, y0, x1, y1 = x0 + mx, y0 + my, x1 - mx, y1 - my
    if x1 - x0 < max(16, aw // 8) or y1 - y0 < max(16, ah // 8):  # a few colour pixels are not a box
        return None
    return (int(x0), int(y0), int(x1 - x0), int(y1 - y0))


def draw_layout(frame_bgr: np.ndarray, lo: FrameLayout, roi="doppler_box") -> np.ndarray:
    """What `inspect --png` shows: image areas (green GS, magenta Doppler), the Doppler box outline as
    found (yellow: its corners, slanted or not), its bounding box (thin yellow) and the ROI the pairing
    crops (cyan), flags."""

    out = frame_bgr.copy()
    for a in lo.areas:
        x, y, w, h = a.box
        col = (255, 0, 255) if a.mode == "doppler" else (0, 255, 0)
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), col, 2)
        frac = "-" if a.doppler_fraction is None else format(a.doppler_fraction, ".3f")
        cv2.putText(out, f"{a.mode} {frac}", (x + 4, max(y - 6, 12)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.5, col, 1, cv2.LINE_AA)
        if a.doppler_box is not None:
            dx, dy, dw, dh = a.doppler_box
            cv2.rectangle(out, (dx, dy), (dx + dw - 1, dy + dh - 1), (0, 255, 255), 1)
        if a.doppler_outline is not None:
            cv2.polylines(out, [np.array(a.doppler_outline, np.int32)], True, (0, 255, 255), 2)
        r = roi_in_area(a, roi)
        if r is not None:
            rx, ry, rw, rh = r
            cv2.rectangle(out, (x + rx, y + ry), (x + rx + rw - 1, y + ry + rh - 1), (255, 255, 0), 1)
    cv2.putText(out, f"layout={lo.layout} frozen={lo.frozen} signal={lo.signal}", (8, out.shape[0] - 10),
                cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out
