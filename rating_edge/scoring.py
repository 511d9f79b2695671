"""ECOC decoding and the MULTITUDE rule (docs/design/model.md), numpy only.

Shared by verify, evaluation, calibration gates, distillation and the runtime, so a grade means the
same thing everywhere. Everything is vectorised over leading batch dimensions.

Decisions follow the authors' published code (SSRSGJYD/RATING, MULTITUDE.py): each network's bit is
its probability compared with that network's own threshold (`Thresholds`; 0.5 and `>` when a model
carries none), ECOC picks the grade at the smallest Hamming distance with ties to the lowest grade,
and MULTITUDE falls back to the most voted SH and VS grades when no valid combination has a positive
weight. A tie-break on probabilities (this module's first rule) was dropped: the paper's system does
not use it, and a grade that depends on it would differ from the paper's on the same outputs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

N_GRADES = 4
N_TASKS = 3
MODULES = ("sh", "vs")
DEFAULT_THRESHOLD = 0.5
OPS = (">", ">=")

# Codeword of grade g is [g>0, g>1, g>2]; shape (4, 3).
CODEWORDS = (np.arange(N_GRADES)[:, None] > np.arange(N_TASKS)[None, :]).astype(np.float64)


@dataclass(frozen=True)
class Thresholds:
    """Per network decision rule on P(grade > t): bit = p > t (`strict`) or p >= t.

    Arrays of shape (folds, 3, seeds) per module. Stored in checkpoints and packages as
    {"sh": {"threshold": [[[...]]], "strict": [[[...]]]}, "vs": ...}; absent means 0.5 and `>`.
    """

    sh: np.ndarray
    vs: np.ndarray
    sh_strict: np.ndarray
    vs_strict: np.ndarray

    @classmethod
    def default(cls, folds: int, seeds: int) -> "Thresholds":
        t = np.full((folds, N_TASKS, seeds), DEFAULT_THRESHOLD)
        s = np.ones((folds, N_TASKS, seeds), bool)
        return cls(t, t.copy(), s, s.copy())

    def value(self, module: str) -> np.ndarray:
        return self.sh if module == "sh" else self.vs

    def strict(self, module: str) -> np.ndarray:
        return self.sh_strict if module == "sh" else self.vs_strict

    @property
    def is_default(self) -> bool:
        return all(np.all(self.value(m) == DEFAULT_THRESHOLD) and np.all(self.strict(m)) for m in MODULES)

    def decide(self, module: str, probs) -> np.ndarray:
        """Hard bits (..., folds, 3, seeds) of one module's probabilities."""
        p = np.asarray(probs, np.float64)
        t, s = self.value(module), self.strict(module)
        if p.shape[-3:] != t.shape:
            raise ValueError(f"{module} probabilities of shape {p.shape} do not fit thresholds of shape {t.shape}")
        return np.where(s, p > t, p >= t)

    def to_dict(self) -> dict:
        return {m: {"threshold": self.value(m).tolist(), "strict": self.strict(m).tolist()} for m in MODULES}

    @classmethod
    def from_dict(cls, d: dict | None, folds: int, seeds: int) -> "Thresholds":
        """From a model's record; None/{} gives the default. Raises ValueError naming what is wrong."""
        if not d:
            return cls.default(folds, seeds)
        out = {}
        for m in MODULES:
            rec = d.get(m)
            if not isinstance(rec, dict):
                raise ValueError(f"thresholds: no record for module {m!r}")
            t = np.asarray(rec.get("threshold"), np.float64)
            s = np.asarray(rec.get("strict"))
            shape = (folds, N_TASKS, seeds)
            if t.shape != shape or s.shape != shape:
                raise ValueError(f"thresholds of {m}: shape {t.shape}/{s.shape}, the model has {shape}")
            if not np.all(np.isfinite(t)):
                raise ValueError(f"thresholds of {m}: non-finite values")
            if s.dtype != bool:
                raise ValueError(f"thresholds of {m}: 'strict' must hold booleans")
            out[m], out[m + "_strict"] = t, s
        return cls(**out)

    @classmethod
    def from_meta(cls, meta: dict) -> "Thresholds":
        """A package's (model.json) or checkpoint's (ensemble.json) thresholds."""
        spec = meta.get("spec") or {}
        return cls.from_dict(meta.get("thresholds"), int(spec.get("folds", 5)), int(spec.get("seeds", 2)))


def _check_probs(p: np.ndarray) -> None:
    if p.ndim < 2 or p.shape[-2] != N_TASKS:
        raise ValueError(f"ecoc_decode expects probabilities of shape (..., 3, seeds); got {p.shape}")
    if p.shape[-1] < 1:
        raise ValueError("ecoc_decode needs at least one seed")
    if not np.all(np.isfinite(p)):
        raise ValueError("ecoc_decode got non-finite probabilities")


def ecoc_decode_bits(bits) -> np.ndarray:
    """Hard bits (..., 3, S) -> the grade at the smallest Hamming distance; ties to the lowest grade
    (np.argmin's first minimum, as MULTITUDE.py's ECOC)."""
    b = np.asarray(bits, np.float64)
    ham = np.abs(b[..., None, :, :] - CODEWORDS[:, :, None]).sum(axis=(-1, -2))  # (..., 4)
    return np.argmin(ham, axis=-1).astype(np.int64)


def ecoc_decode(probs, threshold=DEFAULT_THRESHOLD, strict=True) -> np.ndarray:
    """Decode P(grade > t) of shape (..., 3, S) (task, seed) to integer grades of shape (...).

    `threshold`/`strict` broadcast against (..., 3, S): bit = p > threshold (strict) or p >= threshold.
    """
    p = np.asarray(probs, dtype=np.float64)
    _check_probs(p)
    bits = np.where(strict, p > threshold, p >= threshold)
    return ecoc_decode_bits(bits)


def _valid_mask() -> np.ndarray:
    sh = np.arange(N_GRADES)[:, None]
    vs = np.arange(N_GRADES)[None, :]
    return ~((sh == 0) & (vs > 0))


VALID = _valid_mask()  # (4, 4): VALID[sh, vs]


def multitude(sh, vs):
    """Combine per-model grades with the MULTITUDE rule.

    `sh`, `vs`: integer arrays of shape (..., m) (m scoring models). Returns `(sh, vs, combined)`
    arrays of shape (...). The weight of (v, u) is q_SH[v] * q_VS[u]; SH = 0 with VS > 0 is invalid;
    ties go to the first (SH, VS) in lexicographic order. When no valid combination has a positive
    weight (every model says SH 0 and none says VS 0) the result is (most voted SH, most voted VS),
    first grade on ties, as the official code does, even though that pair is SH 0 with VS > 0.
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
    w = np.where(VALID, w, 0)
    flat = w.reshape(w.shape[:-2] + (N_GRADES * N_GRADES,))
    idx = np.argmax(flat, axis=-1)  # first maximum = lexicographic tie-break
    none = flat.max(axis=-1) <= 0
    out_sh = np.where(none, np.argmax(q_sh, axis=-1), idx // N_GRADES).astype(np.int64)
    out_vs = np.where(none, np.argmax(q_vs, axis=-1), idx % N_GRADES).astype(np.int64)
    return out_sh, out_vs, np.maximum(out_sh, out_vs)


def agreement_count(per_model, final) -> np.ndarray:
    """How many of the m models voted for the final grade (shown on the score panel)."""
    per_model = np.asarray(per_model)
    final = np.asarray(final)
    return (per_model == final[..., None]).sum(axis=-1)


def score_probs(sh_prob, vs_prob, thresholds: Thresholds | None = None) -> dict:
    """From engine outputs (B, m, 3, S) to the 60 decisions, per-model and final grades: the one
    decoding every consumer uses (runtime, verify, evaluate, gates, distillation)."""
    sh_p, vs_p = np.asarray(sh_prob, np.float64), np.asarray(vs_prob, np.float64)
    _check_probs(sh_p)
    _check_probs(vs_p)
    th = thresholds or Thresholds.default(sh_p.shape[-3], sh_p.shape[-1])
    sh_bits, vs_bits = th.decide("sh", sh_p), th.decide("vs", vs_p)
    sh_models = ecoc_decode_bits(sh_bits)  # (B, m)
    vs_models = ecoc_decode_bits(vs_bits)
    sh, vs, comb = multitude(sh_models, vs_models)
    return {
        "sh_bits": sh_bits,
        "vs_bits": vs_bits,
        "sh_models": sh_models,
        "vs_models": vs_models,
        "sh": sh,
        "vs": vs,
        "combined": comb,
        "sh_agree": agreement_count(sh_models, sh),
        "vs_agree": agreement_count(vs_models, vs),
    }
