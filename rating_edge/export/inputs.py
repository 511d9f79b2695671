"""Test pairs for verify and bench: a labelled dataset, phantom pairs, or random images.

Phantom pairs go through the same preprocessing as the runtime (crop ROI, Doppler transform, resize),
so a verify run sees what a deployed engine sees, not uniform noise.
"""
from __future__ import annotations

import numpy as np

from rating_edge.errors import RatingEdgeError
from rating_edge.preprocess import PreprocessParams


def phantom_pairs(n: int, params: PreprocessParams, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from rating_edge.phantom.dataset import phantom_arrays

    if n < 1:
        raise RatingEdgeError(f"--phantom needs at least 1 pair, got {n}")
    gs, dop, _ = phantom_arrays(n, params, seed)
    return gs, dop


def random_pairs(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, size, size, 3), np.uint8), rng.integers(0, 256, (n, size, size, 3), np.uint8))


def dataset_pairs(data_dir, params: PreprocessParams, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    from rating_edge.dataset import load_arrays, read_labels

    recs = read_labels(data_dir)
    if limit:
        recs = recs[:limit]
    gs, dop, _, _ = load_arrays(data_dir, params, recs)
    return gs, dop
