"""Temporal aggregation: MULTITUDE over (recent pairs of one section) x (5 models).

One pair can flip a grade on a noisy frame; the radiologist holds the probe still for a moment, so the
votes of the last few pairs of the same section are pooled the same way the paper pools the 5 models.
"stable" means the last few single-pair results all equal the pooled result.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from rating_edge.scoring import multitude


@dataclass
class Aggregate:
    sh: int
    vs: int
    combined: int
    pairs: int
    votes: int
    sh_agree: int
    vs_agree: int
    stable: bool


class TemporalAggregator:
    def __init__(self, window: int = 8, max_age_s: float = 5.0, stable_k: int = 3):
        self.window = window
        self.max_age_s = max_age_s
        self.stable_k = stable_k
        self.section = None
        self.items = deque(maxlen=window)  # (t, sh_models, vs_models, (sh, vs))

    def reset(self):
        self.items.clear()
        self.section = None

    def add(self, section: int, t: float, sh_models, vs_models, final) -> Aggregate:
        if section != self.section:
            self.items.clear()
            self.section = section
        while self.items and t - self.items[0][0] > self.max_age_s:
            self.items.popleft()
        self.items.append((t, np.asarray(sh_models, np.int64).ravel(), np.asarray(vs_models, np.int64).ravel(),
                           (int(final[0]), int(final[1]))))
        sh_all = np.concatenate([it[1] for it in self.items])
        vs_all = np.concatenate([it[2] for it in self.items])
        sh, vs, comb = (int(v) for v in multitude(sh_all, vs_all))
        recent = [it[3] for it in list(self.items)[-self.stable_k:]]
        stable = len(recent) >= self.stable_k and all(r == (sh, vs) for r in recent)
        return Aggregate(sh, vs, comb, len(self.items), int(sh_all.size), int((sh_all == sh).sum()),
                         int((vs_all == vs).sum()), stable)
