"""Model package: a folder with `model.json` and the ONNX/engine files (docs/design/package.md). No torch.

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
    engines         (packages from before engines.json only) TensorRT engine records
    artifacts       {relative file: {"sha256", "bytes"}} for every file the package carries
    source          {"checkpoint": {ensemble.json + per-network SHA-256}, ...}
    thresholds      per-network decision thresholds (rating_edge.scoring.Thresholds; absent = 0.5, ">")
    preprocess.profile  "rating-edge" (networks trained here) or "rating-official" (the authors' code)

A graph record is {"file": "model.onnx", "kind": "fused"} for a graph that outputs the four package
outputs itself, or {"file": "networks/<id>.onnx", "kind": "network", "network": id} for the `none`
strategy, where each graph outputs `prob` (B,) and, for the SH networks of task 0, `cam_gs` and
`cam_doppler` (B, h, w) unnormalised Grad-CAMs; the runner assembles those (see rating_edge.infer.base.assemble).

Trust (docs/hardening-packages.md): every file in the folder is listed under `artifacts` (or, for what
`rating-edge build` adds, in engines.json) with its SHA-256 and lies inside the folder; a package that
breaks this is refused before any file of it is opened. engines.json holds the TensorRT engines built on
a device (with their machine keys and hashes) so building one leaves model.json, and so the model hash
shown on screen and logged with every score, unchanged.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from rating_edge import __version__
from rating_edge.errors import PackageError
from rating_edge.manifest import read_manifest_json
from rating_edge.publish import publish_json
from rating_edge.schemas import ENGINES, PACKAGE

PACKAGE_FILE = "model.json"
ENGINES_FILE = "engines.json"
FORMAT = "rating-edge-package"
ENGINES_FORMAT = "rating-edge-engines"
OUTPUTS = ["sh_prob", "vs_prob", "heat_gs", "heat_doppler"]
# Work folders a package may hold that no loader opens: distillation's resumable state, publish stages
UNHASHED_DIRS = (".distill",)


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def artifact_record(folder: Path, rel: str) -> dict:
    p = Path(folder) / rel
    return {"sha256": sha256_file(p), "bytes": p.stat().st_size}


def resolve_inside(folder, rel: str, error: type[Exception] = PackageError, what: str = "file") -> Path:
    """`folder/rel`, refused unless `rel` is relative, has no `..` and resolves (symlinks followed)
    to a place inside `folder`: a manifest may only point at its own folder's files."""
    folder = Path(folder)
    r = Path(rel)
    if not rel or r.is_absolute() or ".." in r.parts or "\\" in rel or (len(rel) > 1 and rel[1] == ":"):
        raise error(f"{folder}: {what} {rel!r} is not a relative path inside the folder")
    p = folder / r
    try:
        inside = p.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError):  # a symlink loop
        inside = False
    if not inside:
        raise error(f"{folder}: {what} {rel} resolves outside the folder (symlink?); refusing it")
    return p


def write_model_json(folder, meta: dict, artifacts: list[str] | None = None) -> Path:
    """Write model.json, hashing every artifact named (plus every artifact already recorded)."""
    folder = Path(folder)
    meta = dict(meta)
    meta.setdefault("format", FORMAT)
    meta.setdefault("format_version", 1)
    meta["toolkit_version"] = __version__
    meta.setdefault("outputs", OUTPUTS)
    names = set(meta.get("artifacts", {})) | set(artifacts or [])
    for f in referenced_files(meta):
        names.add(f)
    missing = [n for n in sorted(names) if not (folder / n).is_file()]
    if missing:
        raise PackageError(f"{folder}: cannot record missing artifact {missing[0]}")
    meta["artifacts"] = {n: artifact_record(folder, n) for n in sorted(names)}
    return publish_json(folder / PACKAGE_FILE, meta)


def write_engines_json(folder, engines: list[dict], files: list[str], cpu_timings: list[dict] | None = None) -> Path:
    """Write engines.json: the engine records (each with its file's SHA-256) and other files the build
    made (FP16 graphs), bound to the model.json they were built from, and the CPU forms' timings made by
    `rating-edge build --cpu` on each machine (kept as they are when `cpu_timings` is None)."""
    folder = Path(folder)
    if cpu_timings is None and (folder / ENGINES_FILE).is_file():
        cpu_timings = _read_engines(folder, folder / PACKAGE_FILE).get("cpu_timings")
    recs = [{**e, **artifact_record(folder, e["file"])} for e in engines]
    data = {"format": ENGINES_FORMAT, "format_version": 1,
            "model_sha256": sha256_file(folder / PACKAGE_FILE), "toolkit_version": __version__,
            "engines": recs, "files": {f: artifact_record(folder, f) for f in sorted(set(files))},
            **({"cpu_timings": cpu_timings} if cpu_timings else {})}
    return publish_json(folder / ENGINES_FILE, data)


def _all_graphs(meta: dict) -> list[dict]:
    out = list(meta.get("graphs", []))
    for recs in meta.get("variants", {}).values():
        out.extend(recs)
    return out


def referenced_files(meta: dict) -> list[str]:
    """Every file model.json tells a loader to open: graphs, variants, (old-style) engines, student weights."""
    out = [g["file"] for g in _all_graphs(meta)] + [e["file"] for e in meta.get("engines", [])]
    w = (meta.get("fusion") or {}).get("weights")
    if w:
        out.append(w)
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
        """Short id shown on screen and logged with every score: the hash of model.json (which
        `rating-edge build` leaves alone: engines go to engines.json)."""
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


def engine_key(e: dict) -> tuple:
    return (e.get("precision"), e.get("gpu"), str(e.get("compute_capability")), e.get("trt_version"),
            e.get("dla_core"))


def _read_engines(path: Path, model_json: Path) -> dict | None:
    ej = path / ENGINES_FILE
    if not ej.exists():
        return None
    data = read_manifest_json(ej, ENGINES_FORMAT, "engine manifest", PackageError, ENGINES)
    if data["model_sha256"] != sha256_file(model_json):
        raise PackageError(f"{ej}: built for another {PACKAGE_FILE} (the package was re-exported or edited); "
                           f"delete {ENGINES_FILE} and its engines and rebuild with `rating-edge build`")
    return data


def _unlisted(path: Path, listed: set) -> str | None:
    """The first file in the folder that no manifest lists (a loader could be made to open it), or None."""
    skip = {PACKAGE_FILE, ENGINES_FILE}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path)
        if rel.parts[0] in UNHASHED_DIRS or any(s.startswith(".") and s.endswith(".partial") for s in rel.parts):
            continue
        if p.is_symlink() or p.is_file():
            r = rel.as_posix()
            if r not in skip and r not in listed:
                return r
    return None


def load_package(path, verify: bool = True) -> Package:
    """Open a package: its manifests valid, every file it uses listed, hashed and inside the folder;
    with `verify`, refuse it when any file's SHA-256 differs from its record."""
    path = Path(path)
    mj = path / PACKAGE_FILE
    if not mj.is_file():
        raise PackageError(f"{path}: not a model package (no {PACKAGE_FILE}); make one with `rating-edge export`")
    meta = read_manifest_json(mj, FORMAT, "model package", PackageError, PACKAGE)
    hint = "re-export the package with `rating-edge export`"
    from rating_edge.scoring import Thresholds

    try:
        Thresholds.from_meta(meta)
    except ValueError as e:
        raise PackageError(f"{mj}: {e}; {hint}") from None
    records = dict(meta["artifacts"])
    for f in referenced_files(meta):
        if f not in records:
            raise PackageError(f"{path}: {f} is used but not listed with its SHA-256 under artifacts "
                               f"(tampered or incomplete); {hint}")
    side = _read_engines(path, mj)
    if side is not None:
        built = {engine_key(e) for e in side["engines"]}
        meta["engines"] = ([e for e in meta.get("engines", []) if engine_key(e) not in built]
                           + side["engines"])
        for e in side["engines"]:
            records.setdefault(e["file"], e)
        for f, rec in side.get("files", {}).items():
            records.setdefault(f, rec)
        meta["cpu_timings"] = side.get("cpu_timings", [])  # this machine's is picked by infer.cpu_forms
    for rel in records:
        resolve_inside(path, rel, PackageError, "artifact")
    extra = _unlisted(path, set(records))
    if extra is not None:
        raise PackageError(f"{path}: {extra} is not listed in {PACKAGE_FILE} or {ENGINES_FILE} (a package "
                           f"holds only hashed files); remove it or {hint}")
    if verify:
        for rel, rec in records.items():
            p = path / rel
            if not p.is_file():
                raise PackageError(f"{path}: artifact {rel} is missing; {hint}")
            if sha256_file(p) != rec["sha256"]:
                raise PackageError(f"{path}: artifact {rel} does not match its SHA-256 in "
                                   f"{ENGINES_FILE if rel not in meta['artifacts'] else PACKAGE_FILE} "
                                   f"(tampered or corrupted); {hint}")
    return Package(path, meta)
