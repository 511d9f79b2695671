"""Write a labelled phantom dataset in the layout real users bring (`rating_edge.dataset`).

Pairs are grouped by patient: one joint anatomy per patient, re-scanned with a new probe placement,
gain and grades per pair, so a trainer that splits folds by patient sees unseen joints at test time.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from rating_edge.dataset import PairRecord, write_labels
from rating_edge.errors import RatingEdgeError
from rating_edge.phantom.joint import (
    BASE_H,
    BASE_W,
    make_pair,
    sample_anatomy,
    sample_grades,
)

DOPPLER_CHOICES = ("cdus", "pdus", "mixed")
PNG = [cv2.IMWRITE_PNG_COMPRESSION, 3]

# Every SH and VS grade occurs in any dataset of at least this many pairs.
_COVER = [(0, 0), (1, 1), (2, 2), (3, 3), (1, 0), (2, 1), (3, 2), (1, 3)]


def plan_grades(n: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """n (sh, vs) pairs: one of each covering pair first (when n allows), the rest sampled, shuffled."""
    grades = list(_COVER[:n]) + [sample_grades(rng) for _ in range(max(0, n - len(_COVER)))]
    order = rng.permutation(n)
    return [grades[i] for i in order]


def write_dataset(out, n: int, seed: int = 0, doppler: str = "cdus", patients: int | None = None,
                  size=(BASE_H, BASE_W), progress=None) -> Path:
    """Write `n` pairs to `out` (created; must be empty). Returns the folder.

    `patients` defaults to about one patient per 4 pairs. `progress(i)` is called after each pair.
    """
    out = Path(out)
    n = int(n)
    if n < 1:
        raise RatingEdgeError(f"--n must be at least 1, got {n}")
    if int(seed) < 0:
        raise RatingEdgeError(f"--seed must be >= 0, got {seed}")
    if doppler not in DOPPLER_CHOICES:
        raise RatingEdgeError(f"--doppler must be one of {DOPPLER_CHOICES}, got {doppler!r}")
    n_pat = max(1, (n + 3) // 4) if patients is None else int(patients)
    if n_pat < 1 or n_pat > n:
        raise RatingEdgeError(f"--patients must lie between 1 and n={n}, got {n_pat}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RatingEdgeError(f"{out} exists and is not an empty folder; choose a new one")
    (out / "images").mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(seed)
    grades = plan_grades(n, rng)
    # every patient gets at least one pair; the rest are spread at random
    owner = np.concatenate([np.arange(n_pat), rng.integers(0, n_pat, n - n_pat)])
    owner = owner[rng.permutation(n)]
    anatomies = [sample_anatomy(np.random.default_rng([seed, 1, p])) for p in range(n_pat)]
    kinds = [doppler] * n if doppler != "mixed" else list(rng.choice(["cdus", "pdus"], n))
    records = []
    for i in range(n):
        sh, vs = grades[i]
        prng = np.random.default_rng([seed, 2, i])
        pair = make_pair(prng, sh, vs, str(kinds[i]), size=size, anatomy=anatomies[owner[i]].jitter(prng))
        pid = f"pair{i:05d}"
        gs_file, dop_file = f"images/{pid}_gs.png", f"images/{pid}_doppler.png"
        # GS is stored as a one-channel PNG (R = G = B, so reading it as colour gives the same pixels)
        cv2.imwrite(str(out / gs_file), pair.gs[:, :, 0], PNG)
        cv2.imwrite(str(out / dop_file), pair.doppler, PNG)
        records.append(PairRecord(pid, f"patient{int(owner[i]):04d}", gs_file, dop_file, pair.sh, pair.vs,
                                  pair.combined, pair.roi, pair.roi, pair.kind))
        if progress is not None:
            progress(i)
    write_labels(out, records)
    return out


def phantom_arrays(n: int, params, seed: int = 0):
    """`n` fresh phantom pairs as network inputs, without touching disk: (gs, doppler, labels (n, 3)).

    Grades from `sample_grades`, both Doppler kinds in turn, and the one preprocessing implementation,
    so verify, bench and distillation see what a deployed engine sees."""
    import numpy as np

    from rating_edge.phantom.joint import DOPPLER_KINDS, make_pair, sample_grades
    from rating_edge.preprocess import prepare_pair

    rng = np.random.default_rng(seed)
    gs, dop, labels = [], [], []
    for i in range(n):
        sh, vs = sample_grades(rng)
        pair = make_pair(rng, sh, vs, DOPPLER_KINDS[i % len(DOPPLER_KINDS)])
        g, d = prepare_pair(pair.gs, pair.doppler, pair.roi, pair.roi, params)
        gs.append(g)
        dop.append(d)
        labels.append((sh, vs, max(sh, vs)))
    return np.stack(gs), np.stack(dop), np.asarray(labels, np.int64)
