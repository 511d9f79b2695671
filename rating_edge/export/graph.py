"""A small ONNX graph builder that streams large initializers to an external data file.

The fused graphs are emitted directly from folded numpy weights instead of tracing torch: the
paper-size graph carries ~4 GB of weights, over protobuf's 2 GB limit and more than this machine
should hold twice, so each initializer is written to disk as soon as it is made.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from rating_edge.errors import RatingEdgeError

MIN_OPSET = 13  # Gather/Reshape/Conv semantics used here; older runtimes are not a target
MAX_OPSET = 21  # highest opset checked against ONNX Runtime here; TensorRT 10.x parses up to 20-21
EXTERNAL_MIN_BYTES = 1024  # tiny constants stay inline even in an external-data graph


def check_opset(opset: int) -> int:
    opset = int(opset)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise RatingEdgeError(f"unsupported opset {opset}: the exporter supports opsets {MIN_OPSET} to {MAX_OPSET} "
                              "(17 is the default and what TensorRT 10 on JetPack 6 handles best)")
    return opset


class GraphBuilder:
    def __init__(self, opset: int = 17, data_path: Path | None = None):
        self.opset = check_opset(opset)
        self.nodes: list = []
        self.inits: list = []
        self.inputs: list = []
        self.outputs: list = []
        self._count = 0
        self.data_path = Path(data_path) if data_path is not None else None
        self._data = open(self.data_path, "wb") if self.data_path is not None else None
        self.weight_bytes = 0

    def fresh(self, base: str) -> str:
        self._count += 1
        return f"{base}__{self._count}"

    def const(self, base: str, arr) -> str:
        arr = np.ascontiguousarray(np.asarray(arr))
        name = self.fresh(base)
        t = TensorProto()
        t.name = name
        t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
        t.dims.extend(arr.shape)
        if self._data is not None and arr.nbytes >= EXTERNAL_MIN_BYTES:
            pad = (-self._data.tell()) % 64  # aligned offsets let runtimes map the data directly
            if pad:
                self._data.write(b"\0" * pad)
            offset = self._data.tell()
            self._data.write(arr.tobytes())
            t.data_location = TensorProto.EXTERNAL
            for key, value in (("location", self.data_path.name), ("offset", str(offset)), ("length", str(arr.nbytes))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
        else:
            t.raw_data = arr.tobytes()
        self.weight_bytes += arr.nbytes
        self.inits.append(t)
        return name

    def op(self, op_type: str, inputs: list, base: str | None = None, **attrs) -> str:
        out = self.fresh(base or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out

    def reduce(self, op_type: str, x: str, axes: list, keepdims: int) -> str:
        """ReduceMean/ReduceMax took `axes` as an attribute before opset 18 and as an input since."""
        if self.opset >= 18:
            return self.op(op_type, [x, self.const("axes", np.asarray(axes, np.int64))], keepdims=keepdims)
        return self.op(op_type, [x], axes=list(axes), keepdims=keepdims)

    def reshape(self, x: str, shape: list) -> str:
        return self.op("Reshape", [x, self.const("shape", np.asarray(shape, np.int64))])

    def add_input(self, name: str, elem, shape: list) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem, shape))
        return name

    def add_output(self, src: str, name: str, elem, shape: list) -> None:
        self.nodes.append(helper.make_node("Identity", [src], [name], name=f"out_{name}"))
        self.outputs.append(helper.make_tensor_value_info(name, elem, shape))

    def save(self, path: Path, graph_name: str, doc: str = "") -> Path:
        """Write the model (and close the data file); the caller runs the checker on the path."""
        if self._data is not None:
            self._data.close()
            self._data = None
        graph = helper.make_graph(self.nodes, graph_name, self.inputs, self.outputs, self.inits)
        opsets = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="rating-edge", doc_string=doc)
        # the lowest IR version that carries this opset: older ONNX Runtime / TensorRT builds refuse newer IR
        model.ir_version = helper.find_min_ir_version_for(opsets)
        path = Path(path)
        with open(path, "wb") as f:
            f.write(model.SerializeToString())
        return path

    def close(self) -> None:
        if self._data is not None:
            self._data.close()
            self._data = None


def check_graph(path: Path) -> None:
    """onnx.checker full check on the path (the form that handles external data)."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as e:  # noqa: BLE001 - checker raises ValidationError / InferenceError
        raise RatingEdgeError(f"{path}: exported graph fails the ONNX checker: {str(e).splitlines()[0][:300]}") from None
