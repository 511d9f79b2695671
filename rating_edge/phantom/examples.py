"""Regenerate the example images under docs/ (so the README pictures are reproducible).

    python -m rating_edge.phantom.examples docs/
"""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

from rating_edge.phantom.joint import make_pair, sample_anatomy
from rating_edge.phantom.video import PhantomScanner


def _label(img, text):
    out = img.copy()
    cv2.putText(out, text, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _doppler_frame(sc: PhantomScanner, start: int = 0):
    """First live Doppler frame (not frozen) of a section with VS >= 2."""
    for i in range(start, start + 3000):
        img, t = sc.frame(i)
        if t["signal"] and not t["frozen"] and not t["transition"] and t["grades"]["vs"] >= 2 \
                and any(a["mode"] == "doppler" for a in t["areas"]):
            return img
    raise RuntimeError("no Doppler frame with VS >= 2 found")


def write_examples(out) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    an = sample_anatomy(np.random.default_rng(21))
    pair_c = make_pair(np.random.default_rng(5), 3, 2, "cdus", anatomy=an)
    pair_p = make_pair(np.random.default_rng(5), 3, 2, "pdus", anatomy=an)
    for name, img in (("phantom_gs.jpg", pair_c.gs), ("phantom_cdus.jpg", pair_c.doppler),
                      ("phantom_pdus.jpg", pair_p.doppler)):
        cv2.imwrite(str(out / name), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        written.append(out / name)
    # grade gallery: ROI crops of one joint, SH 0-3 (top: GS) and VS 0-3 (bottom: CDUS on SH 3)
    top, bottom = [], []
    for g in range(4):
        p = make_pair(np.random.default_rng(30 + g), g, 0, "cdus", anatomy=an)
        x, y, w, h = p.roi
        top.append(_label(p.gs[y:y + h, x:x + w], f"SH {g}"))
        q = make_pair(np.random.default_rng(40 + g), 3 if g else 1, g, "cdus", anatomy=an)
        x, y, w, h = q.roi
        bottom.append(_label(q.doppler[y:y + h, x:x + w], f"VS {g}"))
    grid = np.vstack([np.hstack(top), np.hstack(bottom)])
    cv2.imwrite(str(out / "phantom_grades.jpg"), grid, [cv2.IMWRITE_JPEG_QUALITY, 90])
    written.append(out / "phantom_grades.jpg")
    for layout, theme, seed in (("single", "aurora", 4), ("dual", "meridian", 2)):
        sc = PhantomScanner(seed=seed, size=(1280, 720), fps=30, layout=layout, theme=theme)
        img = cv2.resize(_doppler_frame(sc), (960, 540), interpolation=cv2.INTER_AREA)
        p = out / f"phantom_screen_{layout}.jpg"
        cv2.imwrite(str(p), img, [cv2.IMWRITE_JPEG_QUALITY, 85])
        written.append(p)
    return written


if __name__ == "__main__":
    for p in write_examples(sys.argv[1] if len(sys.argv) > 1 else "docs"):
        print(p)
