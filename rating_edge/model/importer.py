"""Import torchvision-style `.pth` state dicts (e.g. from the paper's training code) into the layout.

Files are read with `torch.load(weights_only=True)`: a checkpoint from elsewhere can never execute code.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from rating_edge.errors import CheckpointError
from rating_edge.model.checkpoint import _check_state, save_ensemble
from rating_edge.model.networks import build_network
from rating_edge.spec import EnsembleSpec, preset


def read_mapping(path) -> dict:
    """JSON or YAML: {"spec": {...} or "preset": name (optional), "networks": {id: file}} or plain {id: file}."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"mapping file {p} does not exist")
    text = p.read_text()
    try:
        if p.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # noqa: BLE001 - any parse error is the user's file
        raise CheckpointError(f"mapping file {p} cannot be parsed: {e}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"mapping file {p} must hold a mapping from network id to .pth file")
    return data


def _strip(state: dict) -> dict:
    out = {}
    for k, v in state.items():
        while k.startswith("module."):
            k = k[len("module."):]
        out[k] = v
    return out


def _unwrap(obj, nid: str) -> dict:
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise CheckpointError(f"network {nid}: file does not hold a state dict")


def import_checkpoints(mapping_path, out) -> Path:
    data = read_mapping(mapping_path)
    base = Path(mapping_path).parent
    if "networks" in data:
        spec = EnsembleSpec.from_dict(data["spec"]) if "spec" in data else preset(data.get("preset", "paper"))
        files = data["networks"]
    else:
        spec, files = preset("paper"), data
    missing = [n for n in spec.network_ids() if n not in files]
    if missing:
        raise CheckpointError(f"mapping names no file for network {missing[0]} ({len(missing)} of "
                              f"{len(spec.network_ids())} missing); expected ids like {spec.network_ids()[0]}")
    models = {}
    for nid in spec.network_ids():
        f = Path(files[nid])
        f = f if f.is_absolute() else base / f
        if not f.is_file():
            raise CheckpointError(f"network {nid}: file {f} does not exist")
        try:
            obj = torch.load(str(f), map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001
            raise CheckpointError(f"network {nid}: {f.name} cannot be loaded safely ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:200]})") from None
        state = _strip(_unwrap(obj, nid))
        model = build_network(nid, spec)
        _check_state(nid, model, state)
        model.load_state_dict(state)
        models[nid] = model.eval()
    return save_ensemble(out, spec, models, meta={"origin": "import", "mapping": str(mapping_path)})
