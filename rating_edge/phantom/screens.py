"""Phantom scanner screens with the geometries real scanners show, and their exact truth.

The video phantom (video.py) draws linear rectangles on tidy screens; real screens have sector and
convex fans (apex up or down, dark wings, cut by the screen edge), steered or fan-shaped Doppler boxes
outlined in grey, green or yellow with sparse flow, text and calipers inside the picture, touching dual
images, ECG strips, empty fans (probe in air, noise floor drawn: an area) and ring-down-only screens
(no picture: no area). `screen(seed)` renders one such screen; the truth
has the format of real-screens/truth.json (areas' boxes are the bounding boxes of the rendered
picture masks, so they are exact), and `write_screens` writes a folder `inspect --eval` can judge.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

SHAPES = ("sector", "convex", "linear", "inverted", "empty", "dual", "air")
OUTLINES = ((200, 200, 200), (90, 230, 90), (60, 220, 230))  # grey, green, yellow (BGR)


def _speckle(rng, h, w) -> np.ndarray:
    """Speckle-like gray texture with a few bright layers (uint8)."""
    s = rng.rayleigh(1.0, (h, w)).astype(np.float32)
    s = cv2.GaussianBlur(s, (0, 0), 1.2, sigmaY=0.8)
    yy = np.arange(h, dtype=np.float32)[:, None]
    layers = sum(np.exp(-((yy - rng.uniform(0.2, 0.9) * h) / rng.uniform(3, 12)) ** 2) for _ in range(3))
    img = s * (38 + 80 * layers) * np.exp(-yy / (1.6 * h))
    return np.clip(img, 0, 255).astype(np.uint8)


def _fan_mask(H, W, apex, r0, r1, half_angle, down=False) -> np.ndarray:
    """Pixels of an annular sector around `apex` (pointing down the screen, or up when `down`)."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    dx, dy = xx - apex[0], (apex[1] - yy) if down else (yy - apex[1])
    r = np.hypot(dx, dy)
    ang = np.abs(np.arctan2(dx, np.maximum(dy, 1e-3)))
    return (r >= r0) & (r <= r1) & (dy > 0) & (ang <= half_angle)


def _inside(mask, pts) -> bool:
    """Whether a polygon lies inside a picture mask."""
    poly = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(poly, [np.array(pts, np.int32)], 1)
    return not bool((poly.astype(bool) & ~mask).any())


def _bbox(mask) -> list:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _ui(img, rng, W, H, ecg: bool):
    """Header, parameter text, a grey bar and, optionally, an ECG strip: UI on black."""
    col = tuple(int(v) for v in rng.choice([(230, 230, 230), (120, 200, 255), (255, 220, 150)]))
    cv2.putText(img, "PHANTOM  MSK Finger  ANON", (10, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, col, 1, cv2.LINE_AA)
    cv2.putText(img, "12:04:56", (W - 110, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, col, 1, cv2.LINE_AA)
    for k, t in enumerate(["Gn 52", "DR 60", "FR 27", "MI 0.8"]):
        cv2.putText(img, t, (8, 70 + 22 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.45, col, 1, cv2.LINE_AA)
    bar = np.linspace(255, 0, 120).astype(np.uint8)
    img[60:180, W - 30:W - 20] = bar[:, None, None]
    if ecg:
        xs = np.arange(40, W - 160)
        ys = H - 30 - (8 * np.exp(-((xs % 140) - 70) ** 2 / 8.0) * 3).astype(int)
        cv2.polylines(img, [np.stack([xs, ys], 1).astype(np.int32)], False, (80, 220, 80), 1, cv2.LINE_AA)


def _inside_marks(img, rng, box):
    """Calipers with a dotted line, a focus arrow and text drawn inside the picture."""
    x, y, w, h = box
    p1 = (x + int(w * rng.uniform(0.35, 0.45)), y + int(h * 0.45))
    p2 = (p1[0] + int(w * 0.12), p1[1] + int(h * 0.2))
    for p in (p1, p2):
        cv2.drawMarker(img, p, (255, 255, 255), cv2.MARKER_CROSS, 11, 1)
    for t in np.linspace(0, 1, 12)[1:-1]:
        q = (int(p1[0] + t * (p2[0] - p1[0])), int(p1[1] + t * (p2[1] - p1[1])))
        cv2.circle(img, q, 1, (255, 255, 255), -1)
    cv2.putText(img, "20Hz", (x + w - 70, y + 40), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (230, 230, 230), 1, cv2.LINE_AA)


def screen(seed: int, size=(800, 600)):
    """(BGR screen, truth {"layout", "areas": [{box, shape, mode, doppler_box}]}) for one seed: the
    shape cycles through SHAPES, the rest (angles, depths, outline colour, Doppler or not) is random."""
    rng = np.random.default_rng([seed, 14])
    W, H = size
    shape = SHAPES[seed % len(SHAPES)]
    img = np.zeros((H, W, 3), np.uint8)
    _ui(img, rng, W, H, ecg=bool(rng.random() < 0.5))
    top, bottom = 45, H - 60
    masks = []
    if shape == "dual":  # two touching linear or convex pictures, independent content
        aw = (W - 160) // 2
        x0 = 80
        for k in range(2):
            m = np.zeros((H, W), bool)
            m[top + 10:bottom, x0 + k * aw:x0 + (k + 1) * aw] = True
            masks.append((m, "linear"))
    elif shape == "linear":
        aw = int(rng.uniform(0.5, 0.7) * W)
        x0 = (W - aw) // 2
        m = np.zeros((H, W), bool)
        m[top + 10:bottom, x0:x0 + aw] = True
        masks.append((m, "linear"))
    elif shape != "air":
        half = np.deg2rad(rng.uniform(35, 50) if shape != "convex" else rng.uniform(25, 35))
        down = shape == "inverted"
        r0 = 0 if shape == "sector" else rng.uniform(40, 90)
        depth = bottom - top - 10
        apex_y = top + 5 - r0 if not down else bottom + r0 - 5
        r1 = r0 + depth
        apex = (W // 2 + int(rng.integers(-30, 30)), apex_y)
        m = _fan_mask(H, W, apex, r0, r1, half, down)
        m[:top] = False
        masks.append((m, "sector"))
    areas = []
    if shape == "air":  # probe in air, no noise floor drawn: ring-down arcs only, no picture to score
        for k in range(4):
            cv2.ellipse(img, (W // 2, top - 40), (120, 60 + 12 * k), 0, 30, 150, (150, 150, 150), 2, cv2.LINE_AA)
    for m, geom in masks:
        tissue = _speckle(rng, H, W)
        if shape == "empty":  # probe in air: the noise floor and a ring-down under the probe
            tissue = np.zeros((H, W), np.uint8)
            yy = np.arange(H)[:, None]
            ring = (np.sin((yy - top) / 3.0) > 0.6) & (yy < top + 60)
            tissue[np.broadcast_to(ring, (H, W))] = 150
        g = np.maximum(tissue, 1)  # a scanner maps "no echo" just above the screen's black
        img[m] = np.repeat(g[m][:, None], 3, axis=1)
        areas.append({"box": _bbox(m), "shape": geom, "mode": "gs", "doppler_box": None})
    if shape in ("sector", "convex", "linear") and rng.random() < 0.6:
        a = areas[0]
        x, y, w, h = a["box"]
        colour = OUTLINES[int(rng.integers(len(OUTLINES)))]
        bh, bw = int(h * rng.uniform(0.35, 0.55)), int(w * rng.uniform(0.22, 0.32))
        cx, cy = x + w // 2 + int(rng.integers(-w // 10, w // 10)), y + int(h * 0.25)
        slant = int(bh * np.tan(np.deg2rad(rng.uniform(12, 22) * rng.choice([-1, 1]))))
        # a steered parallelogram (linear), a trapezoid, or a true fan segment between two beam lines
        # and two arcs around the apex (fans)
        if shape == "linear":
            quad = [(cx - bw // 2, cy), (cx + bw // 2, cy), (cx + bw // 2 + slant, cy + bh), (cx - bw // 2 + slant, cy + bh)]
        elif rng.random() < 0.5 and _inside(masks[0][0], trap := [(cx - bw // 2, cy), (cx + bw // 2, cy),
                                                                   (cx + bw // 2 + int(bh * 0.35), cy + bh),
                                                                   (cx - bw // 2 - int(bh * 0.35), cy + bh)]):
            quad = trap  # a trapezoid, when it fits in the fan (scanners keep the box inside the picture)
        else:
            sgn = -1 if shape == "inverted" else 1
            ra = float(np.hypot(cx - apex[0], cy - apex[1]))
            rb = ra + bh
            c = np.arctan2(cx - apex[0], sgn * (cy - apex[1]))
            da = min(0.5 * bw / ra, 0.8 * half)
            a0, a1 = np.clip(c - da, -half * 0.9, half * 0.9), np.clip(c + da, -half * 0.9, half * 0.9)
            arc = lambda r, a_s, a_e: [(apex[0] + r * np.sin(t), apex[1] + sgn * r * np.cos(t))
                                       for t in np.linspace(a_s, a_e, 24)]
            quad = arc(ra, a0, a1) + arc(rb, a1, a0)
        quad = np.round(np.array(quad)).astype(np.int32)
        inside = np.zeros((H, W), np.uint8)
        cv2.fillPoly(inside, [quad], 1)
        n_flow = int(rng.integers(0, 6))  # sparse flow, or none
        if rng.random() < 0.25:  # power Doppler: the box filled with confluent orange/yellow flash
            fill = np.zeros((H, W, 3), np.uint8)
            flash = _speckle(rng, H, W).astype(np.float32) / 255.0
            fill[..., 2] = 255
            fill[..., 1] = np.clip(90 + 200 * flash, 0, 255).astype(np.uint8)
            img[inside > 0] = fill[inside > 0]
            n_flow = 0
        for _ in range(n_flow):
            ys, xs = np.nonzero(inside)
            j = int(rng.integers(len(xs)))
            cv2.ellipse(img, (int(xs[j]), int(ys[j])), (int(rng.integers(3, 9)), int(rng.integers(2, 5))),
                        float(rng.uniform(0, 180)), 0, 360, (0, 0, 230) if rng.random() < 0.5 else (230, 60, 0), -1)
        cv2.polylines(img, [quad], True, colour, 1, cv2.LINE_AA)
        a["mode"] = "doppler"
        qx, qy = quad[:, 0], quad[:, 1]
        a["doppler_box"] = [int(qx.min()), int(qy.min()), int(qx.max() - qx.min() + 1), int(qy.max() - qy.min() + 1)]
    if areas and shape != "empty":
        _inside_marks(img, rng, areas[0]["box"])
    layout = "dual" if len(areas) == 2 else ("single" if areas else "none")
    return img, {"layout": layout, "areas": areas}


def write_screens(folder, n: int = 24, seed: int = 0, size=(800, 600)) -> Path:
    """n screens as PNG plus truth.json (the real-screens format) in `folder`; returns the truth path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    truth = {}
    for i in range(n):
        img, t = screen(seed + i, size)
        name = f"screen_{seed + i:04d}_{SHAPES[(seed + i) % len(SHAPES)]}.png"
        cv2.imwrite(str(folder / name), img)
        truth[name] = {"frame0": t}
    path = folder / "truth.json"
    path.write_text(json.dumps(truth, indent=1))
    return path
