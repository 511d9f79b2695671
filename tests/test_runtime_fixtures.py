"""Shared helpers for the runtime tests: a small real ONNX package and a Runner test double.

The package is a genuine fused graph in the package format (opened by load_package, run by OrtRunner):
its probabilities follow the mean brightness of the inputs, so grades vary with the images; it stands
in for an exported RATING package where exporting one would take minutes.
"""
import json

import numpy as np
import pytest

from rating_edge.infer import Runner
from rating_edge.package import Package, write_model_json
from rating_edge.preprocess import PreprocessParams
from rating_edge.spec import preset

SPEC = preset("tiny")


def make_onnx_package(folder, input_size: int = 64, heat: int = 2):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    folder.mkdir(parents=True, exist_ok=True)
    s = input_size
    nodes, inits = [], []

    def const(name, arr):
        inits.append(onnx.numpy_helper.from_array(np.asarray(arr), name))

    const("scale", np.array(1 / 255.0, np.float32))
    const("w", np.linspace(-3, 3, 30, dtype=np.float32).reshape(1, 5, 3, 2))
    const("b", np.linspace(1, -1, 30, dtype=np.float32).reshape(1, 5, 3, 2))
    const("axes", np.array([1, 2, 3], np.int64))
    const("hshape", np.array([0, heat, s // heat, heat, (s // heat) * 3], np.int64))
    for name in ("gs", "doppler"):
        nodes += [helper.make_node("Cast", [name], [f"{name}_f"], to=TensorProto.FLOAT),
                  helper.make_node("Mul", [f"{name}_f", "scale"], [f"{name}_n"]),
                  helper.make_node("ReduceMean", [f"{name}_n", "axes"], [f"{name}_m"], keepdims=1),  # (B,1,1,1)
                  helper.make_node("Mul", [f"{name}_m", "w"], [f"{name}_wx"]),
                  helper.make_node("Add", [f"{name}_wx", "b"], [f"{name}_z"]),
                  helper.make_node("Sigmoid", [f"{name}_z"], ["sh_prob" if name == "gs" else "vs_prob"]),
                  helper.make_node("Reshape", [f"{name}_n", "hshape"], [f"{name}_r"]),
                  helper.make_node("ReduceMean", [f"{name}_r", "hax"], [f"{name}_h"], keepdims=0),
                  helper.make_node("Clip", [f"{name}_h", "zero", "one"], [f"heat_{name}"])]
    const("hax", np.array([2, 4], np.int64))
    const("zero", np.array(0, np.float32))
    const("one", np.array(1, np.float32))
    inputs = [helper.make_tensor_value_info(n, TensorProto.UINT8, ["B", s, s, 3]) for n in ("gs", "doppler")]
    outputs = [helper.make_tensor_value_info("sh_prob", TensorProto.FLOAT, ["B", 5, 3, 2]),
               helper.make_tensor_value_info("vs_prob", TensorProto.FLOAT, ["B", 5, 3, 2]),
               helper.make_tensor_value_info("heat_gs", TensorProto.FLOAT, ["B", heat, heat]),
               helper.make_tensor_value_info("heat_doppler", TensorProto.FLOAT, ["B", heat, heat])]
    graph = helper.make_graph(nodes, "brightness", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    meta = {"spec": SPEC.to_dict(), "preprocess": PreprocessParams(input_size=s).to_dict(),
            "inputs": {"gs": {"dtype": "uint8", "layout": "NHWC"}, "doppler": {"dtype": "uint8", "layout": "NHWC"}},
            "fusion": {"strategy": "stack"}, "precision": "fp32", "batch": "dynamic",
            "graphs": [{"file": "model.onnx", "kind": "fused"}]}
    write_model_json(folder, meta, ["model.onnx"])
    return folder


class FakePackage(Package):
    @property
    def model_hash(self):
        return "fake-model"


class FakeRunner(Runner):
    """Runner test double: probabilities from image brightness; can be told to fail."""

    name = "fake"

    def __init__(self, fail_after: int | None = None):
        meta = {"spec": SPEC.to_dict(), "preprocess": PreprocessParams(input_size=SPEC.input_size).to_dict()}
        super().__init__(FakePackage(path=None, meta=meta))
        self.fail_after = fail_after
        self.calls = 0
        self.feeds = []

    def _activate(self):
        pass

    def _infer(self, gs, dop):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("engine exploded")
        self.feeds.append((gs.copy(), dop.copy()))
        b = gs.shape[0]
        m = gs.reshape(b, -1).mean(1)[:, None, None, None] / 255.0
        sh = 1 / (1 + np.exp(-(np.linspace(-3, 3, 30).reshape(1, 5, 3, 2) * m + 0.2)))
        vs = 1 / (1 + np.exp(-(np.linspace(-3, 3, 30).reshape(1, 5, 3, 2) * dop.reshape(b, -1).mean(1)[:, None, None, None] / 255.0)))
        heat = np.tile(np.linspace(0, 1, 4, dtype=np.float32), (b, 4, 1))
        return {"sh_prob": sh.astype(np.float32), "vs_prob": vs.astype(np.float32), "heat_gs": heat, "heat_doppler": heat}


def test_onnx_package_runs_through_ort(tmp_path):
    pytest.importorskip("onnxruntime")
    from rating_edge.infer import make_runner

    pkg = make_onnx_package(tmp_path / "pkg")
    r = make_runner(pkg).activate()
    x = np.full((2, 64, 64, 3), 128, np.uint8)
    out = r.infer({"gs": x, "doppler": x})
    assert out["sh_prob"].shape == (2, 5, 3, 2) and out["heat_gs"].shape == (2, 2, 2)
    assert np.all((out["sh_prob"] > 0) & (out["sh_prob"] < 1))
    assert json.loads((pkg / "model.json").read_text())["graphs"][0]["kind"] == "fused"
