"""Calibration sets: preprocessed uint8 pairs in shards, with a manifest that makes them checkable.

INT8 scales are only as good as the images they were measured on, so a set records how it was made
(source, preprocessing parameters, sizes) and every shard's SHA-256, and loading refuses sets that
are empty, corrupted, made for another input size or preprocessing, or that look like constant or
random images instead of ultrasound (docs/design/precision.md: calibration with missing or random data must fail
loudly). No torch: the runtime machine may collect its own set.

    CALIB/
      calib.json        manifest
      shard-00000.npz   gs (n,S,S,3) uint8 RGB, doppler (n,S,S,3) uint8 RGB, labels (n,3) int64
                        [sh, vs, combined], -1 where unknown
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rating_edge.errors import CalibrationError
from rating_edge.manifest import read_manifest_json
from rating_edge.package import resolve_inside, sha256_file
from rating_edge.preprocess import PreprocessParams
from rating_edge.publish import publish, require_new_folder
from rating_edge.schemas import CALIB

MANIFEST = "calib.json"
FORMAT = "rating-edge-calib"
MIN_PAIRS = 300  # below this the scales are noisy: warn (docs/design/precision.md)
SHARD_SIZE = 256


class CalibrationWarning(UserWarning):
    """A calibration set that is usable but weaker than it should be (e.g. fewer than 300 pairs)."""


@dataclass
class CalibSet:
    path: Path | None
    gs: np.ndarray
    doppler: np.ndarray
    labels: np.ndarray
    manifest: dict

    def __len__(self) -> int:
        return int(self.gs.shape[0])

    @property
    def params(self) -> PreprocessParams:
        return PreprocessParams.from_dict(self.manifest["preprocess"])

    def subset(self, idx) -> "CalibSet":
        idx = np.asarray(idx, np.int64)
        return CalibSet(self.path, self.gs[idx], self.doppler[idx], self.labels[idx], self.manifest)


# ---------------------------------------------------------------- content checks

def doppler_fraction(doppler_rgb: np.ndarray, profile: str = "rating-edge") -> np.ndarray:
    """Share of painted (Doppler signal) pixels per transformed Doppler image, (N,): red for this
    project's profile, exactly (0, 0, 255) for the official one."""
    if profile == "rating-official":
        blue = (doppler_rgb[..., 0] == 0) & (doppler_rgb[..., 1] == 0) & (doppler_rgb[..., 2] == 255)
        return blue.reshape(len(doppler_rgb), -1).mean(axis=1)
    r = doppler_rgb[..., 0].astype(np.int16)
    g = doppler_rgb[..., 1].astype(np.int16)
    return ((r - g) > 60).reshape(len(doppler_rgb), -1).mean(axis=1)


def _neighbour_correlation(gray: np.ndarray) -> np.ndarray:
    """Lag-1 horizontal correlation per image: ~1 for ultrasound-like images, ~0 for random noise."""
    a = gray[:, :, :-1].reshape(len(gray), -1).astype(np.float64)
    b = gray[:, :, 1:].reshape(len(gray), -1).astype(np.float64)
    a -= a.mean(axis=1, keepdims=True)
    b -= b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return np.where(den > 0, (a * b).sum(axis=1) / np.maximum(den, 1e-12), 1.0)


def content_problems(gs: np.ndarray, doppler: np.ndarray, profile: str = "rating-edge") -> list[str]:
    """Why these arrays cannot be trusted as calibration images (empty list: fine). `profile`: the
    preprocessing profile the Doppler images must have been made with."""
    problems = []
    n = len(gs)
    for name, arr in (("gs", gs), ("doppler", doppler)):
        gray = arr.mean(axis=3)
        std = gray.reshape(n, -1).std(axis=1)
        const = float((std < 2.0).mean())
        if const > 0.1:
            problems.append(f"{const:.0%} of the {name} images are constant (blank frames or a dead source)")
            continue
        corr = float(np.median(_neighbour_correlation(gray)))
        if corr < 0.3:
            problems.append(f"the {name} images look like random noise (median neighbour-pixel correlation "
                            f"{corr:.2f}; ultrasound images are > 0.5)")
    if profile == "rating-official":
        # the official transform leaves no pixel above its saturation cut except the painted blue, so
        # painting again changes nothing; untransformed colour Doppler changes
        from rating_edge.preprocess_official import paint_blue

        changed = np.concatenate([(paint_blue(d.copy()) != d).any(axis=2).ravel() for d in doppler])
        off = float(changed.mean())
        if off > 0.01:
            problems.append(f"{off:.1%} of Doppler pixels are saturated colour, not the official blue paint: the "
                            "Doppler images were not made with the package's rating-official preprocessing")
        return problems
    # The Doppler transform paints signal pure red on a gray image, so G == B everywhere (a resize
    # only blends red with gray, which keeps G == B). Untransformed colour Doppler breaks this.
    gb = np.abs(doppler[..., 1].astype(np.int16) - doppler[..., 2].astype(np.int16)) > 2
    off = float(gb.mean())
    if off > 0.01:
        problems.append(f"{off:.1%} of Doppler pixels are neither gray nor red: the Doppler images were not "
                        "made with the Doppler transform (use rating_edge.preprocess.prepare_doppler)")
    return problems


# ---------------------------------------------------------------- selection

def balanced_order(labels: np.ndarray, dfrac: np.ndarray, seed: int = 0) -> np.ndarray:
    """An order of all indices that interleaves grade groups and Doppler-content levels.

    Taking the first k of it keeps every grade (where labels exist) and both little- and much-flow
    images in the set, so `--max` never calibrates on one kind of image only.
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    level = np.digitize(dfrac, [0.002, 0.02, 0.08])  # none / trace / some / much flow
    comb = np.where(labels[:, 2] >= 0, labels[:, 2], 4)
    keys = comb * 10 + level
    groups = [rng.permutation(np.flatnonzero(keys == k)).tolist() for k in np.unique(keys)]
    order = []
    while len(order) < n:
        for g in groups:
            if g:
                order.append(g.pop())
    return np.asarray(order, np.int64)


def holdout_split(cs: CalibSet, fraction: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(calibration indices, held-out indices), both spread over grades and Doppler content."""
    n = len(cs)
    if n < 4:
        raise CalibrationError(f"calibration set has {n} pairs; need at least 4 to hold some out for the gate")
    order = balanced_order(cs.labels, doppler_fraction(cs.doppler, (cs.manifest.get("preprocess") or {}).get("profile", "rating-edge")), seed)
    k = max(2, int(round(n * fraction)))
    held = np.sort(order[::max(1, n // k)][:k])
    rest = np.setdiff1d(np.arange(n), held)
    return rest, held


# ---------------------------------------------------------------- write / read

def write_calib(out, gs: np.ndarray, doppler: np.ndarray, labels, params: PreprocessParams, source: dict,
                shard_size: int = SHARD_SIZE) -> Path:
    out = Path(out)
    gs = np.asarray(gs)
    doppler = np.asarray(doppler)
    n = len(gs)
    if n == 0:
        raise CalibrationError("no calibration pairs were collected; check the source")
    _check_arrays(gs, doppler, params.input_size, str(out))
    labels = (np.full((n, 3), -1, np.int64) if labels is None else np.asarray(labels, np.int64).reshape(n, 3))
    problems = content_problems(gs, doppler, params.profile)
    if problems:
        raise CalibrationError(f"refusing to write calibration set {out}: " + "; ".join(problems))
    require_new_folder(out, CalibrationError)
    with publish(out, CalibrationError) as stage:
        stage.mkdir()
        _write_shards(stage, gs, doppler, labels, params, source, shard_size)
    return out / MANIFEST


def _write_shards(out: Path, gs, doppler, labels, params, source, shard_size) -> None:
    n = len(gs)
    shards = []
    for i, s in enumerate(range(0, n, shard_size)):
        name = f"shard-{i:05d}.npz"
        np.savez(out / name, gs=gs[s:s + shard_size], doppler=doppler[s:s + shard_size],
                 labels=labels[s:s + shard_size])
        shards.append({"file": name, "count": int(min(shard_size, n - s)), "sha256": sha256_file(out / name)})
    dfrac = doppler_fraction(doppler, params.profile)
    known = labels[:, 2] >= 0
    manifest = {
        "format": FORMAT, "format_version": 1, "count": int(n), "input_size": int(params.input_size),
        "preprocess": params.to_dict(), "source": source, "shards": shards,
        "grades": {"sh": _hist(labels[known, 0]), "vs": _hist(labels[known, 1]),
                   "combined": _hist(labels[known, 2]), "unlabelled": int((~known).sum())},
        "doppler_fraction": {"min": float(dfrac.min()), "median": float(np.median(dfrac)),
                             "max": float(dfrac.max()), "with_signal": int((dfrac > 0.002).sum())},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))


def _hist(v) -> list[int]:
    return np.bincount(np.asarray(v, np.int64), minlength=4)[:4].tolist()


def _check_arrays(gs, doppler, size: int, where: str) -> None:
    for name, a in (("gs", gs), ("doppler", doppler)):
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[1:] != (size, size, 3):
            raise CalibrationError(f"{where}: {name} images must be uint8 (N, {size}, {size}, 3) "
                                   f"preprocessed RGB; got {a.dtype} {a.shape}")
    if len(gs) != len(doppler):
        raise CalibrationError(f"{where}: {len(gs)} GS images but {len(doppler)} Doppler images")


def load_calib(path, params: PreprocessParams | None = None, warn_small: bool = True) -> CalibSet:
    """Open a calibration set; with `params` (the package's), refuse one made with other preprocessing."""
    path = Path(path)
    mf = path / MANIFEST
    if not mf.is_file():
        raise CalibrationError(f"{path}: not a calibration set (no {MANIFEST}); make one with `rating-edge calib collect`")
    manifest = read_manifest_json(mf, FORMAT, "calibration set", CalibrationError, CALIB)
    if not manifest["shards"] or int(manifest["count"]) == 0:
        raise CalibrationError(f"{path}: the calibration set is empty")
    if params is not None:
        mine = PreprocessParams.from_dict(manifest["preprocess"]).to_dict()
        theirs = params.to_dict()
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if diff:
            detail = ", ".join(f"{k}: set {mine.get(k)} vs package {theirs.get(k)}" for k in diff)
            raise CalibrationError(f"{path}: made with other preprocessing than the package ({detail}); "
                                   "collect a new set with the package's parameters")
    size = int(manifest["input_size"])
    gs, dop, lab = [], [], []
    for sh in manifest["shards"]:
        p = resolve_inside(path, sh["file"], CalibrationError, "shard")
        if not p.is_file():
            raise CalibrationError(f"{path}: shard {sh['file']} is missing")
        if sha256_file(p) != sh["sha256"]:
            raise CalibrationError(f"{path}: shard {sh['file']} does not match its SHA-256 (corrupted or edited)")
        try:
            with np.load(p, allow_pickle=False) as z:
                g, d, l = z["gs"], z["doppler"], z["labels"]
        except Exception as e:  # noqa: BLE001 - numpy/zipfile raise many types for a bad file
            raise CalibrationError(f"{p}: cannot read shard ({e})") from None
        _check_arrays(g, d, size, str(p))
        if len(g) != sh["count"] or l.shape != (len(g), 3):
            raise CalibrationError(f"{p}: shard holds {len(g)} pairs, manifest says {sh['count']}")
        gs.append(g)
        dop.append(d)
        lab.append(l)
    cs = CalibSet(path, np.concatenate(gs), np.concatenate(dop), np.concatenate(lab).astype(np.int64), manifest)
    if len(cs) != int(manifest["count"]):
        raise CalibrationError(f"{path}: {len(cs)} pairs in shards, manifest says {manifest['count']}")
    if params is not None and size != params.input_size:
        raise CalibrationError(f"{path}: images are {size}px, the package wants {params.input_size}px")
    profile = PreprocessParams.from_dict(manifest["preprocess"]).profile if "preprocess" in manifest else "rating-edge"
    problems = content_problems(cs.gs, cs.doppler, profile)
    if problems:
        raise CalibrationError(f"{path}: " + "; ".join(problems))
    if warn_small and len(cs) < MIN_PAIRS:
        warnings.warn(f"calibration set {path} has only {len(cs)} pairs; INT8 scales from fewer than "
                      f"{MIN_PAIRS} pairs are noisy", CalibrationWarning, stacklevel=2)
    return cs
