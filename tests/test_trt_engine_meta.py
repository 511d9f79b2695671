"""TensorRT logic that needs no GPU: version paths, engine records, refusal of foreign engines."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from rating_edge.calibration.trt_build import build_plan, engine_name
from rating_edge.errors import PackageError, RatingEdgeError
from rating_edge.package import Package
from rating_edge.runtime.trt_runner import engine_mismatch, machine_key, select_engines, trt_major

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
    from rating_edge.runtime.engines import make_runner
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
