
import pytest

from rating_edge.errors import PackageError
from rating_edge.package import load_package, write_model_json
from rating_edge.preprocess import PreprocessParams
from rating_edge.spec import preset


def make_pkg(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"graph-bytes")
    meta = {"spec": preset("tiny").to_dict(), "preprocess": PreprocessParams(64).to_dict(),
            "graphs": [{"file": "model.onnx", "kind": "fused"}], "fusion": {"strategy": "stack"}, "precision": "fp32"}
    write_model_json(tmp_path, meta)
    return tmp_path


def test_package_roundtrip_and_hashes(tmp_path):
    pkg = load_package(make_pkg(tmp_path))
    assert pkg.strategy == "stack" and pkg.spec == preset("tiny")
    assert pkg.preprocess.input_size == 64
    assert "model.onnx" in pkg.meta["artifacts"] and len(pkg.model_hash) == 12


def test_tampered_or_missing_artifact_refused(tmp_path):
    make_pkg(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"graph-bytez")
    with pytest.raises(PackageError, match="tampered"):
        load_package(tmp_path)
    (tmp_path / "model.onnx").unlink()
    with pytest.raises(PackageError, match="missing"):
        load_package(tmp_path)
    with pytest.raises(PackageError, match="not a model package"):
        load_package(tmp_path / "nothing")


def test_unknown_variant(tmp_path):
    pkg = load_package(make_pkg(tmp_path))
    with pytest.raises(PackageError, match="variant"):
        pkg.graphs("int8-u8s8")


def test_write_refuses_missing_artifact(tmp_path):
    meta = {"spec": preset("tiny").to_dict(), "preprocess": {}, "graphs": [{"file": "gone.onnx", "kind": "fused"}]}
    with pytest.raises(PackageError, match="gone.onnx"):
        write_model_json(tmp_path, meta)
