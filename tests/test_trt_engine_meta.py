"""TensorRT logic that needs no GPU: version paths, engine records, refusal of foreign engines."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from rating_edge.calibration.trt_build import build_plan, engine_name
from rating_edge.errors import PackageError, RatingEdgeError
from rating_edge.infer.loaders import (
    engine_mismatch,
    machine_key,
    select_engines,
    trt_major,
)
from rating_edge.package import Package

INT8_META = {"variants": {"int8-qdq": [{"file": "int8-qdq/model.onnx", "kind": "fused"}]}}


def test_trt10_uses_builder_flags_and_trt11_strong_typing():
    p = build_plan("10.3.0.30", "fp16", {})
    assert p == {"trt_major": 10, "strongly_typed": False, "flags": ["FP16"], "variant": None, "convert_fp16": False}
    p = build_plan("10.3.0", "int8", INT8_META)
    assert p["flags"] == ["INT8", "FP16"] and p["variant"] == "int8-qdq" and not p["strongly_typed"]
    p = build_plan("11.4.0", "fp16", {})
    assert p["strongly_typed"] and p["flags"] == [] and p["convert_fp16"]
    p = build_plan("11.0.1", "int8", INT8_META)
    assert p["strongly_typed"] and p["variant"] == "int8-qdq" and not p["convert_fp16"]
    assert build_plan("11.0", "fp32", {})["flags"] == [] and build_plan("10.1", "fp32", {})["flags"] == []


def test_build_plan_refusals():
    with pytest.raises(PackageError, match="rating-edge quantize"):
        build_plan("10.3.0", "int8", {})
    with pytest.raises(RatingEdgeError, match="too old"):
        build_plan("8.6.1", "fp16", {})
    with pytest.raises(RatingEdgeError, match="unknown precision"):
        build_plan("10.3.0", "bf16", {})
    assert trt_major("11.4.0.1") == 11


def _pkg(engines, precision="fp32"):
    return Package(Path("/pkgs/p"), {"engines": engines, "precision": precision})


ORIN = machine_key("Orin", "8.7", "10.3.0")


def _rec(prec, key, f="model"):
    return {"file": engine_name(f"{f}.onnx", prec, key, None), **key, "precision": prec, "kind": "fused"}


def test_engine_for_another_gpu_or_trt_is_refused_with_rebuild_command():
    h200 = machine_key("NVIDIA H200", "9.0", "10.3.0")
    pkg = _pkg([_rec("fp16", h200)])
    with pytest.raises(PackageError, match=r"built for NVIDIA H200 \(sm 9.0\).*Orin.*rating-edge build /pkgs/p "
                                           r"--precision fp16"):
        select_engines(pkg, ORIN)
    newer = machine_key("Orin", "8.7", "10.7.0")
    with pytest.raises(PackageError, match="TensorRT 10.7.0, this machine has TensorRT 10.3.0"):
        select_engines(_pkg([_rec("fp16", newer)]), ORIN)
    assert engine_mismatch(_rec("fp16", ORIN), ORIN) is None


def test_engine_selection_prefers_int8_then_fp16_and_keeps_other_machines():
    h200 = machine_key("NVIDIA H200", "9.0", "10.3.0")
    engines = [_rec("fp16", ORIN), _rec("int8", h200), _rec("int8", ORIN), _rec("fp32", ORIN)]
    assert [e["precision"] for e in select_engines(_pkg(engines), ORIN)] == ["int8"]
    assert select_engines(_pkg(engines), ORIN, "fp16")[0]["file"] == engines[0]["file"]
    assert select_engines(_pkg(engines), h200)[0]["gpu"] == "NVIDIA H200"
    with pytest.raises(PackageError, match="no TensorRT engine.*--precision int8"):
        select_engines(_pkg([], "int8"), ORIN)
    with pytest.raises(PackageError, match="no fp32 TensorRT engine"):
        select_engines(_pkg([_rec("fp16", ORIN)]), ORIN, "fp32")
    assert engine_name("networks/fold0-sh-gt0-seed0.onnx", "int8", ORIN, 1) == \
        "engines/fold0-sh-gt0-seed0-int8-dla1-orin-sm87-trt10.3.0.engine"


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_trt_backend_without_tensorrt_says_how_to_install(tmp_path):
    pytest.importorskip("torch")
    from rating_edge.infer import make_runner
    from rating_edge.spec import EnsembleSpec

    sys.path.insert(0, str(Path(__file__).parent))
    from test_quantize_helpers import make_fused_package

    pkg = make_fused_package(tmp_path / "p", EnsembleSpec(folds=1, width=8, input_size=64, hidden=32))
    with pytest.raises(RatingEdgeError, match=r"TensorRT is not installed: pip install 'rating-edge\[tensorrt\]'"):
        make_runner(pkg, "trt").activate()
    from rating_edge.cli import main

    assert main(["build", str(pkg), "--precision", "fp16"]) == 2


def test_fp16_conversion_for_strongly_typed_trt11(tmp_path):
    pytest.importorskip("onnxconverter_common")
    pytest.importorskip("torch")
    import onnx
    import onnxruntime as ort

    from rating_edge.calibration.fp16 import convert_fp16
    from rating_edge.spec import EnsembleSpec

    sys.path.insert(0, str(Path(__file__).parent))
    from test_quantize_helpers import make_fused_package, synthetic_pairs

    pkg = make_fused_package(tmp_path / "p", EnsembleSpec(folds=1, width=8, input_size=64, hidden=32))
    dst = convert_fp16(pkg / "model.onnx", tmp_path / "m16.onnx")
    m = onnx.load(str(dst))
    assert [i.type.tensor_type.elem_type for i in m.graph.input] == [onnx.TensorProto.UINT8] * 2
    assert all(o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for o in m.graph.output)
    assert sum(i.data_type == onnx.TensorProto.FLOAT16 for i in m.graph.initializer) > 10
    gs, dop, _ = synthetic_pairs(3, 64)
    a = ort.InferenceSession(str(pkg / "model.onnx")).run(None, {"gs": gs, "doppler": dop})
    b = ort.InferenceSession(str(dst)).run(None, {"gs": gs, "doppler": dop})
    assert np.abs(a[0] - b[0]).max() < 0.02 and np.abs(a[1] - b[1]).max() < 0.02


# ---------------------------------------------------------------- build details checked with fakes

def test_profile_covers_the_dynamic_batch_and_leaves_static_inputs_alone():
    from rating_edge.calibration.trt_build import _batch_range, _input_profile

    assert _batch_range({"batch": "dynamic"}, 8) == (1, 1, 8)
    assert _batch_range({}, 0) == (1, 1, 1)
    assert _batch_range({"batch": 4}, 8) == (4, 4, 4)
    # NHWC uint8 image with a dynamic batch: profile only on the batch dimension
    assert _input_profile("gs", (-1, 64, 64, 3), (1, 1, 8)) == ((1, 64, 64, 3), (1, 64, 64, 3), (8, 64, 64, 3))
    assert _input_profile("gs", (2, 64, 64, 3), (1, 1, 8)) is None  # static: no profile entry
    with pytest.raises(PackageError, match="dynamic non-batch"):
        _input_profile("gs", (-1, -1, 64, 3), (1, 1, 8))


def test_dla_needs_fp16_or_int8_and_an_existing_core():
    from rating_edge.calibration.trt_build import _check_dla

    _check_dla("fp32", None, 0)
    _check_dla("fp16", 1, 2)
    with pytest.raises(RatingEdgeError, match="FP16 and INT8 networks only"):
        _check_dla("fp32", 0, 2)
    with pytest.raises(RatingEdgeError, match="has 0 DLA core"):
        _check_dla("int8", 0, 0)


class _FakeBuilderConfig:
    """IBuilderConfig's timing-cache calls: set_timing_cache returns False for a foreign cache."""

    def __init__(self, accept_old=True):
        self.accept_old, self.attached = accept_old, None

    def create_timing_cache(self, blob):
        return ("cache", bytes(blob))

    def set_timing_cache(self, cache, ignore_mismatch):
        assert ignore_mismatch is False
        if cache[1] and not self.accept_old:
            return False
        self.attached = cache
        return True


def test_timing_cache_from_another_gpu_is_replaced_by_a_new_one():
    from rating_edge.calibration.trt_build import _attach_timing_cache

    said = []
    cfg = _FakeBuilderConfig(accept_old=True)
    assert _attach_timing_cache(cfg, b"old", said.append) == ("cache", b"old") and not said
    cfg = _FakeBuilderConfig(accept_old=False)
    assert _attach_timing_cache(cfg, b"old", said.append) == ("cache", b"")
    assert cfg.attached == ("cache", b"") and "another GPU" in said[0]
    assert _attach_timing_cache(_FakeBuilderConfig(), b"", said.append) == ("cache", b"")


# ---------------------------------------------------------------- cuda-python (err, value) tuples

class _Err(int):
    pass


class _FakeCudart:
    """The cuda-python runtime calls the backend uses: every call returns a tuple led by the error."""

    def __init__(self, with_flags=True):
        self.calls = []
        if not with_flags:
            self.cudaGraphInstantiateWithFlags = None

    def cudaGetErrorName(self, err):
        return (_Err(0), b"cudaErrorInvalidValue")

    def cudaStreamEndCapture(self, stream):
        return (_Err(0), "graph")

    def cudaGraphInstantiateWithFlags(self, graph, flags):
        self.calls.append(("with_flags", graph, flags))
        return (_Err(0), "exec")

    def cudaGraphInstantiate(self, graph, flags):
        self.calls.append(("plain", graph, flags))
        return (_Err(0), "exec")

    def cudaGraphLaunch(self, exe, stream):
        self.calls.append(("launch", exe, stream))
        return (_Err(0),)

    def cudaGraphDestroy(self, graph):
        self.calls.append(("destroy", graph))
        return (_Err(0),)


def _cuda_python(rt):
    from rating_edge.infer.cuda_buffers import CudaPython

    b = CudaPython.__new__(CudaPython)  # no cuda-python here: inject the fake module
    b.rt, b._native = rt, int
    return b


def test_cuda_python_unpacks_err_value_tuples_and_raises_named_errors():
    b = _cuda_python(_FakeCudart())
    assert b._call((_Err(0),)) == ()
    assert b._call((_Err(0), 42)) == 42
    assert b._call((_Err(0), 1, 2)) == (1, 2)
    with pytest.raises(RatingEdgeError, match="CUDA error cudaErrorInvalidValue"):
        b._call((_Err(1), None))
    assert b.stream_handle(7) == 7


def test_cuda_python_graph_instantiate_signature_per_cuda_version():
    rt = _FakeCudart(with_flags=True)
    b = _cuda_python(rt)
    assert b.end_capture("s") == ("graph", "exec")
    assert rt.calls == [("with_flags", "graph", 0)]  # (graph, flags) -> (err, exec) on CUDA 11.4+ and 12
    rt = _FakeCudart(with_flags=False)
    assert _cuda_python(rt).end_capture("s") == ("graph", "exec")
    assert rt.calls == [("plain", "graph", 0)]

    def failing(graph, flags):
        return (_Err(1), None)

    rt = _FakeCudart()
    rt.cudaGraphInstantiateWithFlags = failing
    with pytest.raises(RatingEdgeError):
        _cuda_python(rt).end_capture("s")
    assert ("destroy", "graph") in rt.calls  # the captured graph is not leaked


# ---------------------------------------------------------------- runtime with a fake TensorRT and CUDA

def test_gpu_and_dla_builds_of_the_same_graph_do_not_both_run():
    dla = {**_rec("fp16", ORIN), "file": "engines/m-dla0.engine", "dla_core": 0}
    gpu = {**_rec("fp16", ORIN), "dla_core": None}
    assert [e["file"] for e in select_engines(_pkg([dla, gpu]), ORIN)] == [gpu["file"]]
    assert [e["file"] for e in select_engines(_pkg([dla]), ORIN)] == [dla["file"]]


class _FakeTrt:
    __version__ = "10.3.0"

    class TensorIOMode:
        INPUT, OUTPUT = "in", "out"

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    @staticmethod
    def nptype(dtype):
        return dtype

    class Runtime:
        def __init__(self, logger):
            self.DLA_core = -1
            self.loaded = []

        def deserialize_cuda_engine(self, blob):
            self.loaded.append((bytes(blob), self.DLA_core))
            return _FakeEngine()


class _FakeEngine:
    io = [("gs", "in", np.uint8), ("prob", "out", np.float32)]
    num_io_tensors = 2

    def get_tensor_name(self, i):
        return self.io[i][0]

    def get_tensor_mode(self, n):
        return dict((a, b) for a, b, _ in self.io)[n]

    def get_tensor_dtype(self, n):
        return dict((a, c) for a, _, c in self.io)[n]

    def create_execution_context(self):
        return _FakeContext()


class _FakeContext:
    max_batch = 2

    def __init__(self):
        self.shape, self.fail_next = None, False

    def set_input_shape(self, name, shape):
        self.shape = shape
        return shape[0] <= self.max_batch  # outside the profile: TensorRT returns False

    def get_tensor_shape(self, name):
        return (self.shape[0], 1)

    def set_tensor_address(self, name, ptr):
        pass

    def execute_async_v3(self, stream_handle):
        ok, self.fail_next = not self.fail_next, False
        return ok


class _FakeCuda:
    """The CudaBackend interface, recording graph calls."""

    def __init__(self):
        self.graphs, self.events, self.capturing = 0, [], False

    def malloc(self, nbytes):
        return object()

    def ptr(self, dev):
        return id(dev)

    def free(self, dev):
        pass

    def host_empty(self, shape, dtype):
        return np.zeros(shape, dtype)

    def host_free(self, arr):
        pass

    def htod(self, dev, host, stream):
        pass

    def dtoh(self, host, dev, stream):
        host[...] = 0.5

    def stream_handle(self, s):
        return 1

    def sync(self, s):
        assert not self.capturing

    def begin_capture(self, s):
        self.capturing = True
        self.events.append("begin")

    def end_capture(self, s):
        self.capturing = False
        self.graphs += 1
        return f"g{self.graphs}"

    def launch_graph(self, g, s):
        self.events.append(("launch", g))

    def destroy_graph(self, g):
        self.events.append(("destroy", g))


def _session(tmp_path, graph=True):
    from rating_edge.infer.trt import _EngineSession

    (tmp_path / "m.engine").write_bytes(b"plan")
    return _EngineSession(_FakeTrt, _FakeTrt.Runtime(None), tmp_path / "m.engine", _FakeCuda(), "s", graph)


def test_batch_outside_the_engine_profile_is_refused_with_the_rebuild_option(tmp_path):
    sess = _session(tmp_path, graph=False)
    out = list(sess.run({"gs": np.zeros((2, 4, 4, 3), np.uint8)}).values())
    assert out[0].shape == (2, 1) and float(out[0][0, 0]) == 0.5
    with pytest.raises(RatingEdgeError, match=r"outside this engine's optimization profile.*--max-batch"):
        sess.run({"gs": np.zeros((3, 4, 4, 3), np.uint8)})


def test_failed_graph_capture_leaves_no_graph_to_replay(tmp_path):
    sess = _session(tmp_path)
    cuda = sess.cuda
    b1, b2 = np.zeros((1, 4, 4, 3), np.uint8), np.zeros((2, 4, 4, 3), np.uint8)
    sess.run({"gs": b1})
    assert cuda.events == ["begin", ("launch", "g1")]
    sess.run({"gs": b1})  # same shapes and buffers: replay
    assert cuda.events[-1] == ("launch", "g1") and cuda.events.count("begin") == 1
    # a bigger batch moves the buffers; its capture fails inside execute_async_v3
    orig = sess.cuda.begin_capture

    def begin_and_fail(s):
        orig(s)
        sess.context.fail_next = True

    sess.cuda.begin_capture = begin_and_fail
    with pytest.raises(RatingEdgeError, match="execute_async_v3 failed"):
        sess.run({"gs": b2})
    assert ("destroy", "g2") in cuda.events and sess.graph is None and not cuda.capturing
    sess.cuda.begin_capture = orig
    sess.run({"gs": b1})  # must capture anew, never replay the partial graph g2
    assert cuda.events[-2:] == ["begin", ("launch", "g3")]


def test_trt_runner_sets_the_dla_core_before_deserializing_and_cleans_up_on_failure(tmp_path, monkeypatch):
    from rating_edge.infer import cuda_buffers
    from rating_edge.infer.trt import TrtRunner
    from rating_edge.spec import EnsembleSpec

    class Backend(_FakeCuda):
        closed = destroyed = 0

        def device_info(self, device=0):
            return {"gpu": "Orin", "compute_capability": "8.7"}

        def stream(self):
            return "s"

        def destroy_stream(self, s):
            Backend.destroyed += 1

        def close(self):
            Backend.closed += 1

    runtimes = []

    class Runtime(_FakeTrt.Runtime):
        def __init__(self, logger):
            super().__init__(logger)
            runtimes.append(self)

    fake = type("tensorrt", (_FakeTrt,), {"Runtime": Runtime})
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    monkeypatch.setattr(cuda_buffers, "get_backend", lambda name=None, device=0: Backend())
    key = machine_key("Orin", "8.7", "10.3.0")
    rec = {**_rec("fp16", key), "file": "m-dla1.engine", "dla_core": 1}
    (tmp_path / "m-dla1.engine").write_bytes(b"dla plan")
    spec = EnsembleSpec(folds=1, width=8, input_size=64, hidden=32).to_dict()
    pkg = Package(tmp_path, {"engines": [rec], "spec": spec})
    r = TrtRunner(pkg).activate()
    assert runtimes[-1].loaded == [(b"dla plan", 1)]
    r.deactivate()
    assert Backend.closed == 1 and Backend.destroyed == 1
    (tmp_path / "m-dla1.engine").unlink()  # activation fails after the backend was opened
    with pytest.raises(OSError):
        TrtRunner(pkg).activate()
    assert Backend.closed == 2 and Backend.destroyed == 2
