"""FP32 ONNX -> FP16 ONNX on the host, for TensorRT 11's strongly typed networks.

TensorRT 11 dropped the FP16 builder flag: a strongly typed network runs each tensor in the type the
ONNX graph gives it, so FP16 has to be in the graph. Inputs stay uint8 and outputs stay FP32 so the
package interface does not change.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from rating_edge.errors import RatingEdgeError

# Reductions whose FP16 sums could overflow or lose the heatmap's small values stay FP32.
KEEP_FP32_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "Softmax", "Sigmoid", "Div"]


def convert_fp16(src, dst) -> Path:
    try:
        import onnx
        from onnx import TensorProto
        from onnxconverter_common import float16
    except ImportError as e:
        raise RatingEdgeError(f"FP16 conversion needs onnx and onnxconverter-common ({e}); "
                              "pip install onnxconverter-common") from None
    m = onnx.load(str(src))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns for every constant below FP16's range
        block = list(float16.DEFAULT_OP_BLOCK_LIST) + KEEP_FP32_OPS
        m16 = float16.convert_float_to_float16(m, keep_io_types=True, op_block_list=block)
    # The converter retypes tensors but not Cast's `to`: the in-graph uint8 -> float casts must now
    # produce FP16 wherever the converter declared their outputs FP16.
    declared = {v.name: v.type.tensor_type.elem_type for v in list(m16.graph.value_info) + list(m16.graph.output)}
    for n in m16.graph.node:
        if n.op_type == "Cast":
            for a in n.attribute:
                if a.name == "to" and a.i == TensorProto.FLOAT and declared.get(n.output[0]) == TensorProto.FLOAT16:
                    a.i = TensorProto.FLOAT16
    # keep_io_types can still leave an output FP16 when its producer is a blocked (FP32) op: the
    # converter then casts it down at the output. The package promises FP32 outputs, so cast back up.
    producer = {o: n for n in m16.graph.node for o in n.output}
    for out in m16.graph.output:
        tt = out.type.tensor_type
        if tt.elem_type != TensorProto.FLOAT16:
            continue
        node = producer.get(out.name)
        if node is not None and node.op_type == "Cast":
            for a in node.attribute:
                if a.name == "to":
                    a.i = TensorProto.FLOAT
        else:
            half = out.name + "_fp16"
            for n in m16.graph.node:
                n.output[:] = [half if o == out.name else o for o in n.output]
                if n is not node:
                    n.input[:] = [half if i == out.name else i for i in n.input]
            m16.graph.node.append(onnx.helper.make_node("Cast", [half], [out.name], to=TensorProto.FLOAT,
                                                        name=out.name + "_to_fp32"))
        tt.elem_type = TensorProto.FLOAT
    # The converter's intermediate type annotations can disagree with what it emitted (e.g. Identity
    # of a converted constant); they are optional, so drop them and let the consumer infer types.
    del m16.graph.value_info[:]
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    big = m16.ByteSize() > (1 << 31) - (1 << 26)
    onnx.save(m16, str(dst), save_as_external_data=big, location=dst.name + ".data" if big else None)
    return dst
