"""Model package: a folder with `model.json` and the ONNX/engine files (DESIGN.md §2). No torch.

model.json (keys others rely on):
    format, format_version, toolkit_version
    spec            EnsembleSpec dict
    preprocess      PreprocessParams dict (input size, mean/std, Doppler thresholds)
    inputs          {"gs": {...}, "doppler": {...}}  uint8 RGB NHWC
    outputs         ["sh_prob", "vs_prob", "heat_gs", "heat_doppler"]
    fusion          {"strategy": "none"|"stack"|"distill", ...strategy details}
    precision       "fp32" | "int8" | ...
    batch           "dynamic" | 1
    graphs          list of graph records, see below
    variants        {name: [graph records]} alternative forms (e.g. "int8-qdq" for TensorRT,
                    "int8-u8s8" for ONNX Runtime on CPUs)
    engines         list of TensorRT engine records (file, gpu, compute_capability, trt_version, ...)
    artifacts       {relative file: {"sha256", "bytes"}} for every file the package carries
    source          {"checkpoint": {ensemble.json + per-network SHA-256}, ...}
    thresholds      per-network decision thresholds (rating_edge.scoring.Thresholds; absent = 0.5, ">")
    preprocess.profile  "rating-edge" (networks trained here) or "rating-official" (the authors' code)

A graph record is {"file": "model.onnx", "kind": "fused"} for a graph that outputs the four package
outputs itself, or {"file": "networks/<id>.onnx", "kind": "network", "network": id} for the `none`
strategy, where each graph outputs `prob` (B,) and, for the SH networks of task 0, `cam_gs` and
`cam_doppler` (B, h, w) unnormalised Grad-CAMs; the runner assembles those (see runtime.engines).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from rating_edge import __version__
from rating_edge.errors import PackageError
from rating_edge.manifest import read_manifest_json

PACKAGE_FILE = "model.json"
FORMAT = "rating-edge-package"
OUTPUTS = ["sh_prob", "vs_prob", "heat_gs", "heat_doppler"]


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def artifact_record(folder: Path, rel: str) -> dict:
    p = Path(folder) / rel
    return {"sha256": sha256_file(p), "bytes": p.stat().st_size}


def write_model_json(folder, meta: dict, artifacts: list[str] | None = None) -> Path:
    """Write model.json, hashing every artifact named (plus every artifact already recorded)."""
    folder = Path(folder)
    meta = dict(meta)
    meta.setdefault("format", FORMAT)
    meta.setdefault("format_version", 1)
    meta["toolkit_version"] = __version__
    meta.setdefault("outputs", OUTPUTS)
    names = set(meta.get("artifacts", {})) | set(artifacts or [])
    for g in _all_graphs(meta):
        names.add(g["file"])
    for e in meta.get("engines", []):
        names.add(e["file"])
    missing = [n for n in sorted(names) if not (folder / n).is_file()]
    if missing:
        raise PackageError(f"{folder}: cannot record missing artifact {missing[0]}")
    meta["artifacts"] = {n: artifact_record(folder, n) for n in sorted(names)}
    p = folder / PACKAGE_FILE
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(p)
    return p


def _all_graphs(meta: dict) -> list[dict]:
    out = list(meta.get("graphs", []))
    for recs in meta.get("variants", {}).values():
        out.extend(recs)
    return out


@dataclass
class Package:
    path: Path
    meta: dict

    @property
    def strategy(self) -> str:
        return self.meta.get("fusion", {}).get("strategy", "?")

    @property
    def model_hash(self) -> str:
        """Short id shown on screen and logged with every score: the hash of model.json."""
        return sha256_file(self.path / PACKAGE_FILE)[:12]

    def file(self, rel: str) -> Path:
        return self.path / rel

    def graphs(self, variant: str | None = None) -> list[dict]:
        if variant in (None, "default"):
            return self.meta["graphs"]
        variants = self.meta.get("variants", {})
        if variant not in variants:
            raise PackageError(f"{self.path}: no variant {variant!r} (has: default"
                               + "".join(f", {v}" for v in sorted(variants)) + ")")
        return variants[variant]

    @property
    def spec(self):
        from rating_edge.spec import EnsembleSpec

        return EnsembleSpec.from_dict(self.meta["spec"])

    @property
    def preprocess(self):
        from rating_edge.preprocess import PreprocessParams

        return PreprocessParams.from_dict(self.meta["preprocess"])


def load_package(path, verify: bool = True) -> Package:
    """Open a package; with `verify`, refuse it when any artifact's SHA-256 differs from model.json."""
    path = Path(path)
    mj = path / PACKAGE_FILE
    if not mj.is_file():
        raise PackageError(f"{path}: not a model package (no {PACKAGE_FILE}); make one with `rating-edge export`")
    meta = read_manifest_json(mj, FORMAT, "model package", PackageError)
    for key in ("spec", "preprocess", "graphs", "artifacts"):
        if key not in meta:
            raise PackageError(f"{mj}: missing key {key!r}; re-export the package")
    from rating_edge.scoring import Thresholds

    try:
        Thresholds.from_meta(meta)
    except ValueError as e:
        raise PackageError(f"{mj}: {e}; re-export the package") from None
    if verify:
        for rel, rec in meta["artifacts"].items():
            p = path / rel
            if not p.is_file():
                raise PackageError(f"{path}: artifact {rel} is missing; re-export the package with `rating-edge export`")
            if sha256_file(p) != rec["sha256"]:
                raise PackageError(f"{path}: artifact {rel} does not match its SHA-256 in {PACKAGE_FILE} "
                                   "(tampered or corrupted); re-export the package with `rating-edge export`")
    return Package(path, meta)
