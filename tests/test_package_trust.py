"""Issue 13 probes on package trust: tampering, path escapes, format versions, engines.json identity.

Every probe must end in a one-line PackageError/CheckpointError/CalibrationError (exit 2 at the CLI),
never in a package that loads, and never in a traceback.
"""
import json
import os

import numpy as np
import pytest

from rating_edge.cli import main
from rating_edge.errors import CalibrationError, CheckpointError, PackageError
from rating_edge.package import (
    ENGINES_FILE,
    load_package,
    resolve_inside,
    sha256_file,
    write_engines_json,
    write_model_json,
)
from rating_edge.preprocess import PreprocessParams
from rating_edge.spec import preset

SPEC = preset("tiny")


def _pkg(folder, **extra):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(b"graph-bytes")
    meta = {"spec": SPEC.to_dict(), "preprocess": PreprocessParams(64).to_dict(),
            "graphs": [{"file": "model.onnx", "kind": "fused"}], "fusion": {"strategy": "stack"},
            "precision": "fp32", **extra}
    write_model_json(folder, meta)
    return folder


def _edit(folder, fn, name="model.json"):
    p = folder / name
    meta = json.loads(p.read_text())
    fn(meta)
    p.write_text(json.dumps(meta))


def test_tampered_graph_with_empty_artifacts_is_refused(tmp_path):
    p = _pkg(tmp_path / "p")
    (p / "model.onnx").write_bytes(b"other graph")
    _edit(p, lambda m: m.update(artifacts={}))
    with pytest.raises(PackageError, match="model.onnx is used but not listed"):
        load_package(p)


def test_graph_not_in_artifacts_is_refused(tmp_path):
    p = _pkg(tmp_path / "p")
    (p / "evil.onnx").write_bytes(b"evil")
    _edit(p, lambda m: m["graphs"].__setitem__(0, {"file": "evil.onnx", "kind": "fused"}))
    with pytest.raises(PackageError, match="evil.onnx is used but not listed"):
        load_package(p)


@pytest.mark.parametrize("where", ["graph", "artifact", "variant", "engine", "weights"])
@pytest.mark.parametrize("bad", ["../outside.onnx", "/etc/passwd", "a/../../x", "C:\\x.onnx", "./model.onnx"])
def test_escaping_paths_are_refused_by_name(tmp_path, where, bad):
    p = _pkg(tmp_path / "p")
    rec = {"sha256": "0" * 64, "bytes": 1}

    def put(m):
        if where == "graph":
            m["graphs"] = [{"file": bad, "kind": "fused"}]
            m["artifacts"][bad] = rec
        elif where == "artifact":
            m["artifacts"][bad] = rec
        elif where == "variant":
            m["variants"] = {"int8-u8s8": [{"file": bad, "kind": "fused"}]}
        elif where == "engine":
            m["engines"] = [{"file": bad, "precision": "fp16"}]
        else:
            m["fusion"]["weights"] = bad

    _edit(p, put)
    with pytest.raises(PackageError) as e:
        load_package(p)
    msg = str(e.value)
    assert "\n" not in msg and ("not in the expected form" in msg or "relative path" in msg)


def test_symlink_out_of_the_package_is_refused(tmp_path):
    p = _pkg(tmp_path / "p")
    secret = tmp_path / "secret.onnx"
    secret.write_bytes(b"outside")
    os.symlink(secret, p / "link.onnx")
    _edit(p, lambda m: (m["graphs"].__setitem__(0, {"file": "link.onnx", "kind": "fused"}),
                        m["artifacts"].__setitem__("link.onnx", {"sha256": sha256_file(secret), "bytes": 7})))
    with pytest.raises(PackageError, match="resolves outside the folder"):
        load_package(p)
    with pytest.raises(PackageError, match="outside"):
        resolve_inside(p, "link.onnx")


def test_unlisted_file_in_the_package_is_refused(tmp_path):
    """External data, a calibration cache or any other file a loader might open must be hashed too."""
    p = _pkg(tmp_path / "p")
    (p / "model.onnx.data").write_bytes(b"weights")
    with pytest.raises(PackageError, match="model.onnx.data is not listed"):
        load_package(p)
    (p / "model.onnx.data").unlink()
    (p / ".distill").mkdir()
    (p / ".distill" / "state.json").write_text("{}")  # distillation's resumable state is not package content
    load_package(p)


def test_onnx_runtime_refuses_external_data_outside_the_package(tmp_path):
    """Files outside the folder cannot be listed; ONNX Runtime itself refuses external data that escapes
    the graph's folder (relied on, so checked here)."""
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    (tmp_path / "outside.data").write_bytes(np.full(4, 7, np.float32).tobytes())
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    for k, v in (("location", "../outside.data"), ("offset", "0"), ("length", "16")):
        e = w.external_data.add()
        e.key, e.value = k, v
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], [w])
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "m.onnx").write_bytes(helper.make_model(g).SerializeToString())
    with pytest.raises(Exception, match="escapes model directory"):
        ort.InferenceSession(str(tmp_path / "pkg" / "m.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("version", [99, 0, "1", 1.5, None])
def test_unknown_format_version_names_the_versions_read(tmp_path, version):
    p = _pkg(tmp_path / "p")
    _edit(p, lambda m: m.update(format_version=version))
    with pytest.raises(PackageError, match=r"format_version .* is not one this toolkit reads \(1\)"):
        load_package(p)


def test_engines_json_keeps_the_model_hash_and_is_checked(tmp_path):
    p = _pkg(tmp_path / "p")
    before = load_package(p).model_hash
    (p / "engines").mkdir()
    (p / "engines" / "model-fp16.engine").write_bytes(b"plan")
    rec = {"file": "engines/model-fp16.engine", "precision": "fp16", "gpu": "X", "compute_capability": "8.7",
           "trt_version": "10.3.0", "kind": "fused", "onnx": "model.onnx",
           "onnx_sha256": json.loads((p / "model.json").read_text())["artifacts"]["model.onnx"]["sha256"]}
    write_engines_json(p, [rec], [])
    pkg = load_package(p)
    assert pkg.model_hash == before  # building an engine leaves the identity alone
    assert pkg.meta["engines"][0]["file"] == rec["file"] and pkg.meta["engines"][0]["sha256"]
    (p / "engines" / "model-fp16.engine").write_bytes(b"PLAN")  # tampered engine
    with pytest.raises(PackageError, match="does not match its SHA-256 in engines.json"):
        load_package(p)
    (p / "engines" / "model-fp16.engine").write_bytes(b"plan")
    _edit(p, lambda m: m.update(precision="int8"))  # model.json edited after the build
    with pytest.raises(PackageError, match="built for another model.json"):
        load_package(p)


def test_old_packages_with_engines_in_model_json_still_load(tmp_path):
    p = tmp_path / "p"
    p.mkdir()
    (p / "engines").mkdir()
    (p / "engines" / "e.engine").write_bytes(b"plan")
    _pkg(p, engines=[{"file": "engines/e.engine", "precision": "fp16", "gpu": "X", "compute_capability": "8.7",
                      "trt_version": "10.3.0"}])
    assert load_package(p).meta["engines"][0]["file"] == "engines/e.engine"


@pytest.mark.parametrize("sidecar", ["[]", "{\"format\": \"rating-edge-engines\"}", "\x00\x01binary",
                                     "{\"format\": \"rating-edge-engines\", \"model_sha256\": \"x\", \"engines\": []}"])
def test_malformed_engines_json_is_one_line(tmp_path, sidecar):
    p = _pkg(tmp_path / "p")
    (p / ENGINES_FILE).write_text(sidecar)
    with pytest.raises(PackageError) as e:
        load_package(p)
    assert "\n" not in str(e.value) and "engines.json" in str(e.value)


def test_checkpoint_network_file_outside_is_refused(tmp_path):
    from rating_edge.model.checkpoint import read_manifest

    ck = tmp_path / "ck"
    ck.mkdir()
    nets = {nid: {"file": f"networks/{nid}.safetensors", "sha256": "0" * 64, "module": nid.split("-")[1]}
            for nid in SPEC.network_ids()}
    first = SPEC.network_ids()[0]
    for bad, msg in (("../../etc/passwd", "not in the expected form"), ("/etc/passwd", "not in the expected form")):
        nets[first]["file"] = bad
        (ck / "ensemble.json").write_text(json.dumps({"format": "rating-edge-ensemble", "format_version": 1,
                                                      "spec": SPEC.to_dict(), "networks": nets}))
        with pytest.raises(CheckpointError, match=msg):
            read_manifest(ck)
    (tmp_path / "x.safetensors").write_bytes(b"x")
    (ck / "networks").mkdir()
    os.symlink(tmp_path / "x.safetensors", ck / "networks" / "link.safetensors")
    nets[first]["file"] = "networks/link.safetensors"
    (ck / "ensemble.json").write_text(json.dumps({"format": "rating-edge-ensemble", "spec": SPEC.to_dict(),
                                                  "networks": nets}))
    with pytest.raises(CheckpointError, match="outside the folder"):
        read_manifest(ck)


def test_calibration_shard_outside_is_refused(tmp_path):
    from rating_edge.calibration.calibset import load_calib

    c = tmp_path / "c"
    c.mkdir()
    (c / "calib.json").write_text(json.dumps({
        "format": "rating-edge-calib", "format_version": 1, "count": 1, "input_size": 64,
        "preprocess": PreprocessParams(64).to_dict(), "shards": [{"file": "../s.npz", "count": 1, "sha256": "0" * 64}]}))
    with pytest.raises(CalibrationError):
        load_calib(c)


@pytest.mark.parametrize("cmd", [["verify", "{p}", "--reference", "{c}"], ["bench", "{p}", "--reference", "{c}"],
                                 ["evaluate", "{p}", "{p}"]])
def test_cli_refuses_tampered_package_in_one_line(tmp_path, capsys, cmd):
    p = _pkg(tmp_path / "p")
    (p / "model.onnx").write_bytes(b"other graph")
    _edit(p, lambda m: m.update(artifacts={}))
    ck = tmp_path / "ck"  # a reference manifest (its network files are never reached)
    ck.mkdir()
    nets = {nid: {"file": f"networks/{nid}.safetensors", "sha256": "0" * 64} for nid in SPEC.network_ids()}
    (ck / "ensemble.json").write_text(json.dumps({"format": "rating-edge-ensemble", "spec": SPEC.to_dict(),
                                                  "networks": nets}))
    assert main([a.format(p=p, c=ck) for a in cmd]) == 2
    err = capsys.readouterr().err.strip()
    assert "not listed" in err and len(err.splitlines()) <= 2  # one message (rich may wrap a long path)
