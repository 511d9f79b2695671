"""Augmentation and class-balanced resampling, on uint8 images (numpy + OpenCV, not torchvision).

Augmented images stay uint8 RGB, i.e. exactly the kind of input an engine receives, and then go
through `preprocess.normalize` like every other network input.
"""
from __future__ import annotations

import cv2
import numpy as np


def balanced_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n indices drawn with replacement so every present class is equally likely (redrawn each epoch)."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    w = np.zeros(len(labels), np.float64)
    for c, k in zip(classes, counts):
        w[labels == c] = 1.0 / (k * len(classes))
    return rng.choice(len(labels), size=n, replace=True, p=w / w.sum())


def random_crop(img: np.ndarray, rng: np.random.Generator, crop_min: float) -> np.ndarray:
    """Crop a square of side in [crop_min*S, S] at a random place and resize it back to S."""
    s = img.shape[0]
    side = int(round(s * rng.uniform(crop_min, 1.0)))
    if side >= s:
        return img
    y, x = rng.integers(0, s - side + 1, size=2)
    return cv2.resize(img[y:y + side, x:x + side], (s, s), interpolation=cv2.INTER_AREA)


def colour_jitter(img: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Brightness and contrast jitter (scanner gain differs between machines); hue is left alone
    because the red Doppler paint is the signal."""
    if amount <= 0:
        return img
    b = rng.uniform(1 - amount, 1 + amount)
    c = rng.uniform(1 - amount, 1 + amount)
    x = img.astype(np.float32)
    m = x.mean()
    x = ((x - m) * c + m) * b
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def augment_batch(batch: np.ndarray, rng: np.random.Generator, crop_min: float, jitter: float) -> np.ndarray:
    out = np.empty_like(batch)
    for i, img in enumerate(batch):
        out[i] = colour_jitter(random_crop(img, rng, crop_min), rng, jitter)
    return out
