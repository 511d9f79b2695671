"""Jigsaw self-supervised pre-training (Noroozi & Favaro): 3x3 tiles, classify which permutation.

The permutation set is fixed (greedy maximal minimum Hamming distance from a seeded start), so the
task is the same for every fold and every run. Tiles are cropped with a random gap inside their cell
so the network cannot solve the puzzle from edge continuity alone.
"""
from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from rating_edge.model.resnet import ResNet18
from rating_edge.preprocess import normalize
from rating_edge.train.config import TrainConfig

GRID = 3


@lru_cache(maxsize=8)
def permutation_set(k: int, seed: int = 0) -> np.ndarray:
    """(k, 9) permutations, each as far (Hamming) from the others as a greedy search gets."""
    allp = np.array(list(itertools.permutations(range(GRID * GRID))), np.int8)
    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(allp)))]
    dmin = (allp != allp[chosen[0]]).sum(1)
    for _ in range(k - 1):
        nxt = int(np.argmax(dmin))
        chosen.append(nxt)
        dmin = np.minimum(dmin, (allp != allp[nxt]).sum(1))
    return allp[chosen].astype(np.int64)


def make_puzzles(images: np.ndarray, perm_ids: np.ndarray, perms: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """uint8 (B,S,S,3) -> uint8 (B, 9, t, t, 3): tile i of the puzzle is cell perms[p][i] of the image."""
    b, s = images.shape[:2]
    cell = s // GRID
    t = max(cell - max(cell // 8, 1), 8)
    out = np.empty((b, GRID * GRID, t, t, 3), np.uint8)
    for j in range(b):
        for i, c in enumerate(perms[perm_ids[j]]):
            r, q = divmod(int(c), GRID)
            dy, dx = rng.integers(0, cell - t + 1, size=2)
            out[j, i] = images[j, r * cell + dy:r * cell + dy + t, q * cell + dx:q * cell + dx + t]
    return out


class JigsawNet(nn.Module):
    """A shared backbone over the 9 tiles, concatenated features, an MLP over the permutation classes."""

    def __init__(self, width: int, n_perms: int, hidden: int = 256):
        super().__init__()
        self.backbone = ResNet18(2, width)
        d = self.backbone.feature_dim
        self.head = nn.Sequential(nn.Linear(GRID * GRID * d, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, n_perms))

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:  # (B, 9, 3, t, t)
        b = tiles.shape[0]
        f = self.backbone.features(tiles.flatten(0, 1))
        return self.head(f.reshape(b, -1))


def pretrain_backbone(images: np.ndarray, width: int, cfg: TrainConfig, seed: int, on_epoch=None):
    """-> (ResNet18 whose conv/BN weights are jigsaw-pretrained, per-epoch losses). Its fc is fresh."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    perms = permutation_set(cfg.jigsaw_permutations)
    net = JigsawNet(width, len(perms))
    n = len(images)

    def batch_fn(idx):
        p = rng.integers(0, len(perms), size=len(idx))
        tiles = make_puzzles(images[idx], p, perms, rng)
        x = normalize(tiles.reshape((-1,) + tiles.shape[2:]))
        x = torch.from_numpy(x).reshape(len(idx), GRID * GRID, 3, tiles.shape[2], tiles.shape[3])
        return x, torch.from_numpy(p)

    losses = _fit_jigsaw(net, batch_fn, n, cfg, rng, on_epoch)
    backbone = net.backbone
    fresh = ResNet18(2, width)
    backbone.fc.load_state_dict(fresh.fc.state_dict())
    return backbone.eval(), losses


def _fit_jigsaw(net, batch_fn, n, cfg, rng, on_epoch):
    """`loop.train_epochs` with the target (the permutation) drawn together with the batch."""
    import torch.nn.functional as F

    from rating_edge.train.loop import train_epochs

    def batch_loss(b):
        x, y = batch_fn(b)
        return F.cross_entropy(net(x), y)

    return train_epochs(net, cfg.jigsaw_epochs, cfg, lambda: rng.permutation(n), batch_loss, on_epoch)

