"""Import the authors' published checkpoints (SSRSGJYD/RATING) and their `thresh_dict` exactly.

A hospital holding the paper's weights brings the official layout, not ours:

    checkpoints/GSDOPPLER/<name>/optimal_net_cls.pth    SH networks (GSDopplerFeatureFusionNet)
    checkpoints/DOPPLER/<name>/optimal_net_cls.pth      VS networks (same class, one backbone)
    thresh_dict                                         pickle: per-network decision thresholds

Folder names carry the settings the official code selects networks by (config.py, test_models.py):
`label=SH|vascularity`, `classes=0,123-0,123|01,23-01,23|3,012-3,012`, `split=1..5`, `seed=0|1`,
`archs=18`, `frozen_stages=4` (SH, with `in_channels=3,3`) or `frozen_stages=0` (VS).

What changes on the way in, and why:
- Keys: `backbone1.*` -> `F.*` (SH) or torchvision keys (VS), `backbone2.*` -> `G.*`, `head1.0/1.*` ->
  `H.0/1.*` (SH) or `fc.0/1.*` (VS): the "linear2" head of rating_edge.spec.
- Task "3,012" has class 1 = grade {0, 1, 2} (its softmax[1] is P(grade <= 2)). Every package output is
  P(grade > t), so its last layer's two rows are swapped (softmax[1] becomes P(grade > 2) exactly) and
  its decision `P(<= 2) >= t` becomes the strict `P(> 2) > 1 - t` (the same decision).
- Thresholds: bit = softmax[1] >= thresh (MULTITUDE.py, single_model_prediction), kept per network.
Nothing is executed from the files: `.pth` through `torch.load(weights_only=True)`, `thresh_dict`
through an unpickler that builds only dicts, lists, numbers and numeric numpy scalars.
"""
from __future__ import annotations

import io
import math
import pickle
import re
from pathlib import Path

import numpy as np

from rating_edge.errors import CheckpointError
from rating_edge.package import sha256_file
from rating_edge.spec import EnsembleSpec, network_id, parse_network_id

CLASSES = ("0,123-0,123", "01,23-01,23", "3,012-3,012")  # task 0 (> 0), 1 (> 1), 2 (<= 2, swapped)
SWAPPED_TASK = 2
FOLDS, SEEDS = 5, 2
CKPT_FILE = "optimal_net_cls.pth"
MODULE_DIRS = {"sh": "GSDOPPLER", "vs": "DOPPLER"}
THRESH_KEYS = {"sh": "GSDOPPLER_SH_THRESH_DICT", "vs": "DOPPLER_VASCULARITY_THRESH_DICT"}
# the substrings config.py's conditions require, per module
CONDITIONS = {"sh": ("label=SH", "archs=18", "frozen_stages=4", "in_channels=3,3"),
              "vs": ("label=vascularity", "archs=18", "frozen_stages=0")}


# ------------------------------------------------------------------------------------ folder names

def parse_name(name: str) -> dict | None:
    """{"classes", "split", "seed"} of an official run folder, or None when it names none of them."""
    c = re.search(r"classes=(0,123-0,123|01,23-01,23|3,012-3,012)(?!\d)", name)
    sp = re.search(r"split=(\d+)(?!\d)", name)
    se = re.search(r"seed=(\d+)(?!\d)", name)
    if not (c and sp and se):
        return None
    return {"classes": c.group(1), "split": int(sp.group(1)), "seed": int(se.group(1))}


def find_networks(root) -> dict:
    """{network id: .pth path} for all 60 networks; names every network that is missing or ambiguous."""
    root = Path(root)
    if (root / "checkpoints").is_dir() and not (root / MODULE_DIRS["sh"]).is_dir():
        root = root / "checkpoints"
    problems, found = [], {}
    for module, sub in MODULE_DIRS.items():
        folder = root / sub
        if not folder.is_dir():
            problems.append(f"no folder {folder} (the official layout has checkpoints/GSDOPPLER and checkpoints/DOPPLER)")
            continue
        cands: dict = {}
        rejected: dict = {}
        for d in sorted(p for p in folder.iterdir() if p.is_dir()):
            info = parse_name(d.name)
            if info is None:
                continue
            key = (info["classes"], info["split"], info["seed"])
            lacking = [c for c in CONDITIONS[module] if c not in d.name]
            (rejected if lacking else cands).setdefault(key, []).append((d, lacking))
        for task, classes in enumerate(CLASSES):
            for split in range(1, FOLDS + 1):
                for seed in range(SEEDS):
                    nid = network_id(split - 1, module, task, seed)
                    key = (classes, split, seed)
                    hits = cands.get(key, [])
                    if len(hits) > 1:  # MULTITUDE.py reads the expid=0 run
                        hits = [h for h in hits if "expid=0" in h[0].name] or hits
                    where = f"{sub}/ classes={classes} split={split} seed={seed}"
                    if not hits:
                        why = "".join(f"; {d.name} lacks {', '.join(lack)}" for d, lack in rejected.get(key, []))
                        problems.append(f"network {nid}: no folder for {where}{why}")
                    elif len(hits) > 1:
                        problems.append(f"network {nid}: {len(hits)} folders match {where}: "
                                        + ", ".join(d.name for d, _ in hits))
                    elif not (hits[0][0] / CKPT_FILE).is_file():
                        problems.append(f"network {nid}: {hits[0][0].name} has no {CKPT_FILE}")
                    else:
                        found[nid] = hits[0][0] / CKPT_FILE
    if problems:
        raise CheckpointError(f"{root}: {len(problems)} problem(s) with the official checkpoints:\n  "
                              + "\n  ".join(problems))
    return found


# ------------------------------------------------------------------------------------ thresh_dict

def _numpy_scalar(dtype, data=None):
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"numpy scalar of dtype {dtype!r} is not allowed")
    return np.frombuffer(data, dtype=dtype, count=1)[0] if data is not None else dtype.type(0)


def _latin1(text, encoding="latin1"):
    """Protocol-2 pickles store bytes as _codecs.encode(str, "latin1")."""
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError("only latin1 byte strings are allowed")
    return text.encode("latin1")


class _ThreshUnpickler(pickle.Unpickler):
    """Only numpy's scalar constructor and dtype may be named: no other callable can run."""

    def find_class(self, module, name):
        if module == "_codecs" and name == "encode":
            return _latin1
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name == "scalar":
            return _numpy_scalar
        if module == "numpy" and name == "dtype":
            return np.dtype
        raise pickle.UnpicklingError(f"thresh_dict may only hold dicts, lists and numbers; it names {module}.{name}")


def _check_plain(obj, path="thresh_dict") -> None:
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise CheckpointError(f"{path}: key {k!r} is not a string or integer")
            _check_plain(v, f"{path}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{path}[{i}]")
    elif not isinstance(obj, (int, float, np.integer, np.floating, str)):
        raise CheckpointError(f"{path}: {type(obj).__name__} is not allowed")


def read_thresh_dict(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"thresholds file {p} does not exist")
    try:
        obj = _ThreshUnpickler(io.BytesIO(p.read_bytes())).load()
    except Exception as e:  # noqa: BLE001 - any failure is the file's
        raise CheckpointError(f"{p}: not a readable thresh_dict ({type(e).__name__}: {str(e)[:200]})") from None
    _check_plain(obj, p.name)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p}: thresh_dict must be a dict with {', '.join(THRESH_KEYS.values())}")
    return obj


def official_threshold(d: dict, module: str, task: int, fold: int, seed: int) -> float:
    """d[<module key>][classes][0][split][seed] as MULTITUDE.py indexes it."""
    path = [THRESH_KEYS[module], CLASSES[task], 0, fold + 1, seed]
    cur = d
    for k in path:
        try:
            cur = cur[k]
        except (KeyError, IndexError, TypeError):
            raise CheckpointError(f"thresh_dict has no threshold for network {network_id(fold, module, task, seed)} "
                                  f"(missing {'/'.join(map(str, path))})") from None
    t = float(cur)
    if not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise CheckpointError(f"thresh_dict: threshold of {network_id(fold, module, task, seed)} is {t}, not in [0, 1]")
    return t


def convert_thresholds(d: dict) -> dict:
    """Official thresholds -> a scoring.Thresholds record on P(grade > t)."""
    from rating_edge.scoring import Thresholds

    th = Thresholds.default(FOLDS, SEEDS)
    for module in ("sh", "vs"):
        t, strict = th.value(module), th.strict(module)
        for f in range(FOLDS):
            for task in range(3):
                for s in range(SEEDS):
                    v = official_threshold(d, module, task, f, s)
                    if task == SWAPPED_TASK:  # P(<=2) >= v  <=>  P(>2) = 1 - P(<=2) > 1 - v
                        t[f, task, s], strict[f, task, s] = 1.0 - v, True
                    else:
                        t[f, task, s], strict[f, task, s] = v, False
    return th.to_dict()


# ------------------------------------------------------------------------------------ weights

def _map_keys(nid: str, module: str, state: dict) -> dict:
    out = {}
    for k, v in state.items():
        while k.startswith("module."):
            k = k[len("module."):]
        if k.startswith("backbone1."):
            nk = ("F." if module == "sh" else "") + k[len("backbone1."):]
        elif k.startswith("backbone2.") and module == "sh":
            nk = "G." + k[len("backbone2."):]
        elif k.startswith("head1."):
            nk = ("H." if module == "sh" else "fc.") + k[len("head1."):]
        else:
            raise CheckpointError(f"network {nid}: unexpected tensor {k!r} in the official checkpoint")
        out[nk] = v
    return out


def _load_pth(nid: str, path: Path) -> dict:
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"network {nid}: {path} cannot be loaded safely ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"network {nid}: {path} does not hold a state dict")
    return obj


def import_official(ckpt_dir, thresh_path, out, input_size: int = 224) -> Path:
    """Official checkpoints + thresh_dict -> a checkpoint folder (linear2 heads, thresholds, the
    rating-official preprocessing profile, source SHA-256s). `input_size`: 224 in the official code."""
    import torch

    from rating_edge.model.checkpoint import _check_state, save_ensemble
    from rating_edge.model.networks import build_network
    from rating_edge.preprocess import PreprocessParams

    files = find_networks(ckpt_dir)
    thresholds = convert_thresholds(read_thresh_dict(thresh_path))
    states = {}
    for nid, path in sorted(files.items()):
        states[nid] = _map_keys(nid, parse_network_id(nid)[1], _load_pth(nid, path))
    first = states[network_id(0, "sh", 0, 0)]
    try:
        width = int(first["F.conv1.weight"].shape[0])
        hidden = int(first["H.0.weight"].shape[0])
    except KeyError as e:
        raise CheckpointError(f"network {network_id(0, 'sh', 0, 0)}: tensor {e.args[0]!r} is missing") from None
    spec = EnsembleSpec(folds=FOLDS, seeds=SEEDS, width=width, input_size=input_size, hidden=hidden, head="linear2")
    models = {}
    for nid, state in states.items():
        _, module, task, _ = parse_network_id(nid)
        if task == SWAPPED_TASK:
            last = "H.1" if module == "sh" else "fc.1"
            for k in (f"{last}.weight", f"{last}.bias"):
                if k in state:
                    state[k] = torch.flip(state[k], dims=[0]).contiguous()  # rows (class 0, class 1) swapped
        model = build_network(nid, spec)
        _check_state(nid, model, state)
        model.load_state_dict(state)
        models[nid] = model.eval()
    root = Path(ckpt_dir).resolve()
    source = {"format": "rating-official", "dir": str(root),
              "networks": {nid: {"path": str(Path(p).resolve().relative_to(root)), "sha256": sha256_file(p)}
                           for nid, p in sorted(files.items())},
              "thresh_dict": {"path": str(Path(thresh_path).resolve()), "sha256": sha256_file(thresh_path)}}
    meta = {"origin": "rating-official", "source": source,
            "preprocess": PreprocessParams.official(input_size).to_dict(),
            "task_coding": "task 2 imported from classes 3,012: last-layer rows swapped, threshold 1 - t strict"}
    return save_ensemble(out, spec, models, meta=meta, thresholds=thresholds)
