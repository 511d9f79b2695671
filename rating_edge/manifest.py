"""The JSON manifests of rating-edge folders (checkpoint, model package, engine sidecar, calibration set)
and the scanner profiles: one reader with limits, one validation layer.

Each folder says what it is with a "format" key, so a wrong folder passed to a command fails with a
message naming the file and what was expected, not with a KeyError later on. Every manifest is read
with a size and a nesting-depth limit (a binary or hostile file is a one-line error, never a
UnicodeDecodeError or RecursionError) and checked against a JSON Schema (`rating_edge.schemas`) so a
malformed value is reported with the key that holds it before any code uses it. Schemas check the keys
the toolkit reads; keys it does not know are left alone (other tools and newer writers may add some).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from rating_edge.errors import RatingEdgeError

MAX_BYTES = 32 << 20  # the largest manifest written is a few MB (an INT8 package's quantization report)
MAX_DEPTH = 32  # the deepest manifest written nests 7 levels
FORMAT_VERSIONS = (1,)  # manifest format versions this toolkit reads


def _depth(obj, limit: int) -> int:
    """Nesting depth of a parsed document, iteratively (a recursive walk could itself overflow)."""
    stack = [(obj, 1)]
    deepest = 0
    while stack:
        o, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
    return deepest


def flow_nesting(text: str) -> int:
    """Deepest bracket nesting of `text` (brackets inside strings count too: an upper bound), so a
    document nested past a parser's recursion limit is refused before parsing (for YAML)."""
    depth = best = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            best = max(best, depth)
        elif ch in "]}":
            depth -= 1
    return best


def read_json(path, what: str, error: type[RatingEdgeError] = RatingEdgeError, max_bytes: int | None = None,
              max_depth: int | None = None):
    """The parsed JSON document at `path`, or `error` with one line saying why it cannot be read."""
    path = Path(path)
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    max_depth = MAX_DEPTH if max_depth is None else max_depth
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise error(f"{path}: {size} bytes is too large for a {what} (limit {max_bytes})")
        raw = path.read_bytes()
    except OSError as e:
        raise error(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{path}: not a text file (a {what} is UTF-8 JSON)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON ({e})") from None
    except RecursionError:  # the C decoder stops cleanly at the interpreter's recursion limit
        raise error(f"{path}: nested deeper than {max_depth} levels; not a {what}") from None
    check_depth(data, path, what, error, max_depth)
    return data


def check_depth(data, path, what: str, error: type[RatingEdgeError] = RatingEdgeError,
                max_depth: int | None = None) -> None:
    """The depth limit for documents parsed elsewhere (YAML profiles)."""
    max_depth = MAX_DEPTH if max_depth is None else max_depth
    if _depth(data, max_depth) > max_depth:
        raise error(f"{path}: nested deeper than {max_depth} levels; not a {what}")


def read_manifest_json(path: Path, fmt: str, what: str, error: type[RatingEdgeError] = RatingEdgeError,
                       schema: dict | None = None, versions: tuple = FORMAT_VERSIONS) -> dict:
    """The manifest at `path` as a dict, or `error` saying it is not valid JSON, not a `what`, a format
    version this toolkit does not read, or (with `schema`) which key holds a malformed value."""
    data = read_json(path, what, error)
    found = data.get("format") if isinstance(data, dict) else None
    if found != fmt:
        shown = found if isinstance(found, (str, int, float, type(None))) else type(found).__name__
        raise error(f"{path}: not a rating-edge {what} (format={shown!r})")
    v = data.get("format_version", 1)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v not in versions:
        raise error(f"{path}: format_version {_short(v)} is not one this toolkit reads "
                    f"({', '.join(map(str, versions))}); update rating-edge or re-create the {what}")
    if schema is not None:
        validate(data, schema, path, error)
    return data


def _short(v, n: int = 60) -> str:
    s = repr(v)
    return s if len(s) <= n else s[:n - 3] + "..."


def _validator_class():
    from jsonschema import Draft202012Validator, validators

    def is_number(checker, inst):  # NaN and +-inf are not numbers a manifest may hold
        return (isinstance(inst, (int, float)) and not isinstance(inst, bool)
                and math.isfinite(inst))

    def is_integer(checker, inst):
        return is_number(checker, inst) and float(inst).is_integer()

    checker = Draft202012Validator.TYPE_CHECKER.redefine_many({"number": is_number, "integer": is_integer})
    return validators.extend(Draft202012Validator, type_checker=checker)


_VALIDATORS: dict = {}


def validate(data, schema: dict, path, error: type[RatingEdgeError] = RatingEdgeError) -> None:
    """`error` naming the key (as a JSON path) and the rule of the first malformed value in `data`."""
    from jsonschema.exceptions import best_match

    key = id(schema)
    if key not in _VALIDATORS:
        _VALIDATORS[key] = _validator_class()(schema)
    err = best_match(_VALIDATORS[key].iter_errors(data))
    if err is None:
        return
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path) or "(top level)"
    where = where.lstrip(".")
    raise error(f"{path}: {where}: {_rule(err)}")


def _rule(err) -> str:
    """The failed rule in words, without echoing a (possibly huge) value in full."""
    v, inst = err.validator, err.instance
    if v == "type":
        t = err.validator_value
        want = t if isinstance(t, str) else " or ".join(t)
        if isinstance(inst, float) and not math.isfinite(inst):
            return f"must be a finite {want}, got {inst}"
        return f"must be {'an' if want[0] in 'aeiou' else 'a'} {want}, got {_short(inst)}"
    if v == "required":
        return err.message.split(" is a required property")[0] + " is missing"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        op = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[v]
        return f"must be {op} {err.validator_value}, got {_short(inst)}"
    if v == "enum":
        return f"must be one of {', '.join(map(repr, err.validator_value))}, got {_short(inst)}"
    if v == "const":
        return f"must be {err.validator_value!r}, got {_short(inst)}"
    if v in ("minItems", "maxItems"):
        return f"must hold {'at least' if v == 'minItems' else 'at most'} {err.validator_value} item(s)"
    if v in ("oneOf", "anyOf"):
        want = err.schema.get("description", "one of the allowed forms")
        return f"must be {want}, got {_short(inst)}"
    if v == "pattern":
        return f"{_short(inst)} is not in the expected form"
    if v == "additionalProperties":
        return err.message.splitlines()[0][:200]
    return err.message.splitlines()[0][:200]
