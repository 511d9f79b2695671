"""The naive reference: every network one by one in eager PyTorch, as the paper ran them.

It is the baseline for benchmarks and the ground truth for every equivalence check, so it stays
deliberately plain.
"""
from __future__ import annotations

import numpy as np
import torch

from rating_edge.model.checkpoint import load_models
from rating_edge.preprocess import IMAGENET_MEAN, IMAGENET_STD, check_batch, normalize
from rating_edge.spec import parse_network_id


class ReferenceEnsemble:
    def __init__(self, spec, models: dict, manifest: dict | None = None, path=None):
        self.spec = spec
        self.models = models
        self.manifest = manifest or {}
        self.path = path

    def to_tensors(self, gs: np.ndarray, doppler: np.ndarray):
        s = self.spec.input_size
        check_batch(gs, s, "gs")
        check_batch(doppler, s, "doppler")
        if gs.shape[0] != doppler.shape[0]:
            from rating_edge.errors import RatingEdgeError

            raise RatingEdgeError(f"gs and doppler batches differ in size: {gs.shape[0]} vs {doppler.shape[0]}")
        return (torch.from_numpy(normalize(gs, IMAGENET_MEAN, IMAGENET_STD)),
                torch.from_numpy(normalize(doppler, IMAGENET_MEAN, IMAGENET_STD)))

    @torch.no_grad()
    def predict_probs(self, gs: np.ndarray, doppler: np.ndarray) -> dict:
        """uint8 RGB NHWC (B, S, S, 3) pair -> {"sh_prob", "vs_prob"}: (B, folds, 3, seeds) P(grade > t)."""
        x_gs, x_dop = self.to_tensors(gs, doppler)
        b = x_gs.shape[0]
        sp = self.spec
        out = {"sh_prob": np.zeros((b, sp.folds, sp.tasks, sp.seeds), np.float32),
               "vs_prob": np.zeros((b, sp.folds, sp.tasks, sp.seeds), np.float32)}
        for nid, net in self.models.items():
            fold, module, task, seed = parse_network_id(nid)
            logits = net(x_gs, x_dop)
            out[f"{module}_prob"][:, fold, task, seed] = torch.softmax(logits, dim=1)[:, 1].numpy()
        return out


def load_ensemble(path, verify_hash: bool = True) -> ReferenceEnsemble:
    """Load a checkpoint folder (hash- and shape-checked) as the eager reference."""
    spec, models, manifest = load_models(path, verify_hash)
    return ReferenceEnsemble(spec, models, manifest, path)
