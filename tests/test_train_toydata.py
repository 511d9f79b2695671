"""A small, clearly learnable dataset in the labelled layout, for the training/evaluation tests.

SH grade = size of a dark blob on speckle; VS grade = amount of red inside it. Independent of the
phantom so these tests exercise training alone.
"""
from __future__ import annotations

import cv2
import numpy as np

from rating_edge.dataset import PairRecord, read_labels, write_labels


def write_toy_dataset(out, n: int = 40, seed: int = 0, patients: int = 10, size: int = 80):
    rng = np.random.default_rng(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n):
        sh = int(i % 4)
        vs = 0 if sh == 0 else int(rng.integers(0, 4))
        base = np.clip(rng.normal(120, 25, (size, size)), 0, 255).astype(np.uint8)
        gs = cv2.cvtColor(base, cv2.COLOR_GRAY2BGR)
        c = (size // 2 + int(rng.integers(-4, 5)), size // 2 + int(rng.integers(-4, 5)))
        if sh:
            cv2.ellipse(gs, c, (6 + 8 * sh, 4 + 5 * sh), 0, 0, 360, (25, 25, 25), -1)
        dop = gs.copy()
        for k in range(vs * 3):
            p = (c[0] + int(rng.integers(-4 * sh, 4 * sh + 1)), c[1] + int(rng.integers(-3 * sh, 3 * sh + 1)))
            cv2.circle(dop, p, 2 + vs, (0, 0, 230), -1)
        pid = f"p{i:04d}"
        cv2.imwrite(str(out / "images" / f"{pid}_gs.png"), gs)
        cv2.imwrite(str(out / "images" / f"{pid}_doppler.png"), dop)
        recs.append(PairRecord(pid, f"pat{i % patients:03d}", f"images/{pid}_gs.png", f"images/{pid}_doppler.png",
                               sh, vs, max(sh, vs), None, None, "cdus"))
    write_labels(out, recs)
    return out


def test_toy_dataset_reads_back(tmp_path):
    write_toy_dataset(tmp_path, n=8, patients=4)
    recs = read_labels(tmp_path)
    assert len(recs) == 8
    assert all(r.vs == 0 for r in recs if r.sh == 0)
    assert all(r.combined == max(r.sh, r.vs) for r in recs)
