"""Issue 12: `rating-edge build` keeps the model hash. Engines go to engines.json (hashed, machine keys),
model.json is never rewritten; a rebuild replaces this machine's engine and keeps other machines'; a
failed build leaves the package as it was. TensorRT and CUDA are stand-ins here (the real build runs in
tests/gpu)."""
import json
import sys
import types

import pytest

from rating_edge.calibration import trt_build
from rating_edge.errors import RatingEdgeError
from rating_edge.package import (
    ENGINES_FILE,
    load_package,
    sha256_file,
    write_model_json,
)
from rating_edge.preprocess import PreprocessParams
from rating_edge.spec import preset


def _fake_trt(version="10.3.0", fail=False):
    class Inp:
        name, shape = "gs", (-1, 64, 64, 3)

    class Network:
        num_inputs = 1

        def get_input(self, i):
            return Inp()

    class Cache:
        def serialize(self):
            return b"cache"

    class Config:
        default_device_type = DLA_core = None

        def set_memory_pool_limit(self, *a):
            pass

        def set_flag(self, f):
            pass

        def add_optimization_profile(self, p):
            return 0

        def create_timing_cache(self, b):
            return Cache()

        def set_timing_cache(self, c, ignore_mismatch=False):
            return True

        def get_timing_cache(self):
            return Cache()

    class Profile:
        def set_shape(self, *a):
            pass

    class Builder:
        num_DLA_cores = 0

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            return None if fail else b"serialized-engine"

    class Parser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            return True

    class Logger:
        WARNING = 0

        def __init__(self, level):
            pass

    return types.SimpleNamespace(__version__=version, Logger=Logger, Builder=Builder, OnnxParser=Parser,
                                 MemoryPoolType=types.SimpleNamespace(WORKSPACE=0),
                                 BuilderFlag=types.SimpleNamespace(FP16=1, INT8=2))


class _Cuda:
    def __init__(self, gpu):
        self.gpu = gpu

    def device_info(self, i):
        return {"gpu": self.gpu, "compute_capability": "8.7"}


@pytest.fixture
def pkg(tmp_path):
    p = tmp_path / "pkg"
    p.mkdir()
    (p / "model.onnx").write_bytes(b"graph")
    write_model_json(p, {"spec": preset("tiny").to_dict(), "preprocess": PreprocessParams(64).to_dict(),
                         "graphs": [{"file": "model.onnx", "kind": "fused"}], "fusion": {"strategy": "stack"},
                         "precision": "fp32", "batch": "dynamic"})
    return p


def _build(monkeypatch, pkg, gpu="Orin", fail=False):
    import rating_edge.infer.cuda_buffers as cb

    monkeypatch.setitem(sys.modules, "tensorrt", _fake_trt(fail=fail))
    monkeypatch.setattr(cb, "get_backend", lambda prefer=None: _Cuda(gpu))
    return trt_build.build_engine(pkg, precision="fp16", log=lambda m: None)


def test_build_keeps_model_json_and_records_engines_in_the_sidecar(monkeypatch, pkg):
    before = (pkg / "model.json").read_bytes()
    hash_before = load_package(pkg).model_hash
    rec = _build(monkeypatch, pkg, "Orin")
    assert (pkg / "model.json").read_bytes() == before
    loaded = load_package(pkg)
    assert loaded.model_hash == hash_before
    side = json.loads((pkg / ENGINES_FILE).read_text())
    assert side["model_sha256"] == sha256_file(pkg / "model.json")
    assert [e["file"] for e in side["engines"]] == [rec["file"]]
    assert side["engines"][0]["sha256"] == sha256_file(pkg / rec["file"]) and side["engines"][0]["gpu"] == "Orin"
    assert loaded.meta["engines"][0]["file"] == rec["file"]

    _build(monkeypatch, pkg, "Thor")  # another machine's engine sits beside it
    _build(monkeypatch, pkg, "Orin")  # this machine's is replaced, not duplicated
    gpus = sorted(e["gpu"] for e in load_package(pkg).meta["engines"])
    assert gpus == ["Orin", "Thor"] and load_package(pkg).model_hash == hash_before


def test_failed_build_leaves_the_package_loadable(monkeypatch, pkg):
    _build(monkeypatch, pkg, "Orin")
    side = (pkg / ENGINES_FILE).read_text()
    with pytest.raises(RatingEdgeError, match="failed to build"):
        _build(monkeypatch, pkg, "Thor", fail=True)
    assert (pkg / ENGINES_FILE).read_text() == side
    assert [e["gpu"] for e in load_package(pkg).meta["engines"]] == ["Orin"]  # no stray unlisted file


def test_build_on_an_old_style_package_never_overwrites_a_listed_engine(monkeypatch, pkg):
    """Packages from before engines.json list their engines in model.json; those stay untouched."""
    name = trt_build.engine_name("model.onnx", "fp16", {"gpu": "Orin", "compute_capability": "8.7",
                                                         "trt_version": "10.3.0"}, None)
    (pkg / name).parent.mkdir()
    (pkg / name).write_bytes(b"old engine")
    meta = json.loads((pkg / "model.json").read_text())
    meta["engines"] = [{"file": name, "precision": "fp16", "gpu": "Orin", "compute_capability": "8.7",
                        "trt_version": "10.3.0"}]
    write_model_json(pkg, meta)
    h = load_package(pkg).model_hash
    rec = _build(monkeypatch, pkg, "Orin")
    assert rec["file"] != name and (pkg / name).read_bytes() == b"old engine"
    loaded = load_package(pkg)
    assert loaded.model_hash == h
    assert [e["file"] for e in loaded.meta["engines"]] == [rec["file"]]  # the new build wins for this machine
