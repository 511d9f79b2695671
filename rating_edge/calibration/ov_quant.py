"""The OpenVINO INT8 form of a graph: NNCF post-training quantization of the OpenVINO model, saved
as OpenVINO IR (`.xml` + `.bin`) in the package variant `int8-ov`.

Both INT8 routes are made and gated: this IR, and OpenVINO reading the TensorRT-style Q/DQ ONNX
(`int8-qdq`). Which is faster depends on the graph (measured, docs/openvino.md): NNCF's IR ran the
paper-size distilled student 1.1-1.8x faster than the Q/DQ ONNX, but on the fused stack, whose backbones
are grouped convolutions, NNCF's IR carries per-convolution ShapeOf/Split/Broadcast weight subgraphs
and ran 2-7x slower than the Q/DQ ONNX. `quantize` therefore times both at batch 1 and records the
faster gated one as the package's OpenVINO INT8 form.

The fallback keeps the layers the quantizer ranks as most sensitive in FP32; their names come from
the ONNX graph (`node_sensitivity`), and the OpenVINO ONNX frontend names a Conv's convolution
`<onnx name>/WithoutBiases` and its bias add `<onnx name>`, so both are ignored.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rating_edge.errors import CalibrationError

# Names the ONNX frontend gives the operations one ONNX node becomes.
_SUFFIXES = ("", "/WithoutBiases")
# Operation types kept FP32 (little compute, and rounding breaks them): the in-graph Grad-CAM weighting
# (MatMul), its spatial means (ReduceMean; the backbones' global average pool too, which costs
# nothing), and the heatmap normalisation's divisions, whose quantized inputs gave 0/0 = NaN on
# 12 of 80 held-out pairs of the trained tiny ensemble.
IGNORED_TYPES = ("MatMul", "Divide", "ReduceMean")


def nncf_available() -> bool:
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def ov_names(model, onnx_names) -> list[str]:
    have = {op.get_friendly_name() for op in model.get_ops()}
    return sorted({n + s for n in onnx_names for s in _SUFFIXES if n + s in have})


def quantize_nncf(src, dst, feeds: dict, exclude=(), batch: int = 1, subset: int | None = None,
                  bias_correction: bool = False) -> Path:
    """Quantize ONNX graph `src` with NNCF on its calibration `feeds` ({"gs": (N,S,S,3) uint8, ...});
    write IR `dst` (.xml, its .bin beside it). `exclude`: ONNX node names kept FP32.

    Bias correction is off by default: it runs a subgraph again per quantized layer (6 minutes for the
    380 convolutions of a one-fold tiny test stack on a loaded 2-core CPU), and the gate with its
    fallback is what decides whether the INT8 form is good enough, as for the ONNX Runtime forms."""
    try:
        import nncf
        import openvino as ov
    except ImportError:
        raise CalibrationError("OpenVINO INT8 needs openvino and nncf: pip install 'rating-edge[openvino]'") from None
    core = ov.Core()
    model = core.read_model(str(src))
    names = [p.get_any_name() for p in model.inputs]
    missing = [n for n in names if n not in feeds]
    if missing:
        raise CalibrationError(f"{src}: no calibration data for input(s) {', '.join(missing)}")
    n = len(feeds[names[0]])
    items = [{k: np.ascontiguousarray(feeds[k][i:i + batch]) for k in names} for i in range(0, n, batch)]
    from rating_edge.calibration.qonnx import non_residual_adds

    # the heads' bias adds and the heatmap's `max + eps` stay FP32 as in the U8S8 form: quantized, the eps
    # vanishes and an all-zero Grad-CAM becomes 0/0 = NaN (the gate's non-finite check caught it)
    unsafe = non_residual_adds(str(src))
    types = list(IGNORED_TYPES) + (["Add"] if unsafe is None else [])
    ignored = nncf.IgnoredScope(names=ov_names(model, list(exclude) + list(unsafe or [])), types=types, validate=False)
    import logging

    logging.getLogger("nncf").setLevel(logging.ERROR)
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    q = nncf.quantize(model, nncf.Dataset(items), preset=nncf.QuantizationPreset.PERFORMANCE,
                      subset_size=subset or len(items), ignored_scope=ignored,
                      advanced_parameters=AdvancedQuantizationParameters(disable_bias_correction=not bias_correction))
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(q, str(dst), compress_to_fp16=False)
    return dst
