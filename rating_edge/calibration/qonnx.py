"""Turn one FP32 ONNX graph into its two INT8 forms from one calibration.

- "int8-qdq": the TensorRT explicit-quantization form (symmetric S8 activations and weights,
  per-channel conv weights, one dedicated Q/DQ pair per consumer, float bias). NVIDIA ModelOpt's
  ONNX quantizer when it is importable (it follows TensorRT's fusion rules), ONNX Runtime otherwise.
- "int8-u8s8": QOperator with U8 activations and S8 weights, the form ONNX Runtime's x86 kernels
  run fastest (docs/design/precision.md: 5.6 ms vs 19 ms FP32 for one ResNet-18; S8S8 Q/DQ was barely faster
  than FP32).

Both read the activation ranges from one calibration cache (ONNX Runtime's JSON tensor ranges), so
the two forms and every fallback retry see the same scales: the cache is computed once per graph, by
the U8S8 form, whose operator list is the larger one (see `quantize.FORMS` order).
"""
from __future__ import annotations

import inspect
import logging
from pathlib import Path

import numpy as np

from rating_edge.errors import CalibrationError

# Convs hold ~all of ResNet-18's compute; Gemm covers the heads. MatMul stays FP32: in these graphs it
# is the Grad-CAM weighting and batched heads (tiny compute, and per-channel QLinearMatMul is
# unsupported by ONNX Runtime's CPU kernels).
QUANT_OPS = ["Conv", "Gemm"]
# The CPU form also quantizes the residual Adds, max pools and the global average pool, so ONNX
# Runtime stays in U8 between convolutions (QLinearAdd etc.) instead of dequantizing around every
# block. Relu must be listed too: ONNX Runtime then folds it into the producer's U8 range (zero point 0
# clips the negatives) instead of leaving a DequantizeLinear -> Relu -> QuantizeLinear after every
# conv and residual add, which cost 21% of the paper stack's INT8 time here (82 -> 60 ms per pair).
CPU_QUANT_OPS = QUANT_OPS + ["Add", "MaxPool", "GlobalAveragePool", "Relu"]
METHODS = ("entropy", "minmax", "percentile")


def graph_inputs(onnx_path) -> list[str]:
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    return [i.name for i in m.graph.input if i.name not in inits]


class ArrayReader:
    """ONNX Runtime CalibrationDataReader over in-memory uint8 pairs, fed in small batches."""

    def __init__(self, feeds: dict, batch: int = 8):
        self.feeds = feeds
        self.n = len(next(iter(feeds.values())))
        # Equal batches: ORT's histogram (entropy/percentile) collector stacks per-batch outputs and
        # fails on a smaller last batch, so use the largest batch size <= `batch` that divides n.
        self.batch = max(d for d in range(1, max(1, batch) + 1) if self.n % d == 0)
        self.start, self.end = 0, self.n
        self.pos = 0

    def get_next(self):
        if self.pos >= self.end:
            return None
        s = self.pos
        self.pos = min(self.end, s + self.batch)
        return {k: v[s:self.pos] for k, v in self.feeds.items()}

    def __len__(self):
        return self.n

    def set_range(self, start_index: int, end_index: int):
        self.start, self.end, self.pos = start_index, end_index, start_index

    def rewind(self):
        self.pos = self.start


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    try:
        return {"entropy": CalibrationMethod.Entropy, "minmax": CalibrationMethod.MinMax,
                "percentile": CalibrationMethod.Percentile}[method]
    except KeyError:
        raise CalibrationError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}") from None


def _external(src: Path) -> bool:
    """Large graphs (paper preset) keep weights as ONNX external data (protobuf caps at 2 GB)."""
    return any(p.suffix != ".onnx" for p in src.parent.glob(src.stem + "*")) or src.stat().st_size > (1 << 30)


def _graph(model):
    """An ONNX graph from a path, a loaded ModelProto or a GraphProto (weights not needed)."""
    import onnx

    if isinstance(model, onnx.GraphProto):
        return model
    if isinstance(model, onnx.ModelProto):
        return model.graph
    return onnx.load(str(model), load_external_data=False).graph


def shared_input_relus(model) -> list[str] | None:
    """Relus whose input also feeds other nodes, which must stay FP32 in the U8S8 form.

    ONNX Runtime drops a quantized Relu by reusing its producer's U8 tensor, but only narrows that
    tensor's range to [0, max] when the Relu is its sole consumer; otherwise the "Relu" output keeps the
    negatives. Grad-CAM graphs have such Relus (an MLP hidden layer that also feeds the ReLU-gradient
    mask), and folding them moved SH probabilities by up to 0.38 in tests. None: some Relu has no name,
    so none can be excluded by name, and Relu must not be quantized at all.
    """
    g = _graph(model)
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    relus = [n for n in g.node if n.op_type == "Relu"]
    if any(not n.name for n in relus):
        return None
    return [n.name for n in relus if uses.get(n.input[0], 0) > 1]


# Producers of backbone activations: an Add of two of these is a ResNet residual add
_BACKBONE_OPS = {"Conv", "Relu", "MaxPool", "Add", "BatchNormalization"}


def non_residual_adds(model) -> list[str] | None:
    """Adds outside the backbones' residual connections, which must stay FP32 in the U8S8 form.

    Those are a head's bias add before its sigmoid and the heatmap normalisation's `max + eps`: in U8
    the eps vanishes, and a Grad-CAM map that is zero everywhere became 0/0 = NaN (54 of 200 phantom
    test images of the trained tiny ensemble). None: some Add has no name to exclude it by.
    """
    g = _graph(model)
    made_by = {o: n.op_type for n in g.node for o in n.output}
    adds = [n for n in g.node if n.op_type == "Add"]
    if any(not n.name for n in adds):
        return None
    return [n.name for n in adds if not all(made_by.get(i) in _BACKBONE_OPS for i in n.input)]


def quantize_ort(src: Path, dst: Path, form: str, feeds: dict, method: str, cache: Path,
                 exclude: list[str] | None = None, batch: int = 8) -> Path:
    """One form ("qdq" or "u8s8") of `src` with ONNX Runtime, ranges from (or into) `cache`."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    ops, exclude = (QUANT_OPS, list(exclude or []))
    if form == "u8s8":
        ops = list(CPU_QUANT_OPS)
        graph = _graph(src)  # read once: an inline paper-size graph is 700 MB
        for op, unsafe in (("Relu", shared_input_relus(graph)), ("Add", non_residual_adds(graph))):
            if unsafe is None:  # cannot be excluded one by one: leave the operator type FP32
                ops.remove(op)
            else:
                exclude += unsafe
    big = _external(src)
    common = dict(op_types_to_quantize=ops, per_channel=True, reduce_range=False,
                  nodes_to_exclude=exclude, calibrate_method=_ort_method(method),
                  use_external_data_format=big, calibration_cache_path=str(cache))
    # Ranges are merged batch by batch (ONNX Runtime's strided calibration) instead of keeping every
    # intermediate tensor of the whole set: the unshared paper stack (90 backbones) otherwise needs
    # over 24 GB for 72 pairs and is killed. Graphs of over 1 GB calibrate one pair at a time.
    if big:
        batch = 1
    if form == "qdq":
        kw = dict(quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                  extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "DedicatedQDQPair": True,
                                 "QuantizeBias": False,
                                 # the bias stays float, so ORT's int32-bias weight-scale fix-up must not run
                                 "QDQDisableWeightAdjustForInt32Bias": True})
    elif form == "u8s8":
        kw = dict(quant_format=QuantFormat.QOperator, activation_type=QuantType.QUInt8,
                  weight_type=QuantType.QInt8, extra_options={"WeightSymmetric": True})
    else:
        raise CalibrationError(f"unknown INT8 form {form!r}")
    dst.parent.mkdir(parents=True, exist_ok=True)
    reader = ArrayReader(feeds, batch)
    kw["extra_options"] = {**kw["extra_options"], "CalibStridedMinMax": reader.batch}
    prev = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # ORT's quantizer logs every skipped node at INFO
    try:
        quantize_static(str(src), str(dst), reader, **common, **kw)
    except CalibrationError:
        raise
    except Exception as e:  # noqa: BLE001 - ORT raises plain Exceptions for calibration failures
        raise CalibrationError(f"{src.name}: ONNX Runtime quantization failed ({str(e).splitlines()[0][:300]})") from None
    finally:
        logging.getLogger().setLevel(prev)
    return dst


def modelopt_available() -> bool:
    try:
        import modelopt.onnx.quantization  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken ModelOpt install must not break the ORT path
        return False
    return True


def quantize_modelopt(src: Path, dst: Path, feeds: dict, method: str, exclude: list[str] | None = None) -> Path:
    """The TensorRT form through NVIDIA ModelOpt (entropy or max calibration, TensorRT Q/DQ placement)."""
    from modelopt.onnx.quantization import quantize

    mo_method = {"entropy": "entropy", "minmax": "max"}.get(method)
    if mo_method is None:
        raise CalibrationError(f"ModelOpt supports entropy and minmax calibration, not {method!r}; "
                               "pass --method entropy|minmax or uninstall nvidia-modelopt to use ONNX Runtime")
    kw = dict(quantize_mode="int8", calibration_data={k: np.ascontiguousarray(v) for k, v in feeds.items()},
              calibration_method=mo_method, nodes_to_exclude=list(exclude or []) or None,
              op_types_to_quantize=QUANT_OPS, use_external_data_format=_external(src), output_path=str(dst),
              calibration_eps=["cpu"])
    params = inspect.signature(quantize).parameters
    if "high_precision_dtype" in params:
        kw["high_precision_dtype"] = "fp32"  # keep the non-quantized layers FP32; TensorRT picks precisions
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantize(str(src), **{k: v for k, v in kw.items() if k in params or "kwargs" in params})
    return dst
