"""Drawing the AI's view onto the scanner frame.

The radiologist must still see every pixel of the ultrasound picture, so nothing opaque is drawn over
an image area: the ROI is a thin outline, the heatmap a translucent yellow wash (alpha from the map,
values under 0.2 left out, as in the paper), and the score panel sits in the screen margin beside the
picture on a translucent backing (over the picture only when no margin is wide enough).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from rating_edge.preprocess import max_and_chroma
from rating_edge.runtime.layout import FrameLayout

YELLOW = (0, 255, 255)
ROI_COLOUR = (255, 200, 0)
HEAT_MIN = 0.2
HEAT_ALPHA = 0.5
_BELOW_MIN = float(np.nextafter(np.float32(HEAT_MIN), np.float32(0)))
FONT = cv2.FONT_HERSHEY_SIMPLEX
HELP = ["h  toggle heatmap", "mouse drag  draw ROI", "r  reset ROI", "s  snapshot (PNG)", "f  freeze overlay",
        "q / Esc  quit", "?  this help"]


@dataclass
class OverlayState:
    """What the renderer shows; the app updates it from results and keys."""

    show_heat: bool = True
    show_help: bool = False
    frozen_overlay: bool = False
    status: str = ""  # pairing / mode state
    banner: str | None = None  # e.g. "AI unavailable"
    model_id: str = ""
    fps: float = 0.0
    latency_ms: float | None = None
    result: object = None  # worker.Result of the current section, or None
    result_age_s: float | None = None
    aggregate: object = None
    roi_override: tuple | None = None  # frame pixels, drawn by the user
    extra: dict = field(default_factory=dict)


@dataclass
class Wash:
    """A heatmap's yellow wash prepared for one ROI size. The blend frame * (1 - alpha) + yellow * alpha
    is split into a per-pixel factor and a uint8 addend, which stay the same on every frame until the
    result changes, so a frame costs one multiply and one add (each rounded: at most one gray level
    from the float blend). Limited to the rows and columns where the map reaches 0.2 (elsewhere the
    frame is untouched)."""

    box: tuple  # (x, y, w, h) inside the ROI
    keep: np.ndarray  # float32 (h, w, 3): 1 - alpha per channel
    add: np.ndarray  # uint8 (h, w, 3): yellow * alpha, rounded


def heat_alpha(heat: np.ndarray, w: int, h: int) -> np.ndarray | None:
    """Per-pixel alpha (float32, h x w) of the yellow wash: HEAT_ALPHA * map where map >= 0.2, else 0."""
    if heat is None or h < 2 or w < 2:
        return None
    m = cv2.resize(np.asarray(heat, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    # OpenCV passes (keeps) values strictly above the threshold: just below 0.2 keeps m >= 0.2.
    # All in place: each fresh ROI-sized float image costs page faults, more than the arithmetic
    a = cv2.threshold(m, _BELOW_MIN, 0, cv2.THRESH_TOZERO, dst=m)[1]
    cv2.min(a, 1.0, dst=a)
    a *= np.float32(HEAT_ALPHA)
    return a if cv2.countNonZero(a) else None


def prepare_wash(heat: np.ndarray, w: int, h: int) -> Wash | None:
    a = heat_alpha(heat, w, h)
    if a is None:
        return None
    x, y, bw, bh = cv2.boundingRect(cv2.compare(a, 0, cv2.CMP_GT))
    a = np.ascontiguousarray(a[y:y + bh, x:x + bw])
    keep = cv2.subtract(1.0, a)
    # per-channel planes merged by OpenCV: 15x faster than numpy broadcasting a BGR tuple
    add = cv2.merge([np.zeros((bh, bw), np.uint8) if c == 0 else
                     cv2.convertScaleAbs(a, alpha=float(c)) for c in YELLOW])  # rounds and saturates
    return Wash((x, y, bw, bh), cv2.merge([keep, keep, keep]), add)


def heat_wash(region_bgr: np.ndarray, heat: np.ndarray, wash: Wash | None = None) -> None:
    """Yellow wash in place: alpha = HEAT_ALPHA * map where map >= 0.2, else untouched."""
    h, w = region_bgr.shape[:2]
    wash = wash if wash is not None else prepare_wash(heat, w, h)
    if wash is None:
        return
    x, y, bw, bh = wash.box
    sub = region_bgr[y:y + bh, x:x + bw]
    cv2.add(cv2.multiply(sub, wash.keep, dtype=cv2.CV_8U), wash.add, dst=sub)


def _slots(W, H, areas, pw, ph, pad):
    """Top-left corners of pw x ph panels outside every image area, in order of preference: beside the
    picture (top, middle, bottom of the margin), then below and above it."""
    boxes = [a.box for a in areas]
    if not boxes:
        return [(pad, pad)]
    x0 = min(b[0] for b in boxes)
    x1 = max(b[0] + b[2] for b in boxes)
    y0 = min(b[1] for b in boxes)
    y1 = max(b[1] + b[3] for b in boxes)
    ys = [max(pad, y0), max(pad, (y0 + y1 - ph) // 2), max(pad, y1 - ph)]
    cands = [(x1 + pad, y) for y in ys] + [(max(pad, x0 - pw - pad), y) for y in ys]
    cands += [(max(pad, x0), y1 + pad), (max(pad, x0), max(pad, y0 - ph - pad))]
    return [(x, y) for x, y in cands if x + pw <= W and y + ph <= H and not any(
        x < b[0] + b[2] and b[0] < x + pw and y < b[1] + b[3] and b[1] < y + ph for b in boxes)]


def _ink(frame_bgr, x, y, pw, ph) -> float:
    """Share of a screen patch covered by the scanner's own UI (text, colour bars, scales): pixels that
    stand out from the patch's background gray or carry colour."""
    patch = frame_bgr[y:y + ph:2, x:x + pw:2]
    if patch.size == 0:
        return 1.0
    gray = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY)
    bg = float(np.median(gray))
    chroma = max_and_chroma(patch)[1]
    return float(((cv2.absdiff(gray, bg) > 30) | (chroma > 40)).mean())


def panel_slot(frame_bgr, areas, pw, ph, pad: int = 8):
    """Where the score panel goes: the margin slot that covers the least scanner UI (the panel is
    translucent, but text over a colour bar or over the scanner's own labels is hard to read), or the
    bottom-right corner over the picture when no margin is wide enough."""
    H, W = frame_bgr.shape[:2]
    cands = [c for c in _slots(W, H, areas, pw, ph, pad) if c[0] + pw <= W and c[1] + ph <= H]
    if not cands:
        return (max(0, W - pw - 4), max(0, H - ph - 4))
    inks = [_ink(frame_bgr, x, y, pw, ph) for x, y in cands]
    best = min(inks)
    return cands[next(i for i, v in enumerate(inks) if v <= best + 0.01)]


def _panel(img, x, y, lines, scale, thick):
    lh = int(26 * scale) + 4
    pw = int(max(cv2.getTextSize(t, FONT, scale, thick)[0][0] for t, _ in lines)) + 16
    ph = lh * len(lines) + 10
    x = min(max(0, x), max(0, img.shape[1] - pw))
    y = min(max(0, y), max(0, img.shape[0] - ph))
    sub = img[y:y + ph, x:x + pw]
    sub[:] = (sub.astype(np.uint16) * 2 // 5).astype(np.uint8)  # translucent dark backing (60% dimmed)
    for i, (t, col) in enumerate(lines):
        cv2.putText(img, t, (x + 8, y + lh * (i + 1)), FONT, scale, col, thick, cv2.LINE_AA)
    return pw, ph


def panel_lines(st: OverlayState) -> list:
    lines = []
    res = st.result
    if res is not None and getattr(res, "scores", None) is not None:
        s = res.scores
        m = len(s["sh_models"])
        agg = st.aggregate
        lines.append((f"SH {int(s['sh'])}  ({int(s['sh_agree'])}/{m} agree)", (255, 255, 255)))
        lines.append((f"VS {int(s['vs'])}  ({int(s['vs_agree'])}/{m} agree)", (255, 255, 255)))
        lines.append((f"combined {int(s['combined'])}", (0, 255, 255)))
        if agg is not None:
            col = (0, 220, 0) if agg.stable else (0, 165, 255)
            lines.append((f"{agg.pairs} pairs: {agg.sh}/{agg.vs}/{agg.combined} "
                          f"{'stable' if agg.stable else 'settling'}", col))
        if st.result_age_s is not None:
            lines.append((f"result age {st.result_age_s:.1f} s", (200, 200, 200)))
    else:
        lines.append(("no score yet", (200, 200, 200)))
    lines.append((st.status[:48], (255, 255, 0)))
    lat = "-" if st.latency_ms is None else f"{st.latency_ms:.0f} ms"
    lines.append((f"{st.fps:.1f} fps  latency {lat}", (200, 200, 200)))
    if st.model_id:
        lines.append((f"model {st.model_id}", (160, 160, 160)))
    if st.frozen_overlay:
        lines.append(("overlay frozen (f)", (0, 165, 255)))
    return lines


def render(frame_bgr: np.ndarray, lo: FrameLayout | None, st: OverlayState, out: np.ndarray | None = None,
           in_place: bool = False) -> np.ndarray:
    """A new image (or `out`, reused) with the overlay drawn, the input frame unchanged; or, with
    `in_place`, the frame itself drawn on (the run loop owns each captured frame once it has detached
    what outlives it, and a 1080p copy per frame is a tenth of the runtime's budget)."""
    if in_place:
        out = frame_bgr
    elif out is None or out.shape != frame_bgr.shape:
        out = frame_bgr.copy()
    else:
        np.copyto(out, frame_bgr)
    H, W = out.shape[:2]
    scale = max(0.4, H / 1080 * 0.7)
    thick = 1 if H < 700 else 2
    areas = lo.areas if lo is not None else []
    res = st.result
    if lo is not None and not lo.signal:
        msg = "NO SIGNAL"
        (tw, th), _ = cv2.getTextSize(msg, FONT, scale * 2, thick + 1)
        cv2.putText(out, msg, ((W - tw) // 2, (H + th) // 2), FONT, scale * 2, (0, 0, 255), thick + 1, cv2.LINE_AA)
    # ROI and heatmap on the area whose kind matches what the result was computed from
    if res is not None and getattr(res, "scores", None) is not None and areas:
        for a in areas:
            if st.roi_override is not None:
                roi = st.roi_override
            else:
                rel = res.pair.area_roi(a.mode)
                ax, ay, aw, ah = a.box
                roi = (ax, ay, aw, ah) if rel is None else (ax + rel[0], ay + rel[1], min(rel[2], aw), min(rel[3], ah))
            x, y, w, h = (int(v) for v in roi)
            x, y = max(0, x), max(0, y)
            w, h = min(w, W - x), min(h, H - y)
            if st.show_heat and w > 1 and h > 1:
                heat = res.heat_doppler if a.mode == "doppler" else res.heat_gs
                # the wash changes with the result, not with the frame; the cache holds the result
                # itself, so its id cannot be reused by a newer result while the entry exists
                key = (id(res), a.mode, w, h)
                cache = st.extra.setdefault("alpha", {})
                if key not in cache or cache[key][0] is not res:
                    cache.clear() if len(cache) > 4 else None
                    made = getattr(res, "washes", None) or {}  # prepared on the inference thread
                    cache[key] = (res, made[(a.mode, w, h)] if (a.mode, w, h) in made else prepare_wash(heat, w, h))
                if cache[key][1] is not None:
                    heat_wash(out[y:y + h, x:x + w], heat, cache[key][1])
            cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), ROI_COLOUR, thick)
    lines = panel_lines(st)
    lh = int(26 * scale) + 4
    pw = int(max(cv2.getTextSize(t, FONT, scale, thick)[0][0] for t, _ in lines)) + 16
    ph = lh * len(lines) + 10
    # the slot is chosen once per screen layout and panel size, so the panel does not wander
    key = (tuple(tuple(v // 16 for v in a.box) for a in areas), W, H, pw // 32, ph)
    slots = st.extra.setdefault("slot", {})
    if key not in slots:
        slots.clear() if len(slots) > 8 else None
        slots[key] = panel_slot(frame_bgr, areas, pw, ph)
    slot = slots[key]
    _panel(out, slot[0], slot[1], lines, scale, thick)
    if st.banner:
        (tw, th), _ = cv2.getTextSize(st.banner, FONT, scale, thick)
        bx = max(0, (W - tw) // 2 - 8)
        top = min([a.box[1] for a in areas], default=H)
        by = 4 if top >= th + 16 else max(0, H - th - 20)
        _panel(out, bx, by, [(st.banner, (0, 0, 255))], scale, thick)
    if st.show_help:
        _panel(out, 10, 10, [(t, (255, 255, 255)) for t in HELP], scale, thick)
    return out
