"""The optimisation loop shared by every stage: Adam, step decay, cross-entropy, balanced resampling."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rating_edge.preprocess import normalize
from rating_edge.train.augment import augment_batch, balanced_indices
from rating_edge.train.config import TrainConfig


def train_epochs(net: nn.Module, epochs: int, cfg: TrainConfig, order: Callable[[], np.ndarray],
                 batch_loss: Callable[[np.ndarray], torch.Tensor], on_epoch: Callable[[int, float], None] | None = None,
                 params=None) -> list[float]:
    """Adam + step decay over `epochs`; each epoch visits `order()` in batches; returns mean losses.

    The one optimisation loop of every stage (supervised networks, heads, jigsaw pretraining)."""
    opt = torch.optim.Adam(params if params is not None else net.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_epochs, gamma=cfg.gamma)
    losses = []
    net.train()
    for epoch in range(epochs):
        idx = order()
        total, count = 0.0, 0
        for start in range(0, len(idx), cfg.batch):
            b = idx[start:start + cfg.batch]
            if len(b) < 2:  # BatchNorm cannot train on one sample
                continue
            loss = batch_loss(b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
            count += len(b)
        sched.step()
        losses.append(total / max(count, 1))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    net.eval()
    return losses


def fit(net: nn.Module, batch_fn: Callable[[np.ndarray], torch.Tensor], labels: np.ndarray, epochs: int,
        cfg: TrainConfig, rng: np.random.Generator, on_epoch: Callable[[int, float], None] | None = None,
        params=None) -> list[float]:
    """Train `net` on `batch_fn(indices)` -> inputs; returns the mean training loss of each epoch.

    Each epoch draws len(labels) class-balanced samples anew, so rare grades are seen as often as
    common ones without discarding data.
    """
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    return train_epochs(net, epochs, cfg, lambda: balanced_indices(labels, n, rng),
                        lambda b: F.cross_entropy(net(batch_fn(b)), torch.from_numpy(labels[b])), on_epoch, params)


def image_batches(images: np.ndarray, cfg: TrainConfig, rng: np.random.Generator, augment: bool = True):
    """batch_fn over uint8 RGB images: augment, then the one `normalize`."""
    def batch_fn(idx: np.ndarray) -> torch.Tensor:
        x = images[idx]
        if augment:
            x = augment_batch(x, rng, cfg.crop_min, cfg.jitter)
        return torch.from_numpy(normalize(x))
    return batch_fn


@torch.no_grad()
def extract_features(backbone, images: np.ndarray, batch: int = 256) -> torch.Tensor:
    """512-d (8*width) features of frozen backbone in eval mode: H's training inputs."""
    backbone.eval()
    out = [backbone.features(torch.from_numpy(normalize(images[i:i + batch]))) for i in range(0, len(images), batch)]
    return torch.cat(out)


@torch.no_grad()
def predict_prob(net: nn.Module, batch_fn, n: int, batch: int = 256) -> np.ndarray:
    net.eval()
    out = [torch.softmax(net(batch_fn(np.arange(i, min(n, i + batch)))), 1)[:, 1] for i in range(0, n, batch)]
    return torch.cat(out).numpy()
