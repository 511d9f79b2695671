"""Hypothesis fuzzing of every manifest the toolkit reads (model.json, engines.json, ensemble.json,
calib.json, scanner profiles), plus the issue 13 manifest probes as named regression tests.

The property: reading a manifest either succeeds or raises a RatingEdgeError whose message is one line;
no other exception type ever escapes (no KeyError, TypeError, ValueError, UnicodeDecodeError,
RecursionError). Mutations start from a valid manifest and replace one value at a random key path, so
the validators are exercised on almost-valid input, where the tracebacks used to come from.
"""
import json

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rating_edge.calibration.calibset import load_calib, write_calib  # noqa: E402
from rating_edge.errors import RatingEdgeError  # noqa: E402
from rating_edge.model.checkpoint import read_manifest  # noqa: E402
from rating_edge.package import load_package, write_engines_json, write_model_json  # noqa: E402
from rating_edge.preprocess import PreprocessParams  # noqa: E402
from rating_edge.runtime.layout import load_profile  # noqa: E402
from rating_edge.spec import preset  # noqa: E402

SPEC = preset("tiny")
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                      st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
                      st.sampled_from(["../x", "/etc/passwd", "potato", "dynamic", "", "model.onnx", "a" * 64]))
json_value = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=4),
                                                         st.dictionaries(st.text(max_size=8), c, max_size=4)),
                          max_leaves=12)


def _paths(obj, prefix=()):
    """Every key path into a JSON document (the document itself included)."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


def _mutate(doc, path, value, delete):
    doc = json.loads(json.dumps(doc))
    if not path:
        return value
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def _write(p, doc):
    p.write_text(json.dumps(doc, allow_nan=True))


def _expect_one_line_or_success(fn):
    try:
        fn()
    except RatingEdgeError as e:
        msg = str(e)
        assert msg and "\n" not in msg, msg
    # any other exception type fails the test with its traceback


def mutation():
    return st.tuples(st.integers(0, 10**6), json_value, st.booleans())


# -------------------------------------------------------------------------- fixtures (built once)

@pytest.fixture(scope="module")
def pkg_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pkg")
    (d / "model.onnx").write_bytes(b"graph")
    (d / "engines").mkdir()
    (d / "engines" / "e.engine").write_bytes(b"plan")
    write_model_json(d, {"spec": SPEC.to_dict(), "preprocess": PreprocessParams(64).to_dict(),
                         "graphs": [{"file": "model.onnx", "kind": "fused"}], "fusion": {"strategy": "stack"},
                         "precision": "fp32", "batch": "dynamic",
                         "quantization": {"gate": 0.98, "member_gate": None}})
    write_engines_json(d, [{"file": "engines/e.engine", "precision": "fp16", "gpu": "X",
                            "compute_capability": "8.7", "trt_version": "10.3.0", "dla_core": None}], [])
    return d


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("ck")
    nets = {nid: {"file": f"networks/{nid}.safetensors", "sha256": "0" * 64, "module": nid.split("-")[1]}
            for nid in SPEC.network_ids()}
    _write(d / "ensemble.json", {"format": "rating-edge-ensemble", "format_version": 1, "spec": SPEC.to_dict(),
                                 "networks": nets, "meta": {"preprocess": PreprocessParams(64).to_dict()}})
    return d


@pytest.fixture(scope="module")
def calib_dir(tmp_path_factory):
    from rating_edge.phantom.dataset import phantom_arrays

    d = tmp_path_factory.mktemp("calib") / "c"
    params = PreprocessParams(64)
    gs, dop, lab = phantom_arrays(8, params, 0)
    write_calib(d, gs, dop, lab, params, {"kind": "phantom"})
    return d


def _fuzz_file(folder, name, load, data, tmp_path_factory):
    """Copy `folder` to a fresh place, mutate its manifest `name` and load it."""
    import shutil

    base = json.loads((folder / name).read_text())
    paths = list(_paths(base))
    i, value, delete = data
    work = tmp_path_factory.mktemp("f")
    dst = work / "x"
    shutil.copytree(folder, dst, symlinks=True)
    _write(dst / name, _mutate(base, paths[i % len(paths)], value, delete))
    _expect_one_line_or_success(lambda: load(dst))


@FUZZ
@given(data=mutation())
def test_fuzz_model_json(pkg_dir, tmp_path_factory, data):
    def load(d):
        p = load_package(d, verify=False)
        p.spec, p.preprocess, p.graphs()  # noqa: B018 - the properties parse the validated values

    _fuzz_file(pkg_dir, "model.json", load, data, tmp_path_factory)


@FUZZ
@given(data=mutation())
def test_fuzz_engines_json(pkg_dir, tmp_path_factory, data):
    _fuzz_file(pkg_dir, "engines.json", lambda d: load_package(d, verify=False), data, tmp_path_factory)


@FUZZ
@given(data=mutation())
def test_fuzz_ensemble_json(ckpt_dir, tmp_path_factory, data):
    def load(d):
        m = read_manifest(d)
        pp = m.get("meta", {}).get("preprocess")
        if pp is not None:
            PreprocessParams.from_dict(pp)

    _fuzz_file(ckpt_dir, "ensemble.json", load, data, tmp_path_factory)


@FUZZ
@given(data=mutation())
def test_fuzz_calib_json(calib_dir, tmp_path_factory, data):
    _fuzz_file(calib_dir, "calib.json", lambda d: load_calib(d, warn_small=False), data, tmp_path_factory)


PROFILE = {"name": "x", "frame_size": [1280, 720], "layout": "dual", "areas": [[0, 0, 640, 720], [640, 0, 640, 720]],
           "ui_regions": [[0, 0, 10, 10]], "roi": [1, 2, 30, 40], "detect": {"texture_density": 0.5, "redetect_every": 30},
           "doppler": {"chroma_min": 60, "saturation_min": 0.45, "min_area": 4}}


@FUZZ
@given(data=mutation(), yaml_form=st.booleans())
def test_fuzz_profiles(tmp_path_factory, data, yaml_form):
    import yaml

    paths = list(_paths(PROFILE))
    i, value, delete = data
    doc = _mutate(PROFILE, paths[i % len(paths)], value, delete)
    d = tmp_path_factory.mktemp("prof")
    if yaml_form:
        p = d / "p.yaml"
        p.write_text(yaml.safe_dump(doc))
    else:
        p = d / "p.json"
        _write(p, doc)
    _expect_one_line_or_success(lambda: load_profile(p))


@FUZZ
@given(raw=st.binary(max_size=256))
def test_fuzz_raw_bytes_in_every_manifest(tmp_path_factory, raw):
    d = tmp_path_factory.mktemp("raw")
    for name, load in (("model.json", load_package), ("ensemble.json", read_manifest), ("calib.json", load_calib)):
        (d / name).write_bytes(raw)
        _expect_one_line_or_success(lambda: load(d))
    (d / "p.yaml").write_bytes(raw)
    _expect_one_line_or_success(lambda: load_profile(d / "p.yaml"))
    (d / "p.json").write_bytes(raw)
    _expect_one_line_or_success(lambda: load_profile(d / "p.json"))


# -------------------------------------------------------------------------- issue 13 probes, by name

def _pkg_with(tmp_path, pkg_dir, fn):
    import shutil

    d = tmp_path / "p"
    shutil.copytree(pkg_dir, d)
    (d / "engines.json").unlink()
    (d / "engines" / "e.engine").unlink()
    meta = json.loads((d / "model.json").read_text())
    fn(meta)
    _write(d / "model.json", meta)
    return d


@pytest.mark.parametrize("edit,key", [
    (lambda m: m["spec"].update(width="eight"), "spec.width"),
    (lambda m: m.update(artifacts=["model.onnx"]), "artifacts"),
    (lambda m: m["artifacts"]["model.onnx"].pop("sha256"), "artifacts.model.onnx"),
    (lambda m: m["preprocess"].update(mean="x"), "preprocess.mean"),
    (lambda m: m.update(batch="potato"), "batch"),
    (lambda m: m.update(batch=float("nan")), "batch"),
    (lambda m: m["preprocess"].update(std=[float("nan"), 0.2, 0.2]), "preprocess.std[0]"),
    (lambda m: m["graphs"][0].pop("file"), "graphs[0]"),
    (lambda m: m["quantization"].update(gate=float("inf")), "quantization.gate"),
    (lambda m: m.update(format_version=99), "format_version"),
])
def test_malformed_model_json_names_the_key(tmp_path, pkg_dir, edit, key):
    d = _pkg_with(tmp_path, pkg_dir, edit)
    with pytest.raises(RatingEdgeError) as e:
        load_package(d)
    assert key in str(e.value) and "\n" not in str(e.value)


def test_network_entry_without_file_names_the_network(tmp_path, ckpt_dir):
    import shutil

    d = tmp_path / "ck"
    shutil.copytree(ckpt_dir, d)
    m = json.loads((d / "ensemble.json").read_text())
    del m["networks"]["fold0-sh-gt0-seed0"]["file"]
    _write(d / "ensemble.json", m)
    with pytest.raises(RatingEdgeError, match=r"networks\.fold0-sh-gt0-seed0: 'file' is missing"):
        read_manifest(d)


def test_binary_and_deeply_nested_manifests_are_one_line(tmp_path):
    (tmp_path / "model.json").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(RatingEdgeError, match="not a text file"):
        load_package(tmp_path)
    (tmp_path / "model.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(RatingEdgeError, match="nested deeper"):
        load_package(tmp_path)
    (tmp_path / "model.json").write_text("[" * 40 + "]" * 40)
    with pytest.raises(RatingEdgeError, match="nested deeper than 32"):
        load_package(tmp_path)
    (tmp_path / "p.yaml").write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(RatingEdgeError, match="not a text file"):
        load_profile(tmp_path / "p.yaml")
    (tmp_path / "p.yaml").write_text("a: " + "[" * 2000 + "]" * 2000)
    with pytest.raises(RatingEdgeError, match="nested"):
        load_profile(tmp_path / "p.yaml")


def test_oversized_manifest_is_refused_before_reading(tmp_path, monkeypatch):
    import rating_edge.manifest as mf

    monkeypatch.setattr(mf, "MAX_BYTES", 100)
    (tmp_path / "model.json").write_text(json.dumps({"format": "rating-edge-package", "pad": "x" * 200}))
    with pytest.raises(RatingEdgeError, match="too large"):
        load_package(tmp_path)


@pytest.mark.parametrize("edit,msg", [
    ({"areas": [[-5, 0, 100, 100]], "frame_size": [640, 480]}, "areas[0][0]|x, y >= 0"),
    ({"areas": [[600, 0, 100, 100]], "frame_size": [640, 480]}, "inside the frame_size"),
    ({"areas": [[0, 0, 100, 100]], "frame_size": [0, 480]}, "frame_size[0]: must be >= 1|frame_size must be [W, H]"),
    ({"detect": {"texture_density": "x"}}, "detect.texture_density"),
    ({"detect": {"bogus": 1}}, "bogus"),
    ({"roi": [0, 0, -1, 5]}, "positive size|roi must be 'doppler_box', 'area' or [x, y, w, h]"),
])
def test_bad_profiles_name_the_key(tmp_path, edit, msg):
    import re

    p = tmp_path / "p.json"
    p.write_text(json.dumps({"name": "x", **edit}))
    with pytest.raises(RatingEdgeError, match="|".join(re.escape(m) for m in msg.split("|"))):
        load_profile(p)


def test_valid_manifests_still_load(pkg_dir, ckpt_dir, calib_dir, tmp_path):
    pkg = load_package(pkg_dir)
    assert pkg.meta["engines"][0]["file"] == "engines/e.engine"
    assert read_manifest(ckpt_dir)["spec_obj"] == SPEC
    assert len(load_calib(calib_dir, warn_small=False)) == 8
    p = tmp_path / "p.json"
    p.write_text(json.dumps(PROFILE))
    prof = load_profile(p)
    assert prof.areas == [(0, 0, 640, 720), (640, 0, 640, 720)]
    assert np.isfinite(prof.detect.texture_density)
