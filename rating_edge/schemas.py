"""JSON Schemas of the manifests the toolkit reads (model.json, engines.json, ensemble.json,
calib.json, scanner profiles), checked by `manifest.validate` before any value is used.

They hold the keys the code reads, with the types and ranges it can work with; other keys are allowed
(newer writers and other tools add some) and left unchecked. "number" and "integer" exclude NaN and
infinities (see `manifest._validator_class`). File paths are relative, forward-slash, without `..`;
that they resolve inside their folder is checked on disk by `package.resolve_inside`.
"""
from __future__ import annotations

SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
# relative, no empty/"."/".." parts, no backslash, no drive or NUL: the path says where it lies
REL_PATH = {"type": "string", "minLength": 1, "maxLength": 1024,
            "pattern": r"^(?![/~])(?!.*(^|/)\.{1,2}(/|$))(?!.*//)[^\\:\x00]+$"}
SIZE = {"type": "integer", "minimum": 32, "maximum": 4096}


def _bounded(kind: str, lo=None, hi=None) -> dict:
    return {"type": kind, **({"minimum": lo} if lo is not None else {}), **({"maximum": hi} if hi is not None else {})}


def _int(lo=None, hi=None) -> dict:
    return _bounded("integer", lo, hi)


def _num(lo=None, hi=None) -> dict:
    return _bounded("number", lo, hi)


SPEC = {
    "type": "object",
    "properties": {
        "folds": _int(1, 100), "tasks": {"const": 3}, "seeds": _int(1, 100), "width": _int(1, 1024),
        "input_size": SIZE, "hidden": _int(1, 1 << 16),
    },
}

DOPPLER = {  # DopplerParams(**d): every key must be one it has
    "type": "object",
    "properties": {"chroma_min": _int(0, 255), "saturation_min": _num(0, 1), "min_area": _int(0, 1 << 20)},
    "additionalProperties": False,
}

PREPROCESS = {
    "type": "object",
    "properties": {
        "input_size": SIZE,
        "mean": {"type": "array", "items": _num(0, 1), "minItems": 3, "maxItems": 3},
        "std": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "minItems": 3, "maxItems": 3},
        "interpolation": {"enum": ["area", "linear", "nearest", "pil-bilinear"]},
        "profile": {"enum": ["rating-edge", "rating-official"]},
        "doppler": DOPPLER,
    },
}

GRAPH = {
    "type": "object",
    "required": ["file"],
    "properties": {"file": REL_PATH, "kind": {"enum": ["fused", "network"]}, "network": {"type": "string"}},
    "if": {"properties": {"kind": {"const": "network"}}, "required": ["kind"]},
    "then": {"required": ["network"]},
}

ARTIFACT = {"type": "object", "required": ["sha256"], "properties": {"sha256": SHA256, "bytes": _int(0)}}

ENGINE = {
    "type": "object",
    "required": ["file", "precision"],
    "properties": {
        "file": REL_PATH, "precision": {"type": "string"}, "gpu": {"type": "string"},
        "compute_capability": {"type": ["string", "number"]}, "trt_version": {"type": "string"},
        "kind": {"enum": ["fused", "network"]}, "network": {"type": "string"}, "onnx": REL_PATH,
        "onnx_sha256": SHA256, "dla_core": {"type": ["integer", "null"], "minimum": 0},
        "max_batch": _int(1), "sha256": SHA256, "bytes": _int(0),
    },
}

BATCH = {"oneOf": [{"const": "dynamic"}, _int(1, 4096)], "description": "'dynamic' or an integer 1-4096"}

PACKAGE = {
    "type": "object",
    "required": ["format", "spec", "preprocess", "graphs", "artifacts"],
    "properties": {
        "format_version": _int(1),
        "spec": SPEC,
        "preprocess": PREPROCESS,
        "outputs": {"type": "array", "items": {"type": "string"}},
        "fusion": {"type": "object", "properties": {"strategy": {"type": "string"}, "weights": REL_PATH}},
        "precision": {"type": "string"},
        "batch": BATCH,
        "graphs": {"type": "array", "items": GRAPH, "minItems": 1},
        "variants": {"type": "object", "additionalProperties": {"type": "array", "items": GRAPH, "minItems": 1}},
        "engines": {"type": "array", "items": ENGINE},
        "artifacts": {"type": "object", "propertyNames": REL_PATH, "additionalProperties": ARTIFACT},
        "quantization": {"type": ["object", "null"],
                         "properties": {"gate": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
                                        "member_gate": {"type": ["number", "null"], "minimum": 0, "maximum": 1}}},
        "source": {"type": "object"},
    },
}

ENGINES = {  # engines.json: what `rating-edge build` added to a package, beside model.json
    "type": "object",
    "required": ["format", "model_sha256", "engines"],
    "properties": {
        "format_version": _int(1),
        "model_sha256": SHA256,
        "engines": {"type": "array", "items": {**ENGINE, "required": ["file", "precision", "sha256"]}},
        "files": {"type": "object", "propertyNames": REL_PATH, "additionalProperties": ARTIFACT},
        "cpu_timings": {"type": "array", "items": {
            "type": "object", "required": ["on", "ms"],
            "properties": {"on": {"type": "object", "required": ["cpu", "cpu_class", "cores"]},
                           "ms": {"type": "object", "additionalProperties": {"type": "number", "minimum": 0}},
                           "threads": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 1}}}}},
    },
}

ENSEMBLE = {
    "type": "object",
    "required": ["format", "spec", "networks"],
    "properties": {
        "format_version": _int(1),
        "spec": SPEC,
        "networks": {"type": "object", "additionalProperties": {
            "type": "object", "required": ["file", "sha256"],
            "properties": {"file": REL_PATH, "sha256": SHA256, "module": {"enum": ["sh", "vs"]}}}},
        "meta": {"type": "object", "properties": {"preprocess": PREPROCESS}},
    },
}

CALIB = {
    "type": "object",
    "required": ["format", "count", "input_size", "preprocess", "shards"],
    "properties": {
        "format_version": _int(1),
        "count": _int(0),
        "input_size": SIZE,
        "preprocess": PREPROCESS,
        "source": {"type": ["object", "null"]},
        "shards": {"type": "array", "items": {
            "type": "object", "required": ["file", "count", "sha256"],
            "properties": {"file": REL_PATH, "count": _int(0), "sha256": SHA256}}},
    },
}

_BOX = {"type": "array", "items": _int(-(1 << 16), 1 << 16), "minItems": 4, "maxItems": 4}
PROFILE = {
    "type": "object",
    "properties": {
        "name": {"type": ["string", "number"]},
        "frame_size": {"oneOf": [{"type": "null"}, {"type": "array", "items": _int(1, 1 << 15),
                                                    "minItems": 2, "maxItems": 2}],
                       "description": "null or [W, H] with W, H >= 1"},
        "layout": {"enum": ["auto", "single", "dual"]},
        "areas": {"oneOf": [{"type": "null"}, {"type": "array", "items": _BOX, "maxItems": 16}],
                  "description": "null or a list of [x, y, w, h]"},
        "ui_regions": {"type": "array", "items": _BOX},
        "roi": {"oneOf": [{"enum": ["doppler_box", "area"]}, _BOX],
                "description": "'doppler_box', 'area' or [x, y, w, h]"},
        # which detect settings exist is LayoutParams' business (Profile.from_dict checks the names against
        # it, and lets the settings of the earlier detector through); here: numbers only
        "detect": {"type": "object", "additionalProperties": {"type": "number"}},
        "doppler": {"oneOf": [{"type": "null"}, DOPPLER], "description": "null or Doppler thresholds"},
    },
}
