"""INT8 quantization: both forms from one calibration, the gate, and its refusals."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from rating_edge.calibration.calibset import write_calib  # noqa: E402
from rating_edge.calibration.qonnx import non_residual_adds, shared_input_relus  # noqa: E402
from rating_edge.calibration.quantize import GateRefused, quantize_package  # noqa: E402
from rating_edge.errors import CalibrationError, PackageError  # noqa: E402
from rating_edge.package import load_package  # noqa: E402
from rating_edge.preprocess import PreprocessParams  # noqa: E402
from rating_edge.spec import EnsembleSpec  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_quantize_helpers import make_fused_package, synthetic_pairs  # noqa: E402

SPEC = EnsembleSpec(folds=1, width=8, input_size=64, hidden=32)
P = PreprocessParams(input_size=64)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("q")
    pkg = make_fused_package(d / "pkg", SPEC)
    gs, dop, lab = synthetic_pairs(48, 64)
    write_calib(d / "calib", gs, dop, lab, P, {"kind": "test"})
    # Poison that passes every content check: images 6x too dark (a wrong gain/normalisation upstream).
    write_calib(d / "dark", gs // 6, dop // 6, lab, P, {"kind": "test"})
    return d, pkg


def _q(setup, calib, name, **kw):
    d, pkg = setup
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_package(pkg, d / calib, d / name, method="minmax", log=lambda m: None, **kw)


def test_int8_package_passes_gate_and_carries_both_forms(setup):
    d, _ = setup
    rec = _q(setup, "calib", "int8", gate=0.9)
    pkg = load_package(d / "int8")  # hashes verified
    assert pkg.meta["precision"] == "int8"
    assert set(pkg.meta["variants"]) >= {"int8-qdq", "int8-u8s8"}
    for v, rep in rec["reports"].items():
        assert rep["combined_agreement"] >= 0.9
        assert len(rep["members"]) == len(SPEC.network_ids())  # per-member report, not only the mean
        assert {m["network"] for m in rep["members"]} == set(SPEC.network_ids())
        assert len(rep["models"]) == SPEC.folds
    import onnx

    qdq = onnx.load(str(d / "int8" / pkg.meta["variants"]["int8-qdq"][0]["file"]))
    ops = [n.op_type for n in qdq.graph.node]
    assert "QuantizeLinear" in ops and "QLinearConv" not in ops
    # symmetric: every activation/weight zero point is 0 and int8
    zps = {n.input[2] for n in qdq.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2}
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in qdq.graph.initializer}
    assert zps and all(inits[z].dtype == np.int8 and not inits[z].any() for z in zps if z in inits)
    u8 = onnx.load(str(d / "int8" / pkg.meta["variants"]["int8-u8s8"][0]["file"]))
    assert "QLinearConv" in [n.op_type for n in u8.graph.node]
    # ReLUs that follow a quantized conv/add are folded into its U8 range: no DequantizeLinear -> Relu ->
    # QuantizeLinear round trip is left in the backbones (it cost a fifth of the CPU INT8 time)
    made_by = {o: n for n in u8.graph.node for o in n.output}
    dq_relus = [made_by[made_by[n.input[0]].input[0]].op_type for n in u8.graph.node
                if n.op_type == "Relu" and made_by.get(n.input[0]) is not None
                and made_by[n.input[0]].op_type == "DequantizeLinear"]
    assert not {"QLinearConv", "QLinearAdd"} & set(dq_relus)
    # ... except where the Relu's input has other consumers (the Grad-CAM mask of SH's MLP): those
    # stay FP32, because folding them would leave the negatives in
    assert len(dq_relus) == len(shared_input_relus(load_package(setup[1]).file("model.onnx"))) > 0
    # Adds outside the residual connections (head bias before the sigmoid, the heatmap's max + eps) stay
    # FP32: in U8 the eps vanished and an all-zero Grad-CAM map became 0/0 = NaN
    kept = non_residual_adds(load_package(setup[1]).file("model.onnx"))
    ops_by_name = {n.name: n.op_type for n in u8.graph.node}
    assert kept and all(ops_by_name.get(k) == "Add" for k in kept)
    assert "QLinearAdd" in ops_by_name.values()  # the residual adds are still quantized
    assert all(rep["nonfinite_pairs"] == 0 for rep in rec["reports"].values())
    # the runtime picks the U8S8 form on ONNX Runtime
    from rating_edge.infer import choose_variant, make_runner

    assert choose_variant(pkg, "ort") == "int8-u8s8"
    gs, dop, _ = synthetic_pairs(2, 64, seed=5)
    with make_runner(pkg, "ort") as r:
        assert r.variant == "int8-u8s8"
        out = r.infer({"gs": gs, "doppler": dop})
    assert out["sh_prob"].shape == (2, 1, 3, 2)
    # one calibration: the cached ranges are in the package
    assert any(p.startswith("calibration/") for p in pkg.meta["artifacts"])


def test_strict_gate_refuses_and_writes_nothing(setup):
    d, _ = setup
    with pytest.raises(GateRefused, match=r"INT8 refused: (combined-score|member) agreement .* below the") as e:
        _q(setup, "calib", "strict", gate=1.0, member_gate=1.0, fallback=False, plots=d / "strict-plots")
    assert "Most sensitive layers" in str(e.value) and e.value.report["reports"]
    # the pictures are drawn for a refusal too: that is when they are needed
    from rating_edge.calibration.ov_quant import nncf_available

    forms = ("int8-qdq", "int8-u8s8") + (("int8-ov",) if nncf_available() else ())  # OpenVINO's when installed
    assert {p.name for p in (d / "strict-plots").glob("*.png")} == {
        f"{v}_{k}.png" for v in forms for k in ("scatter", "disagreement")}
    assert not (d / "strict").exists() and not (d / ".strict.partial").exists()


def test_poisoned_calibration_is_refused_by_the_gate(setup):
    d, _ = setup
    with pytest.raises(GateRefused, match="combined-score agreement .* below the gate 0.98") as e:
        _q(setup, "dark", "poisoned", verify_set=d / "calib", fallback=False)
    assert e.value.report["sensitivity"]
    assert not (d / "poisoned").exists()


def test_bad_inputs(setup, tmp_path):
    d, pkg = setup
    with pytest.raises(CalibrationError, match="gate"):
        _q(setup, "calib", "x", gate=1.5)
    with pytest.raises(CalibrationError, match="method"):
        quantize_package(pkg, d / "calib", tmp_path / "y", method="kl")
    gs, dop, lab = synthetic_pairs(8, 96)
    write_calib(tmp_path / "c96", gs, dop, lab, PreprocessParams(input_size=96), {})
    with pytest.raises(CalibrationError, match="other preprocessing"):
        quantize_package(pkg, tmp_path / "c96", tmp_path / "z")
    if (d / "int8").exists():
        with pytest.raises(PackageError, match="precision is int8"):
            quantize_package(d / "int8", d / "calib", tmp_path / "w")


def test_nan_outputs_are_refused_by_the_gate(setup, monkeypatch):
    """A variant whose heatmaps (or probabilities) hold NaN on some pair never passes, whatever the grades."""
    import rating_edge.calibration.quantize as Q

    real = Q._infer

    def infer(package, variant, cs, batch=16):
        out = real(package, variant, cs, batch)
        if variant == "int8-u8s8":
            out["heat_gs"][0] = np.nan
        return out

    monkeypatch.setattr(Q, "_infer", infer)
    d, _ = setup
    with pytest.raises(GateRefused, match="NaN or infinite outputs on 1 pairs"):
        _q(setup, "calib", "nan-int8", gate=0.5, fallback=False)
    assert not (d / "nan-int8").exists()
