"""Checkpoint layout on disk: `ensemble.json` + one safetensors file per network. No pickle anywhere.

`ensemble.json`:
    {"format": "rating-edge-ensemble", "format_version": 1, "spec": {...EnsembleSpec...},
     "networks": {"fold0-sh-gt0-seed0": {"file": "networks/fold0-sh-gt0-seed0.safetensors",
                                         "sha256": "...", "module": "sh"}, ...},
     "meta": {...free-form: how it was made; "preprocess": the profile the networks expect...},
     "thresholds": {"sh": {"threshold": [[[t]]], "strict": [[[bool]]]}, "vs": ...}  (optional, see
                   rating_edge.scoring.Thresholds; absent = 0.5 and ">")}

Every load checks the file's SHA-256 and every tensor's name and shape against the architecture, and
names the network and the tensor when something does not match.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rating_edge.errors import CheckpointError
from rating_edge.manifest import read_manifest_json
from rating_edge.model.networks import build_network
from rating_edge.package import resolve_inside, sha256_file
from rating_edge.publish import publish, publish_json
from rating_edge.schemas import ENSEMBLE
from rating_edge.spec import EnsembleSpec, parse_network_id

MANIFEST = "ensemble.json"
FORMAT = "rating-edge-ensemble"


def _check_state(nid: str, model: nn.Module, state: dict) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise CheckpointError(f"network {nid}: tensor {missing[0]!r} is missing"
                              + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if unexpected:
        raise CheckpointError(f"network {nid}: unexpected tensor {unexpected[0]!r}"
                              + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    for k, v in expected.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise CheckpointError(f"network {nid}: tensor {k!r} has shape {tuple(state[k].shape)}, "
                                  f"the {type(model).__name__} of this spec needs {tuple(v.shape)}")
        if not torch.is_floating_point(v) and torch.is_floating_point(state[k]):
            raise CheckpointError(f"network {nid}: tensor {k!r} should be an integer tensor")


def save_network(path: Path, model: nn.Module) -> str:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with publish(path) as tmp:  # atomic: an interrupted save never leaves a half-written network
        save_file(state, str(tmp))
    return sha256_file(path)


def write_manifest(folder: Path, spec: EnsembleSpec, networks: dict, meta: dict | None = None,
                   thresholds: dict | None = None) -> Path:
    data = {"format": FORMAT, "format_version": 1, "spec": spec.to_dict(),
            "networks": {k: networks[k] for k in sorted(networks)}, "meta": meta or {}}
    if thresholds:
        data["thresholds"] = thresholds
    return publish_json(Path(folder) / MANIFEST, data)


def save_ensemble(folder, spec: EnsembleSpec, models: dict, meta: dict | None = None,
                  thresholds: dict | None = None) -> Path:
    """Write every network of `models` ({network id: module}), the manifest and the networks'
    decision thresholds (a `Thresholds.to_dict()`; None = 0.5 and ">")."""
    folder = Path(folder)
    missing = [n for n in spec.network_ids() if n not in models]
    if missing:
        raise CheckpointError(f"cannot save an incomplete ensemble: network {missing[0]} is missing"
                              f" ({len(missing)} missing in all)")
    entries = {}
    for nid in spec.network_ids():
        rel = f"networks/{nid}.safetensors"
        entries[nid] = {"file": rel, "sha256": save_network(folder / rel, models[nid]),
                        "module": parse_network_id(nid)[1]}
    return write_manifest(folder, spec, entries, meta, thresholds)


def read_manifest(folder) -> dict:
    folder = Path(folder)
    p = folder / MANIFEST
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: not a checkpoint folder (it does not exist)")
    if not p.is_file():
        raise CheckpointError(f"{folder}: no {MANIFEST}; a checkpoint folder holds {MANIFEST} and networks/*.safetensors "
                              "(see README, 'Checkpoint layout'); import .pth files with `rating-edge import-checkpoints`")
    data = read_manifest_json(p, FORMAT, "ensemble manifest", CheckpointError, ENSEMBLE)
    spec = EnsembleSpec.from_dict(data["spec"])
    nets = data["networks"]
    for nid in spec.network_ids():
        if nid not in nets:
            raise CheckpointError(f"{folder}: network {nid} is missing from {MANIFEST}")
        resolve_inside(folder, nets[nid]["file"], CheckpointError, f"network {nid}: file")
    from rating_edge.scoring import Thresholds

    try:
        Thresholds.from_dict(data.get("thresholds"), spec.folds, spec.seeds)
    except ValueError as e:
        raise CheckpointError(f"{folder}: {MANIFEST}: {e}") from None
    data["spec_obj"] = spec
    return data


def load_network_state(folder, nid: str, entry: dict, verify_hash: bool = True) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(folder) / entry["file"]
    if not path.is_file():
        raise CheckpointError(f"network {nid}: file {path} is missing")
    if verify_hash and sha256_file(path) != entry.get("sha256"):
        raise CheckpointError(f"network {nid}: {path.name} does not match the SHA-256 in {MANIFEST} "
                              "(file changed or truncated); restore it or re-create the checkpoint")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"network {nid}: {path.name} is not a readable safetensors file ({e})") from None


def load_network(folder, nid: str, entry: dict, spec: EnsembleSpec, verify_hash: bool = True) -> nn.Module:
    state = load_network_state(folder, nid, entry, verify_hash)
    model = build_network(nid, spec)
    _check_state(nid, model, state)
    model.load_state_dict(state)
    return model.eval()


def load_models(folder, verify_hash: bool = True) -> tuple[EnsembleSpec, dict, dict]:
    """(spec, {network id: eval-mode module}, manifest)."""
    data = read_manifest(folder)
    spec = data["spec_obj"]
    models = {nid: load_network(folder, nid, data["networks"][nid], spec, verify_hash) for nid in spec.network_ids()}
    return spec, models, data


def checkpoint_hashes(folder) -> dict:
    """SHA-256 of the manifest and of each network file, for a package's provenance record."""
    data = read_manifest(folder)
    return {"ensemble.json": sha256_file(Path(folder) / MANIFEST),
            "networks": {nid: data["networks"][nid]["sha256"] for nid in data["spec_obj"].network_ids()}}
