"""Calibration sets: manifest, integrity, and refusal of sets that cannot give trustworthy scales."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rating_edge.calibration.calibset import (
    CalibrationWarning,
    balanced_order,
    content_problems,
    doppler_fraction,
    holdout_split,
    load_calib,
    write_calib,
)
from rating_edge.errors import CalibrationError
from rating_edge.package import sha256_file
from rating_edge.preprocess import PreprocessParams

sys.path.insert(0, str(Path(__file__).parent))
from test_quantize_helpers import synthetic_pairs  # noqa: E402

S = 64
P = PreprocessParams(input_size=S)


@pytest.fixture()
def calib(tmp_path):
    gs, dop, lab = synthetic_pairs(40, S)
    write_calib(tmp_path / "c", gs, dop, lab, P, {"kind": "test"}, shard_size=16)
    return tmp_path / "c", gs, dop, lab


def test_roundtrip_manifest_and_small_set_warning(calib):
    path, gs, dop, lab = calib
    man = json.loads((path / "calib.json").read_text())
    assert man["count"] == 40 and man["input_size"] == S and len(man["shards"]) == 3
    assert man["preprocess"] == P.to_dict() and man["source"] == {"kind": "test"}
    assert sum(man["grades"]["combined"]) == 40 and all(len(s["sha256"]) == 64 for s in man["shards"])
    with pytest.warns(CalibrationWarning, match="only 40 pairs"):  # expected: tests use small sets
        cs = load_calib(path, P)
    assert np.array_equal(cs.gs, gs) and np.array_equal(cs.doppler, dop) and np.array_equal(cs.labels, lab)


def test_corrupt_shard_is_refused(calib):
    path = calib[0]
    with open(path / "shard-00001.npz", "r+b") as f:
        f.seek(100)
        f.write(b"\x00\x01\x02")
    with pytest.raises(CalibrationError, match="SHA-256"):
        load_calib(path, P, warn_small=False)


def test_missing_and_empty_sets_are_refused(tmp_path, calib):
    with pytest.raises(CalibrationError, match="not a calibration set"):
        load_calib(tmp_path / "nothing")
    with pytest.raises(CalibrationError, match="no calibration pairs"):
        write_calib(tmp_path / "e", np.zeros((0, S, S, 3), np.uint8), np.zeros((0, S, S, 3), np.uint8), None, P, {})
    path = calib[0]
    man = json.loads((path / "calib.json").read_text())
    man["shards"], man["count"] = [], 0
    (path / "calib.json").write_text(json.dumps(man))
    with pytest.raises(CalibrationError, match="empty"):
        load_calib(path)


def test_wrong_size_and_other_preprocessing_are_refused(calib, tmp_path):
    path, gs, dop, lab = calib
    with pytest.raises(CalibrationError, match=r"uint8 \(N, 96, 96, 3\)"):
        write_calib(tmp_path / "w", gs, dop, lab, PreprocessParams(input_size=96), {})
    with pytest.raises(CalibrationError, match="other preprocessing.*input_size"):
        load_calib(path, PreprocessParams(input_size=96), warn_small=False)
    other = PreprocessParams.from_dict({**P.to_dict(), "interpolation": "linear"})
    with pytest.raises(CalibrationError, match="interpolation"):
        load_calib(path, other, warn_small=False)


def _forge(path: Path, gs, dop):
    """Rewrite the first shard with other images and a matching hash (a set made by another tool)."""
    man = json.loads((path / "calib.json").read_text())
    sh = man["shards"][0]
    n = sh["count"]
    with np.load(path / sh["file"]) as z:
        labels = z["labels"]
    np.savez(path / sh["file"], gs=gs[:n], doppler=dop[:n], labels=labels)
    sh["sha256"] = sha256_file(path / sh["file"])
    man["shards"] = [sh]
    man["count"] = n
    (path / "calib.json").write_text(json.dumps(man))


@pytest.mark.parametrize("kind,match", [("constant", "constant"), ("noise", "random noise"),
                                        ("raw_doppler", "not made with the Doppler transform")])
def test_garbage_sets_fail_loudly(calib, kind, match):
    path, gs, dop, _ = calib
    rng = np.random.default_rng(1)
    if kind == "constant":
        gs, dop = np.full_like(gs, 128), np.full_like(dop, 128)
    elif kind == "noise":
        gs = rng.integers(0, 256, gs.shape, dtype=np.uint8)
        dop = rng.integers(0, 256, dop.shape, dtype=np.uint8)
    else:  # colour Doppler never transformed: blue flow on gray
        dop = dop.copy()
        dop[:, 20:40, 20:40] = (0, 80, 255)
    assert any(match in p for p in content_problems(gs, dop))
    _forge(path, gs, dop)
    with pytest.raises(CalibrationError, match=match):
        load_calib(path, warn_small=False)
    with pytest.raises(CalibrationError, match=match):
        write_calib(path.parent / "again", gs, dop, None, P, {})


def test_balanced_order_keeps_every_grade_and_doppler_level():
    gs, dop, lab = synthetic_pairs(64, S)
    order = balanced_order(lab, doppler_fraction(dop))
    assert sorted(order.tolist()) == list(range(64))
    first = order[:12]
    assert set(lab[first, 2].tolist()) == set(lab[:, 2].tolist())
    assert doppler_fraction(dop[first]).max() > 0.02 and doppler_fraction(dop[first]).min() < 0.002


def test_holdout_split_is_disjoint_and_spread(calib):
    cs = load_calib(calib[0], warn_small=False)
    cal, held = holdout_split(cs, 0.25)
    assert len(set(cal) & set(held)) == 0 and len(cal) + len(held) == len(cs)
    assert len(held) == 10 and len(set(cs.labels[held, 2].tolist())) >= 3


def test_collect_phantom_cli(tmp_path):
    pytest.importorskip("rating_edge.phantom.joint")
    from rating_edge.cli import main

    out = tmp_path / "cal"
    assert main(["calib", "collect", str(out), "--phantom", "13", "--input-size", "64"]) == 0
    man = json.loads((out / "calib.json").read_text())
    assert man["count"] == 13 and man["source"]["kind"] == "phantom"
    assert all(c > 0 for c in man["grades"]["sh"])  # every SH grade present
    cs = load_calib(out, PreprocessParams(input_size=64), warn_small=False)
    assert cs.gs.shape == (13, 64, 64, 3)
    assert main(["calib", "collect", str(tmp_path / "x"), "--phantom", "3", "--dataset", str(tmp_path)]) == 2


def test_collect_from_video_source_uses_runtime_pairing(tmp_path):
    pytest.importorskip("rating_edge.runtime.pairing")
    pytest.importorskip("rating_edge.phantom.video")
    from rating_edge.calibration.collect import collect_source

    gs, dop, lab, src = collect_source("phantom://?seed=1&seconds=6&fps=8&size=640x480", P, max_pairs=10)
    assert src["kind"] == "video" and src["frames"] == 48 and 1 <= len(gs) <= 10
    assert gs.shape[1:] == (S, S, 3) and dop.shape == gs.shape
    assert (lab >= 0).all()  # phantom sources carry their true grades
    assert not content_problems(gs, dop)
