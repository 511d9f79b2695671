"""Heatmap conventions shared by the fused graphs, the `none` assembly and the autograd reference.

Per SH network of task "> 0": cam = ReLU(sum_k alpha_k A_k) on layer4's activations A, with
alpha_k = d(z1 - z0)/dA_k averaged over positions (Grad-CAM on the log-odds). Maps of the folds x seeds
networks are averaged per input stream, then divided by their per-image maximum (+HEAT_EPS) to [0, 1].
"""
from __future__ import annotations

import numpy as np

HEAT_EPS = 1e-8
HEAT_TASK = 0  # task "grade > 0"


def normalize_heat(avg: np.ndarray) -> np.ndarray:
    """(B, h, w) averaged cams -> [0, 1] per image."""
    m = avg.reshape(avg.shape[0], -1).max(axis=1)
    return (avg / (m[:, None, None] + HEAT_EPS)).astype(np.float32)
