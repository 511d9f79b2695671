"""ECOC decoding and the MULTITUDE rule (docs/design/model.md), numpy only.

Shared by verify, evaluation, calibration gates and the runtime, so a grade means the same thing
everywhere. Everything is vectorised over leading batch dimensions.
"""
from __future__ import annotations

import numpy as np

N_GRADES = 4
N_TASKS = 3

# Codeword of grade g is [g>0, g>1, g>2]; shape (4, 3).
CODEWORDS = (np.arange(N_GRADES)[:, None] > np.arange(N_TASKS)[None, :]).astype(np.float64)


def ecoc_decode(probs) -> np.ndarray:
    """Decode P(grade > t) of shape (..., 3, S) (task, seed) to integer grades of shape (...).

    Hard bits (p > 0.5) pick the grade at the smallest Hamming distance to its codeword (each task
    bit repeated per seed); ties go to the smallest L1 distance between probabilities and codeword,
    and remaining ties to the lower grade.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim < 2 or p.shape[-2] != N_TASKS:
        raise ValueError(f"ecoc_decode expects probabilities of shape (..., 3, seeds); got {p.shape}")
    if p.shape[-1] < 1:
        raise ValueError("ecoc_decode needs at least one seed")
    if not np.all(np.isfinite(p)):
        raise ValueError("ecoc_decode got non-finite probabilities")
    bits = (p > 0.5).astype(np.float64)
    cw = CODEWORDS[:, :, None]  # (4, 3, 1) broadcast over seeds
    # distances: (..., 4)
    ham = np.abs(bits[..., None, :, :] - cw).sum(axis=(-1, -2))
    l1 = np.abs(p[..., None, :, :] - cw).sum(axis=(-1, -2))
    ham_min = ham.min(axis=-1, keepdims=True)
    l1_masked = np.where(ham == ham_min, l1, np.inf)
    l1_min = l1_masked.min(axis=-1, keepdims=True)
    # exact float ties in L1 fall to the lower grade: argmax returns the first True
    best = (l1_masked == l1_min)
    return np.argmax(best, axis=-1).astype(np.int64)


def _valid_mask() -> np.ndarray:
    sh = np.arange(N_GRADES)[:, None]
    vs = np.arange(N_GRADES)[None, :]
    return ~((sh == 0) & (vs > 0))


VALID = _valid_mask()  # (4, 4): VALID[sh, vs]


def multitude(sh, vs):
    """Combine per-model grades with the MULTITUDE rule.

    `sh`, `vs`: integer arrays of shape (..., m) (m scoring models). Returns `(sh, vs, combined)`
    arrays of shape (...). The weight of (v, u) is q_SH[v] * q_VS[u]; SH = 0 with VS > 0 is invalid;
    ties go to the first (SH, VS) in lexicographic order, so all-zero weights give (0, 0).
    """
    sh = np.asarray(sh)
    vs = np.asarray(vs)
    if sh.shape != vs.shape or sh.ndim < 1:
        raise ValueError(f"multitude expects sh and vs of equal shape (..., m); got {sh.shape} and {vs.shape}")
    if not (np.issubdtype(sh.dtype, np.integer) and np.issubdtype(vs.dtype, np.integer)):
        raise ValueError("multitude expects integer grades")
    if sh.size and (sh.min() < 0 or sh.max() >= N_GRADES or vs.min() < 0 or vs.max() >= N_GRADES):
        raise ValueError("grades must lie in 0..3")
    g = np.arange(N_GRADES)
    q_sh = (sh[..., None] == g).sum(axis=-2)  # (..., 4)
    q_vs = (vs[..., None] == g).sum(axis=-2)
    w = q_sh[..., :, None] * q_vs[..., None, :]  # (..., 4, 4)
    w = np.where(VALID, w, -1)
    flat = w.reshape(w.shape[:-2] + (N_GRADES * N_GRADES,))
    idx = np.argmax(flat, axis=-1)  # first maximum = lexicographic tie-break
    out_sh = (idx // N_GRADES).astype(np.int64)
    out_vs = (idx % N_GRADES).astype(np.int64)
    return out_sh, out_vs, np.maximum(out_sh, out_vs)


def agreement_count(per_model, final) -> np.ndarray:
    """How many of the m models voted for the final grade (shown on the score panel)."""
    per_model = np.asarray(per_model)
    final = np.asarray(final)
    return (per_model == final[..., None]).sum(axis=-1)


def score_probs(sh_prob, vs_prob) -> dict:
    """From engine outputs (B, m, 3, S) to per-model and final grades, for every consumer."""
    sh_models = ecoc_decode(sh_prob)  # (B, m)
    vs_models = ecoc_decode(vs_prob)
    sh, vs, comb = multitude(sh_models, vs_models)
    return {
        "sh_models": sh_models,
        "vs_models": vs_models,
        "sh": sh,
        "vs": vs,
        "combined": comb,
        "sh_agree": agreement_count(sh_models, sh),
        "vs_agree": agreement_count(vs_models, vs),
    }
