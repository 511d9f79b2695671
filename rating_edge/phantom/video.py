"""Scanner-screen video of the phantom, with exact per-frame truth (file or live, paced).

What it shows: a vendor-like screen (banner, side panel, depth scale, grey or colour bar, logo,
coloured accents, mode label, clock), always OUTSIDE the ultrasound image areas, and inside them the
phantom images of one joint section at a time. A scripted session per section: probe motion into the
section (transition), GS mode, Doppler mode on the same section, sometimes a frozen period (the image
area stops changing; a snowflake and "FROZEN" appear in the UI), sometimes back to GS; with
`dropouts=True` short no-signal periods (all-black frames) in between. In `dual` layout the left area
shows GS and the right area Doppler of the same section.

Truth (one dict per frame; `write_video` also writes it as one JSON line per frame):
    {"frame", "t", "layout", "signal", "frozen", "section", "transition",
     "grades": {"sh", "vs", "combined"},
     "areas": [{"box": [x, y, w, h], "mode": "gs"|"doppler", "doppler_box": [x, y, w, h] | null,
                "roi": [x, y, w, h], "doppler_fraction": float}]}
in screen pixels; `doppler_fraction` = Doppler-coloured pixels / pixels of the area (0 in GS mode).
`box` is exactly the rectangle of ultrasound pixels (the UI background around it is uniform; the top
row is the probe face, so motion is lateral only). Mode rule: `mode` is the mode the scanner is in. In Doppler mode the image area always
contains the gray Doppler box outline and the UI shows the colour bar (CDUS red/blue or PDUS
orange), also when the section has VS = 0 and there is no colour in the box; in GS mode there is no box
outline, the UI shows a gray bar, and the image area has no colour at all. Frozen frames keep the mode
of the frame they froze. No-signal frames have `signal: false` and `areas: []`. `transition` frames
(probe moving into a new section, GS mode) belong to the new section.

Live use (runtime capture source):
    cap = open_live("phantom://?seed=1&fps=30&size=1280x720&layout=single&seconds=20&dropouts=1&theme=aurora")
    while True:
        ok, frame = cap.read()          # blocks until the next frame is due; a slow reader skips frames
        if not ok: break                # `seconds` elapsed (omit it to run forever) or released
        truth = cap.last_truth          # truth of the frame just returned
    cap.release()
or `for frame, truth in cap: ...`. URL parameters (all optional): seed (0), fps (30), size (WxH,
1280x720), layout (single|dual), seconds (none = endless), dropouts (0|1), theme (a name in THEMES;
default picked by seed), realtime (1; 0 = no pacing, frames as fast as read).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

import cv2
import numpy as np

from rating_edge.errors import RatingEdgeError
from rating_edge.phantom.joint import make_pair, sample_anatomy, sample_grades

LAYOUTS = ("single", "dual")
AREA_ASPECT = {"single": 1.25, "dual": 0.9}   # width / height of one image area
N_VARIANTS = 3                                 # speckle variants cycled while live, so live frames differ
PULSE = (1.0, 0.9, 0.8)                        # colour level of each variant (pulsatile flow)
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class Theme:
    name: str
    bg: tuple            # screen background (BGR), uniform
    banner: bool         # info banner on top
    banner_bg: tuple
    panel: str | None    # "left" | "right" | None: parameter panel
    panel_bg: tuple
    bar_side: str        # colour bar "left" | "right" of the image area(s)
    accent: tuple        # logo / marker / highlight colour
    text: tuple
    logo: str
    footer: bool         # status bar at the bottom


THEMES = {
    "aurora": Theme("aurora", (0, 0, 0), True, (60, 34, 18), "right", (28, 20, 14), "left", (0, 140, 255),
                    (235, 235, 235), "AURORA", False),
    "meridian": Theme("meridian", (12, 12, 12), False, (0, 0, 0), "left", (40, 40, 40), "right", (70, 200, 60),
                      (210, 230, 210), "MERIDIAN", True),
    "halcyon": Theme("halcyon", (0, 0, 0), True, (48, 48, 48), None, (0, 0, 0), "right", (230, 200, 0),
                     (255, 255, 255), "HALCYON", True),
    "sierra": Theme("sierra", (20, 10, 6), True, (90, 50, 110), "left", (45, 25, 30), "left", (200, 70, 210),
                    (240, 225, 240), "SIERRA", False),
    "tundra": Theme("tundra", (0, 0, 0), False, (0, 0, 0), "right", (22, 32, 22), "right", (0, 215, 240),
                    (200, 200, 200), "TUNDRA", False),
}


def parse_size(text) -> tuple[int, int]:
    """'1280x720' or (W, H) -> (W, H), validated."""
    if isinstance(text, str):
        parts = text.lower().replace("*", "x").split("x")
        try:
            w, h = (int(p) for p in parts)
        except ValueError:
            raise RatingEdgeError(f"size {text!r} must look like WIDTHxHEIGHT, e.g. 1280x720") from None
    else:
        try:
            w, h = (int(v) for v in text)
        except (TypeError, ValueError):
            raise RatingEdgeError(f"size {text!r} must be (width, height)") from None
    if w < 320 or h < 240 or w > 7680 or h > 4320:
        raise RatingEdgeError(f"size {w}x{h} must lie between 320x240 and 7680x4320")
    return w, h


def _box(x, y, w, h):
    return [int(x), int(y), int(w), int(h)]


class _Layout:
    """Where everything goes on the screen, for one (size, theme, layout)."""

    def __init__(self, W: int, H: int, theme: Theme, layout: str):
        u = H / 720.0
        self.u = u
        self.banner = (0, 0, W, int(round(54 * u))) if theme.banner else None
        self.footer = (0, H - int(round(34 * u)), W, int(round(34 * u))) if theme.footer else None
        pw = int(round(0.16 * W))
        top = self.banner[3] if self.banner else 0
        bottom = self.footer[1] if self.footer else H
        self.panel = None
        x0, x1 = 0, W
        if theme.panel == "left":
            self.panel = (0, top, pw, bottom - top)
            x0 = pw
        elif theme.panel == "right":
            self.panel = (W - pw, top, pw, bottom - top)
            x1 = W - pw
        col_bar = int(round(84 * u))    # colour bar and its labels
        col_scale = int(round(56 * u))  # depth scale and its labels
        m = int(round(14 * u))
        head = int(round(30 * u))       # room above the areas for the mode label
        left_col, right_col = (col_bar, col_scale) if theme.bar_side == "left" else (col_scale, col_bar)
        ax0, ax1 = x0 + left_col + m, x1 - right_col - m
        ay0, ay1 = top + head + m, bottom - m
        aw_avail, ah_avail = ax1 - ax0, ay1 - ay0
        a = AREA_ASPECT[layout]
        gap = int(round(12 * u))
        if layout == "single":
            ah = int(min(ah_avail, aw_avail / a))
            aw = int(ah * a)
            ax = ax0 + (aw_avail - aw) // 2
            ay = ay0 + (ah_avail - ah) // 2
            self.areas = [(ax, ay, aw, ah)]
        else:
            aw = int(min((aw_avail - gap) / 2, ah_avail * a))
            ah = int(aw / a)
            ax = ax0 + (aw_avail - (2 * aw + gap)) // 2
            ay = ay0 + (ah_avail - ah) // 2
            self.areas = [(ax, ay, aw, ah), (ax + aw + gap, ay, aw, ah)]
        if min(aw, ah) < 100:
            raise RatingEdgeError(f"screen {W}x{H} leaves an image area of only {aw}x{ah} pixels; use a larger size")
        left, right = self.areas[0][0], self.areas[-1][0] + self.areas[-1][2]
        bw = max(6, int(round(14 * u)))
        if theme.bar_side == "left":
            self.bar = (left - m - bw, ay + ah // 8, bw, ah // 3)
            self.scale_x = right + max(3, int(round(6 * u)))
            self.scale_dir = 1
        else:
            self.bar = (right + m, ay + ah // 8, bw, ah // 3)
            self.scale_x = left - max(3, int(round(6 * u))) - 1
            self.scale_dir = -1
        self.label_xy = (self.areas[0][0], ay - max(4, int(round(10 * u))))
        self.W, self.H = W, H


def _put(img, text, xy, scale, colour, thick=1):
    cv2.putText(img, text, (int(xy[0]), int(xy[1])), FONT, scale, colour, thick, cv2.LINE_AA)


def _snowflake(img, c, r, colour, thick):
    for k in range(3):
        a = np.pi * k / 3
        dx, dy = r * np.cos(a), r * np.sin(a)
        cv2.line(img, (int(c[0] - dx), int(c[1] - dy)), (int(c[0] + dx), int(c[1] + dy)), colour, thick, cv2.LINE_AA)


def _colour_bar(kind: str, mode: str, n: int) -> np.ndarray:
    """(n, 3) BGR colours top -> bottom."""
    t = np.linspace(1, 0, n)[:, None]
    if mode == "gs":
        v = np.round(255 * t).astype(np.uint8)
        return np.repeat(v, 3, axis=1)
    if kind == "cdus":
        s = 2 * t - 1  # +1 top (toward) .. -1 bottom (away)
        m = np.abs(s)
        main = np.where(m < 0.06, 0, 120 + 135 * m)
        sub = 0.5 * main * m * m
        b = np.where(s < 0, main, 0)
        r = np.where(s < 0, 0, main)
        return np.clip(np.concatenate([b, sub, r], axis=1), 0, 255).astype(np.uint8)
    r = 90 + 165 * t
    g = 0.5 * r * t ** 1.5
    return np.clip(np.concatenate([np.zeros_like(r), g, r], axis=1), 0, 255).astype(np.uint8)


class PhantomScanner:
    """Deterministic scanner-screen frames: `frame(i)` depends only on the constructor arguments and i.

    Sections are rendered once (lazily) and only animated per frame (sub-window motion, cycled
    speckle variants), so a 1280x720 frame costs a copy and a few text draws.
    """

    def __init__(self, seed: int = 0, size=(1280, 720), fps: float = 30, layout: str = "single",
                 theme: str | None = None, dropouts: bool = False, doppler_kind: str | None = None):
        self.seed = int(seed)
        if self.seed < 0:
            raise RatingEdgeError(f"seed must be >= 0, got {seed}")
        self.W, self.H = parse_size(size)
        self.fps = float(fps)
        if not (1 <= self.fps <= 240):
            raise RatingEdgeError(f"fps {fps} must lie between 1 and 240")
        if layout not in LAYOUTS:
            raise RatingEdgeError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        self.layout = layout
        rng = np.random.default_rng([self.seed, 7])
        names = sorted(THEMES)
        pick_theme = names[int(rng.integers(len(names)))]
        pick_kind = ("cdus", "pdus")[int(rng.integers(2))]
        if theme is None:
            theme = pick_theme
        if theme not in THEMES:
            raise RatingEdgeError(f"unknown theme {theme!r}; choose one of {names}")
        self.theme = THEMES[theme]
        self.kind = doppler_kind or pick_kind
        if self.kind not in ("cdus", "pdus"):
            raise RatingEdgeError(f"doppler kind must be cdus or pdus, got {self.kind!r}")
        self.dropouts = bool(dropouts)
        self.L = _Layout(self.W, self.H, self.theme, layout)
        self._sections: dict[int, dict] = {}
        self._segments: list[dict] = []
        self._sched_rng = np.random.default_rng([self.seed, 11])
        self._chrome: dict = {}
        self._frozen_cache: dict = {}

    # ---------------------------------------------------------------- timeline
    def n_frames(self, seconds: float) -> int:
        return max(1, int(round(float(seconds) * self.fps)))

    def _sec(self, lo, hi):
        return max(1, int(round(self._sched_rng.uniform(lo, hi) * self.fps)))

    def _extend(self):
        """Append one section's script to the timeline (the schedule RNG runs in order, so it is
        the same whatever frames are asked for first)."""
        r = self._sched_rng
        start = self._segments[-1]["end"] if self._segments else 0
        sec = (self._segments[-1]["section"] + 1) if self._segments else 0
        plan = []
        if sec > 0:
            plan.append(("transition", "gs", self._sec(0.5, 0.9)))
        plan.append(("live", "gs", self._sec(1.5, 3.0)))
        plan.append(("live", "doppler", self._sec(2.0, 3.5)))
        if r.random() < 0.5:
            plan.append(("frozen", "doppler", self._sec(0.8, 1.8)))
        if r.random() < 0.35:
            plan.append(("live", "gs", self._sec(0.6, 1.2)))
        if self.dropouts and r.random() < 0.6:
            # never right before a freeze: a frozen image must follow the live image it holds
            ks = [k for k in range(1, len(plan) + 1) if k == len(plan) or plan[k][0] != "frozen"]
            k = ks[int(r.integers(len(ks)))]
            plan.insert(k, ("dropout", None, self._sec(0.15, 0.5)))
        for kind, mode, n in plan:
            seg = dict(kind=kind, mode=mode, start=start, end=start + n, section=sec)
            if kind == "frozen":
                seg["hold"] = start - 1   # the image of the frame before the freeze
            self._segments.append(seg)
            start += n

    def _segment(self, i: int) -> dict:
        if i < 0:
            raise RatingEdgeError(f"frame index must be >= 0, got {i}")
        while not self._segments or self._segments[-1]["end"] <= i:
            self._extend()
        lo, hi = 0, len(self._segments) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self._segments[mid]["end"] <= i:
                lo = mid + 1
            else:
                hi = mid
        return self._segments[lo]

    # ---------------------------------------------------------------- sections
    def _section(self, k: int) -> dict:
        s = self._sections.get(k)
        if s is not None:
            return s
        rng = np.random.default_rng([self.seed, 3, k])
        sh, vs = sample_grades(rng)
        aw, ah = self.L.areas[0][2], self.L.areas[0][3]
        m = max(4, int(round(0.04 * aw)))
        rh = ah                      # the top row is the probe face: motion is lateral only
        rw = max(aw + 2 * m, int(round(rh * 1.25)))
        pair = make_pair(rng, sh, vs, self.kind, size=(rh, rw), anatomy=sample_anatomy(rng))
        # window of the rendered image that the area shows, centred on the ROI
        rx, ry, rrw, rrh = pair.roi
        cx = int(np.clip(rx + rrw // 2 - (aw + 2 * m) // 2, 0, rw - (aw + 2 * m)))
        win = slice(0, rh), slice(cx, cx + aw + 2 * m)
        gray = pair.gs[win][:, :, 0].astype(np.int16)
        sig = pair.signal_mask[win]
        colour = pair.doppler[win][sig]
        # the Doppler box, kept inside the part of the window that every motion offset shows
        bx, by, bw, bh = pair.doppler_box
        bx0, by0 = max(bx - cx, 2 * m + 1), max(by, 1)
        bx1, by1 = min(bx - cx + bw - 1, aw - 2), min(by + bh - 1, ah - 2)
        shade = int(rng.integers(170, 215))
        inside = np.zeros_like(sig)
        inside[by0 + 1:by1, bx0 + 1:bx1] = True
        sig = sig & inside                      # colour only inside the box outline
        colour = pair.doppler[win][sig]
        colsum = np.concatenate([[0], np.cumsum(sig.sum(axis=0))])
        gs_v, dop_v = [], []
        for v in range(N_VARIANTS):
            noise = np.round(rng.normal(0, 3.0, gray.shape)).astype(np.int16)
            g = cv2.cvtColor(np.clip(gray + noise, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
            d = g.copy()
            # pulsatile flow: the colour brightens and fades over the cycle; the coloured pixels stay
            # the same, and scaling keeps every pixel's saturation and chroma >= 100 (still "colour")
            d[sig] = np.round(colour * PULSE[v]).astype(np.uint8)
            cv2.rectangle(d, (bx0, by0), (bx1, by1), (shade, shade, shade), 1)
            gs_v.append(g)
            dop_v.append(d)
        s = dict(sh=sh, vs=vs, combined=max(sh, vs), m=m, gs=gs_v, dop=dop_v, colsum=colsum,
                 roi=(rx - cx, ry, rrw, rrh),
                 dbox=(bx0, by0, bx1 - bx0 + 1, by1 - by0 + 1),
                 phase=rng.uniform(0, 2 * np.pi, 2))
        self._sections[k] = s
        if len(self._sections) > 6:  # keep memory flat on endless live runs
            del self._sections[min(self._sections)]
        return s

    def _offset(self, s: dict, i: int) -> tuple[int, int]:
        """Hand motion: a slow, small lateral wander of the probe inside the rendered margin."""
        t = i / self.fps
        m = s["m"]
        dx = int(round(m * 0.8 * np.sin(2 * np.pi * t / 3.7 + s["phase"][0])))
        return dx, 0

    def _area_image(self, s: dict, i: int, mode: str, shift=(0, 0)):
        aw, ah = self.L.areas[0][2], self.L.areas[0][3]
        dx, dy = self._offset(s, i)
        dx = int(np.clip(dx + shift[0], -s["m"], s["m"]))
        y0, x0 = 0, s["m"] + dx
        src = (s["gs"] if mode == "gs" else s["dop"])[i % N_VARIANTS]
        return src[y0:y0 + ah, x0:x0 + aw], (x0, y0)

    # ---------------------------------------------------------------- chrome
    def _chrome_for(self, mode: str, frozen: bool) -> np.ndarray:
        key = (mode, frozen)
        if key in self._chrome:
            return self._chrome[key]
        L, th = self.L, self.theme
        u = L.u
        img = np.empty((self.H, self.W, 3), np.uint8)
        img[:] = th.bg
        fs = 0.5 * u
        t1 = max(1, int(round(1.2 * u)))
        if L.banner:
            x, y, w, h = L.banner
            cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), th.banner_bg, -1)
            cy = y + h // 2
            cv2.circle(img, (int(24 * u), cy), int(13 * u), th.accent, -1, cv2.LINE_AA)
            _put(img, th.logo, (int(44 * u), cy + int(8 * u)), 0.8 * u, th.accent, max(1, int(2 * u)))
            _put(img, "ANON^PATIENT   MSK Finger   L18-5", (int(240 * u), cy + int(6 * u)), fs, th.text, t1)
            _put(img, "2026-11-29", (w - int(330 * u), cy + int(6 * u)), fs, th.text, t1)
        else:
            # no banner: logo in the corner of the screen, still outside the areas
            cv2.circle(img, (int(18 * u), int(18 * u)), int(9 * u), th.accent, -1, cv2.LINE_AA)
            _put(img, th.logo, (int(32 * u), int(25 * u)), 0.6 * u, th.accent, max(1, int(2 * u)))
        if L.panel:
            x, y, w, h = L.panel
            cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), th.panel_bg, -1)
            lines = ["Freq 18 MHz", "Gain 52", "DR 60", "Depth 1.2 cm", "Focus 0.6 cm", "MI 0.8  TIS 0.1"]
            if mode == "doppler" or self.layout == "dual":
                lines += ["", "CF Gain 60" if self.kind == "cdus" else "PD Gain 58", "PRF 0.8 kHz", "WF 50 Hz"]
            yy = y + int(40 * u)
            for ln in lines:
                _put(img, ln, (x + int(12 * u), yy), fs, th.text, t1)
                yy += int(26 * u)
            cv2.rectangle(img, (x + int(10 * u), y + h - int(60 * u)), (x + w - int(10 * u), y + h - int(30 * u)),
                          th.accent, max(1, int(2 * u)))
            _put(img, "MSK", (x + int(18 * u), y + h - int(38 * u)), fs, th.accent, t1)
        if L.footer:
            x, y, w, h = L.footer
            cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), th.banner_bg if th.banner else (30, 30, 30), -1)
            _put(img, "TIS 0.1  MI 0.8   27 Hz", (x + int(20 * u), y + h - int(11 * u)), fs, th.text, t1)
            cv2.circle(img, (w - int(30 * u), y + h // 2), int(8 * u), th.accent, -1, cv2.LINE_AA)
        # depth scale and focus marker beside the areas (outside them)
        ax, ay, aw, ah = L.areas[0] if L.scale_dir < 0 else L.areas[-1]
        sx, d = L.scale_x, L.scale_dir
        for k in range(13):
            yk = ay + int(round(k * (ah - 1) / 12))
            ln = int((10 if k % 4 == 0 else 5) * u) + 1
            cv2.line(img, (sx, yk), (sx + d * ln, yk), (230, 230, 230), 1)
            if k % 4 == 0:
                lab = f"{k / 10:.1f}"
                tx = sx + d * int(14 * u) if d > 0 else sx - int(44 * u)
                _put(img, lab, (tx, yk + int(5 * u)), 0.4 * u, th.text, 1)
        fy = ay + ah // 2
        tri = np.array([[sx + d * 2, fy], [sx + d * int(11 * u + 3), fy - int(6 * u + 2)],
                        [sx + d * int(11 * u + 3), fy + int(6 * u + 2)]], np.int32)
        cv2.fillConvexPoly(img, tri, th.accent, cv2.LINE_AA)
        # grey or colour bar
        bx, by, bw, bh = L.bar
        bar_mode = "doppler" if (mode == "doppler" or self.layout == "dual") else "gs"
        col = _colour_bar(self.kind, bar_mode, bh)
        img[by:by + bh, bx:bx + bw] = col[:, None, :]
        cv2.rectangle(img, (bx - 1, by - 1), (bx + bw, by + bh), (200, 200, 200), 1)
        lx = bx - int(48 * u) if self.theme.bar_side == "left" else bx + bw + int(5 * u)
        if bar_mode == "doppler":
            top, bot = ("+6.2", "-6.2") if self.kind == "cdus" else ("PD", "")
            _put(img, top, (lx, by + int(10 * u)), 0.4 * u, th.text, 1)
            _put(img, bot, (lx, by + bh), 0.4 * u, th.text, 1)
            _put(img, "cm/s" if self.kind == "cdus" else "dB", (lx, by + bh // 2 + int(4 * u)), 0.4 * u, th.text, 1)
        # mode labels above each area, with a coloured orientation marker
        modes = ["gs", "doppler"] if self.layout == "dual" else [mode]
        for (ax, ay, aw, ah), md in zip(L.areas, modes):
            lab = "B" if md == "gs" else ("CF" if self.kind == "cdus" else "PD")
            _put(img, lab, (ax + int(22 * u), ay - int(10 * u)), 0.6 * u, th.text, max(1, int(1.5 * u)))
            cv2.circle(img, (ax + int(8 * u), ay - int(16 * u)), max(2, int(5 * u)), th.accent, -1, cv2.LINE_AA)
        if frozen:
            ax, ay, aw, ah = L.areas[-1]
            c = (ax + aw - int(110 * u), ay - int(16 * u))
            _snowflake(img, c, max(3, int(9 * u)), th.accent, max(1, int(2 * u)))
            _put(img, "FROZEN", (c[0] + int(16 * u), c[1] + int(7 * u)), 0.6 * u, th.accent, max(1, int(2 * u)))
        self._chrome[key] = img
        return img

    # ---------------------------------------------------------------- frames
    def _compose(self, i: int, seg: dict):
        """(image-area contents per area, truth areas) for a live or transition frame i."""
        s = self._section(seg["section"])
        modes = ["gs", "doppler"] if self.layout == "dual" else [seg["mode"]]
        shift = (0, 0)
        prev = None
        if seg["kind"] == "transition":
            p = (i - seg["start"] + 1) / (seg["end"] - seg["start"] + 1)
            prev = self._section(seg["section"] - 1)
            shift = (int(round(s["m"] * (1 - p))), 0)
        imgs, areas = [], []
        for (ax, ay, aw, ah), md in zip(self.L.areas, modes):
            img, (x0, y0) = self._area_image(s, i, md, shift)
            if prev is not None and md == "gs":   # Doppler (dual) shows only the new section: exact colour truth
                old, _ = self._area_image(prev, i, md, (-int(round(prev["m"] * p)), 0))
                img = cv2.addWeighted(old, 1 - p, img, p, 0)
            rx, ry, rw, rh = s["roi"]
            bx, by, bw, bh = s["dbox"]
            frac = 0.0
            if md == "doppler":
                frac = round(float(s["colsum"][x0 + aw] - s["colsum"][x0]) / (aw * ah), 6)
            areas.append({"box": _box(ax, ay, aw, ah), "mode": md,
                          "doppler_box": _box(ax + bx - x0, ay + by - y0, bw, bh) if md == "doppler" else None,
                          "roi": _box(ax + rx - x0, ay + ry - y0, rw, rh), "doppler_fraction": frac})
            imgs.append(img)
        return imgs, areas

    def frame(self, i: int):
        """(BGR uint8 (H, W, 3), truth dict) of frame i."""
        i = int(i)
        seg = self._segment(i)
        t = round(i / self.fps, 6)
        truth = {"frame": i, "t": t, "layout": self.layout, "signal": True, "frozen": False,
                 "section": seg["section"], "transition": seg["kind"] == "transition"}
        if seg["kind"] == "dropout":
            s = self._section(seg["section"])
            truth.update(signal=False, grades={"sh": s["sh"], "vs": s["vs"], "combined": s["combined"]}, areas=[])
            return np.zeros((self.H, self.W, 3), np.uint8), truth
        if seg["kind"] == "frozen":
            hold = seg["hold"]
            cached = self._frozen_cache.get(hold)
            if cached is None:
                cached = self._compose(hold, self._segment(hold))
                self._frozen_cache = {seg["hold"]: cached}
            imgs, areas = cached
            mode = areas[0]["mode"] if self.layout == "single" else "gs"
            truth["frozen"] = True
        else:
            imgs, areas = self._compose(i, seg)
            mode = seg["mode"]
        out = self._chrome_for(mode, truth["frozen"]).copy()
        for (ax, ay, aw, ah), img in zip(self.L.areas, imgs):
            out[ay:ay + ah, ax:ax + aw] = img
        self._clock(out, i, truth["frozen"])
        s = self._section(seg["section"])
        truth["grades"] = {"sh": s["sh"], "vs": s["vs"], "combined": s["combined"]}
        truth["areas"] = areas
        return out, truth

    def _clock(self, img, i, frozen):
        u, th, L = self.L.u, self.theme, self.L
        secs = int(i / self.fps)
        text = f"10:{(12 + secs // 60) % 60:02d}:{secs % 60:02d}"
        if L.banner:
            x = L.banner[2] - int(150 * u)
            y = L.banner[3] // 2 + int(6 * u)
        elif L.panel:
            x, y = L.panel[0] + int(12 * u), L.panel[1] + L.panel[3] - int(80 * u)
        else:
            x, y = self.W - int(140 * u), int(25 * u)
        _put(img, text, (x, y), 0.5 * u, th.text, max(1, int(1.2 * u)))
        if frozen:
            _put(img, f"Cine {i % 97 + 1}/97", (x, y + int(22 * u)) if not L.banner else (x - int(150 * u), y),
                 0.45 * u, th.accent, 1)

    def __iter__(self):
        i = 0
        while True:
            yield self.frame(i)
            i += 1


def write_video(out_mp4, seconds: float, fps: float = 30, size=(1280, 720), layout: str = "single", seed: int = 0,
                theme: str | None = None, dropouts: bool = False, progress=None):
    """Render `seconds` of scanner screen to an mp4 ('mp4v') and a JSONL truth sidecar `<out>.jsonl`."""
    out_mp4 = Path(out_mp4)
    if float(seconds) <= 0:
        raise RatingEdgeError(f"seconds must be positive, got {seconds}")
    if out_mp4.suffix.lower() != ".mp4":
        raise RatingEdgeError(f"{out_mp4}: the video file name must end in .mp4")
    sc = PhantomScanner(seed=seed, size=size, fps=fps, layout=layout, theme=theme, dropouts=dropouts)
    n = sc.n_frames(seconds)
    out_mp4.parent.mkdir(parents=True, exist_ok=True)
    side = out_mp4.with_name(out_mp4.name + ".jsonl")
    vw = cv2.VideoWriter(str(out_mp4), cv2.VideoWriter_fourcc(*"mp4v"), sc.fps, (sc.W, sc.H))
    if not vw.isOpened():
        raise RatingEdgeError(f"{out_mp4}: OpenCV cannot open an mp4v video writer here")
    try:
        with open(side, "w") as f:
            for i in range(n):
                img, truth = sc.frame(i)
                vw.write(img)
                f.write(json.dumps(truth) + "\n")
                if progress is not None:
                    progress(i)
    finally:
        vw.release()
    return out_mp4, side


# -------------------------------------------------------------------- live
_URL_KEYS = {"seed", "fps", "size", "layout", "seconds", "dropouts", "theme", "realtime"}


def _flag(v: str, key: str) -> bool:
    if v.lower() in ("1", "true", "yes", "on"):
        return True
    if v.lower() in ("0", "false", "no", "off", ""):
        return False
    raise RatingEdgeError(f"phantom URL: {key}={v!r} must be 0 or 1")


def parse_phantom_url(url: str) -> dict:
    """'phantom://?seed=1&fps=30&size=1280x720&layout=single&seconds=20&dropouts=1&theme=aurora' -> kwargs
    of `LiveScanner` (only the keys given)."""
    p = urlparse(url)
    if p.scheme != "phantom":
        raise RatingEdgeError(f"{url!r} is not a phantom URL (phantom://?seed=1&fps=30&...)")
    out = {}
    for k, v in parse_qsl(p.query, keep_blank_values=True):
        if k not in _URL_KEYS:
            raise RatingEdgeError(f"phantom URL: unknown parameter {k!r}; known: {sorted(_URL_KEYS)}")
        try:
            if k == "seed":
                out[k] = int(v)
            elif k in ("fps", "seconds"):
                out[k] = float(v)
            elif k == "size":
                out[k] = parse_size(v)
            elif k in ("dropouts", "realtime"):
                out[k] = _flag(v, k)
            elif k == "layout":
                if v not in LAYOUTS:
                    raise RatingEdgeError(f"phantom URL: layout must be one of {LAYOUTS}, got {v!r}")
                out[k] = v
            elif k == "theme":
                if v not in THEMES:
                    raise RatingEdgeError(f"phantom URL: unknown theme {v!r}; choose one of {sorted(THEMES)}")
                out[k] = v
        except ValueError:
            raise RatingEdgeError(f"phantom URL: {k}={v!r} is not a number") from None
    return out


class LiveScanner:
    """The phantom screen as a paced capture source (cv2.VideoCapture-like `read`).

    Pacing follows a wall clock from the first read: a reader faster than `fps` waits, a slower one
    gets the frame that is due now (frames in between are skipped and counted in `skipped`), like a
    real frame grabber where the latest frame wins.
    """

    def __init__(self, seed: int = 0, fps: float = 30, size=(1280, 720), layout: str = "single",
                 seconds: float | None = None, dropouts: bool = False, theme: str | None = None,
                 realtime: bool = True, clock=time.monotonic, sleep=time.sleep):
        self.scanner = PhantomScanner(seed=seed, size=size, fps=fps, layout=layout, theme=theme, dropouts=dropouts)
        self.fps = self.scanner.fps
        self.size = (self.scanner.W, self.scanner.H)
        self.total = None if seconds is None else self.scanner.n_frames(seconds)
        self.realtime = realtime
        self._clock, self._sleep = clock, sleep
        self._t0 = None
        self._next = 0
        self._open = True
        self.skipped = 0
        self.last_truth = None
        self.last_index = None

    def isOpened(self) -> bool:
        return self._open

    def read(self):
        if not self._open or (self.total is not None and self._next >= self.total):
            return False, None
        i = self._next
        if self.realtime:
            now = self._clock()
            if self._t0 is None:
                self._t0 = now
            due = int((now - self._t0) * self.fps)
            if due > i:
                self.skipped += due - i
                i = due
            else:
                wait = self._t0 + i / self.fps - now
                if wait > 0:
                    self._sleep(wait)
        if self.total is not None and i >= self.total:
            self._next = self.total
            return False, None
        img, truth = self.scanner.frame(i)
        self._next = i + 1
        self.last_truth, self.last_index = truth, i
        return True, img

    def get(self, prop: int) -> float:
        if prop == cv2.CAP_PROP_FPS:
            return self.fps
        if prop == cv2.CAP_PROP_FRAME_WIDTH:
            return float(self.size[0])
        if prop == cv2.CAP_PROP_FRAME_HEIGHT:
            return float(self.size[1])
        if prop == cv2.CAP_PROP_FRAME_COUNT:
            return float(self.total if self.total is not None else -1)
        if prop == cv2.CAP_PROP_POS_FRAMES:
            return float(self._next)
        return 0.0

    def release(self) -> None:
        self._open = False

    def __iter__(self):
        while True:
            ok, img = self.read()
            if not ok:
                return
            yield img, self.last_truth


def open_live(url: str) -> LiveScanner:
    return LiveScanner(**parse_phantom_url(url))
