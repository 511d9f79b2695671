"""Publish a file or folder by temp-then-rename: a reader sees the old version or the new one, never half.

One convention for every writer: the work is done at a hidden sibling `.NAME.partial` (hidden, so
listing a folder or checking a package for unlisted files never sees it) and renamed onto NAME when
complete. A run killed part-way leaves only the stage, which the next publish of NAME removes first.
Output folders follow one rule (docs/hardening-packages.md): a command that makes a folder refuses an
existing non-empty one, builds the stage and renames it into place at the end.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from rating_edge.errors import RatingEdgeError


def stage_path(dst) -> Path:
    dst = Path(dst)
    return dst.with_name(f".{dst.name}.partial")


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    elif p.exists() or p.is_symlink():
        p.unlink()


@contextmanager
def publish(dst, error: type[RatingEdgeError] = RatingEdgeError):
    """Yield the stage path for `dst` (nothing there yet); on a clean exit rename it onto `dst`.

    A file replaces `dst` atomically (os.replace). A folder replaces `dst` only when `dst` is missing
    or an empty folder, so finished output is never merged with or silently replaced by a new run.
    On an exception the stage is removed and the exception goes on.
    """
    dst = Path(dst)
    stage = stage_path(dst)
    _remove(stage)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield stage
        if not stage.exists():
            raise error(f"nothing was written for {dst}")
        if stage.is_dir():
            if dst.is_dir() and not any(dst.iterdir()):
                dst.rmdir()
            elif dst.exists():
                raise error(f"{dst} exists and is not empty; choose a new output folder (or delete it first)")
        os.replace(stage, dst)
    except BaseException:
        _remove(stage)
        raise


def publish_bytes(dst, data: bytes) -> Path:
    """Write `data` to `dst` through the stage, synced to disk before the rename."""
    dst = Path(dst)
    with publish(dst) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    return dst


def publish_text(dst, text: str) -> Path:
    return publish_bytes(dst, text.encode("utf-8"))


def publish_json(dst, data) -> Path:
    return publish_text(dst, json.dumps(data, indent=2))


def require_new_folder(out, error: type[RatingEdgeError] = RatingEdgeError) -> Path:
    """The output-folder rule's check, made before any work: `out` is missing or an empty folder."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise error(f"{out} exists and is not empty; choose a new output folder (or delete it first)")
    return out


def write_report(dst, text: str, option: str = "--json") -> Path:
    """A report file named by the user, published whole; a folder or unwritable path is a one-line error."""
    dst = Path(dst)
    if dst.is_dir():
        raise RatingEdgeError(f"{option} {dst} is a folder; give a file name")
    try:
        return publish_text(dst, text)
    except OSError as e:
        raise RatingEdgeError(f"{option} {dst}: cannot write ({e.strerror or e})") from None
