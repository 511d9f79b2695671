"""The JSON manifests of rating-edge folders (checkpoint, model package, calibration set).

Each folder says what it is with a "format" key, so a wrong folder passed to a command fails with a
message naming the file and what was expected, not with a KeyError later on.
"""
from __future__ import annotations

import json
from pathlib import Path

from rating_edge.errors import RatingEdgeError


def read_manifest_json(path: Path, fmt: str, what: str, error: type[RatingEdgeError] = RatingEdgeError) -> dict:
    """The manifest at `path` as a dict, or `error` saying it is not valid JSON or not a `what`."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON ({e})") from None
    found = data.get("format") if isinstance(data, dict) else None
    if found != fmt:
        raise error(f"{path}: not a rating-edge {what} (format={found!r})")
    return data
