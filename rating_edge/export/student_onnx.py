"""The student as ONE fused ONNX graph with the package I/O, so every runner treats it like any package.

Inputs `gs`, `doppler`: uint8 RGB NHWC (B, S, S, 3); outputs `sh_prob`, `vs_prob` (B, folds, 3, seeds),
`heat_gs`, `heat_doppler` (B, h, w). The cast, /255 and ImageNet normalisation are in the graph, and so
is the forward-only Grad-CAM (Student._gradcam), so no engine needs autograd.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from rating_edge.errors import RatingEdgeError
from rating_edge.package import OUTPUTS

OPSET = 17


def export_student_onnx(student, path, batch: int = 1) -> Path:
    """Write `student` (eval mode is forced) to `path` with a dynamic batch axis; check the graph fully."""
    import onnx

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    student = student.eval()
    s = student.cfg.spec.input_size
    dummy = (torch.zeros(batch, s, s, 3, dtype=torch.uint8), torch.zeros(batch, s, s, 3, dtype=torch.uint8))
    axes = {"gs": {0: "batch"}, "doppler": {0: "batch"}}
    axes.update({o: {0: "batch"} for o in OUTPUTS})
    from rating_edge.publish import publish

    with publish(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice is not the user's business
            torch.onnx.export(student, dummy, str(tmp), input_names=["gs", "doppler"], output_names=list(OUTPUTS),
                              dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)
        model = onnx.load(str(tmp))
        try:
            onnx.checker.check_model(model, full_check=True)
        except Exception as e:  # noqa: BLE001 - onnx raises several checker error types
            raise RatingEdgeError(f"the exported student graph fails the ONNX checker: {e}") from None
    return path
