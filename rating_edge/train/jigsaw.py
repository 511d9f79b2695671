"""Jigsaw self-supervised pre-training (Noroozi & Favaro): 3x3 tiles, classify which permutation.

The paper pre-trains its backbones this way with the original puzzle geometry, which the paper preset
keeps: the ROI resized to 225 px, 3x3 cells of 75 px, a 64 px tile from each cell, 1,000 permutations
(`TrainConfig.jigsaw_*`; the tiny preset scales these down to its 64 px input). The permutation set is
fixed (greedy maximal minimum Hamming distance from a seeded start), so the task is the same for every
fold and every run. Tiles are cropped at a random place inside their cell, leaving a gap between
neighbours, so the network cannot solve the puzzle from edge continuity alone.
"""
from __future__ import annotations

import itertools
from functools import lru_cache

import cv2
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
    cols = np.ascontiguousarray(allp.T)  # one contiguous row per tile position: 1,000 picks take seconds

    def distance(i):
        same = np.zeros(len(allp), np.uint8)
        for pos, v in enumerate(allp[i]):
            same += cols[pos] == v
        return GRID * GRID - same

    rng = np.random.default_rng(seed)
    chosen = [int(rng.integers(len(allp)))]
    dmin = distance(chosen[0])
    for _ in range(k - 1):
        nxt = int(np.argmax(dmin))
        chosen.append(nxt)
        np.minimum(dmin, distance(nxt), out=dmin)
    return allp[chosen].astype(np.int64)


def make_puzzles(images: np.ndarray, perm_ids: np.ndarray, perms: np.ndarray,
                 rng: np.random.Generator, tile: int | None = None) -> np.ndarray:
    """uint8 (B,S,S,3) -> uint8 (B, 9, t, t, 3): tile i of the puzzle is cell perms[p][i] of the image.

    Cells are S // 3 px; `tile` defaults to the cell less an eighth, so some gap always remains."""
    b, s = images.shape[:2]
    cell = s // GRID
    t = max(cell - max(cell // 8, 1), 8) if tile is None else int(tile)
    if not 0 < t <= cell:
        raise ValueError(f"jigsaw tile {t} px does not fit a {cell} px cell")
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
    images = resize_square(images, cfg.jigsaw_size)
    n = len(images)

    def batch_fn(idx):
        p = rng.integers(0, len(perms), size=len(idx))
        tiles = make_puzzles(images[idx], p, perms, rng, cfg.jigsaw_tile)
        x = normalize(tiles.reshape((-1,) + tiles.shape[2:]))
        x = torch.from_numpy(x).reshape(len(idx), GRID * GRID, 3, tiles.shape[2], tiles.shape[3])
        return x, torch.from_numpy(p)

    losses = _fit_jigsaw(net, batch_fn, n, cfg, rng, on_epoch)
    backbone = net.backbone
    fresh = ResNet18(2, width)
    backbone.fc.load_state_dict(fresh.fc.state_dict())
    return backbone.eval(), losses


def resize_square(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (B,S,S,3) -> (B,size,size,3), once before training (a no-op at the same size).

    The images are the ROI crops training already holds at the network input size (224 px for the paper
    preset), so the paper's 225 px puzzle image is resized from those, not from the original ROI."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    interp = cv2.INTER_AREA if images.shape[1] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(im, (size, size), interpolation=interp) for im in images])


def _fit_jigsaw(net, batch_fn, n, cfg, rng, on_epoch):
    """`loop.train_epochs` with the target (the permutation) drawn together with the batch."""
    import torch.nn.functional as F

    from rating_edge.train.loop import train_epochs

    def batch_loss(b):
        x, y = batch_fn(b)
        return F.cross_entropy(net(x), y)

    return train_epochs(net, cfg.jigsaw_epochs, cfg, lambda: rng.permutation(n), batch_loss, on_epoch)

