"""OpenVINO runner (issue 15): FP32 exact against ONNX Runtime, explicit precision, machine-keyed cache,
`none` assembly, bench rows, and the OpenVINO INT8 variant + BF16 gate made by `quantize`."""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np

import pytest

pytest.importorskip("openvino", reason="OpenVINO not installed (pip install 'rating-edge[openvino]')")
pytest.importorskip("torch", reason="the test packages are exported from a torch ensemble")

from rating_edge.infer import make_runner  # noqa: E402

from rating_edge.infer.openvino import cache_dir, machine_key  # noqa: E402
from rating_edge.package import load_package  # noqa: E402
from rating_edge.spec import EnsembleSpec  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from test_quantize_helpers import make_fused_package, make_none_package, synthetic_pairs  # noqa: E402

SPEC = EnsembleSpec(folds=1, width=8, input_size=64, hidden=32)


@pytest.fixture(scope="module")
def pkgs(tmp_path_factory):
    d = tmp_path_factory.mktemp("ov")
    return d, make_fused_package(d / "stack", SPEC), make_none_package(d / "none", SPEC)


@pytest.fixture(scope="module")
def feed():
    gs, dop, _ = synthetic_pairs(4, SPEC.input_size, seed=3)
    return {"gs": gs, "doppler": dop}


def _run(pkg, backend, feed, **kw):
    with make_runner(pkg, backend, **kw) as r:
        return r.infer(feed), getattr(r, "info", {})


@pytest.mark.parametrize("which", ["stack", "none"])
def test_fp32_matches_onnxruntime_and_records_precision(pkgs, feed, tmp_path, which):
    d, stack, none = pkgs
    pkg = stack if which == "stack" else none
    ref, _ = _run(pkg, "ort", feed)
    out, info = _run(pkg, "openvino:fp32", feed, cache=tmp_path / "cache")
    assert set(out) == {"sh_prob", "vs_prob", "heat_gs", "heat_doppler"}
    for k in ref:
        assert out[k].shape == ref[k].shape
        assert np.abs(out[k] - ref[k]).max() < 1e-4, k
    assert info["inference_precision_hint"] == "f32"  # set explicitly, read back from the compiled model
    # the compile cache sits in a folder keyed by CPU model + OpenVINO version, and is filled
    key = machine_key()
    assert Path(info["cache_dir"]) == cache_dir(key, tmp_path / "cache")
    assert key["openvino_version"] in Path(info["cache_dir"]).name
    assert any(Path(info["cache_dir"]).iterdir())


def test_bf16_hint_is_explicit(pkgs, feed):
    import openvino as ov

    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no BF16 in OpenVINO")
    _, stack, _ = pkgs
    ref, _ = _run(stack, "ort", feed)
    out, info = _run(stack, "openvino:bf16", feed, cache=False)
    assert info["inference_precision_hint"] == "bf16" and info["cache_dir"] is None
    diff = max(np.abs(out[k] - ref[k]).max() for k in ("sh_prob", "vs_prob"))
    assert 0 < diff < 0.2  # BF16 really ran (not silently FP32), and stayed close


def test_bench_rows_carry_backend_and_precision(pkgs, feed):
    from rating_edge.bench.commands import package_candidates
    from rating_edge.bench.core import run_bench

    _, stack, _ = pkgs
    one = {k: v[:1] for k, v in feed.items()}
    rep = run_bench(package_candidates(stack, one, backends=("ort", "openvino")), iters=2, warmup=0)
    rows = {(r["backend"], r["precision"]) for r in rep["results"]}
    assert ("ort", "fp32") in rows and ("openvino", "fp32") in rows
    assert all(r["name"] for r in rep["results"]) and rep["machine"].get("openvino")


@pytest.mark.slow
def test_quantize_makes_gated_openvino_int8_variant(pkgs, feed, tmp_path):
    """`quantize` writes int8-ov (IR, hashed), gates it with the other INT8 forms, gates BF16, and the
    CPU choice and verify's gates follow the record."""
    from rating_edge.calibration.calibset import write_calib
    from rating_edge.calibration.quantize import quantize_package
    from rating_edge.export.verify import default_gates
    from rating_edge.infer.openvino import choose_cpu_form, cpu_class
    from rating_edge.preprocess import PreprocessParams

    d, stack, _ = pkgs
    gs, dop, lab = synthetic_pairs(40, SPEC.input_size)
    write_calib(tmp_path / "calib", gs, dop, lab, PreprocessParams(input_size=SPEC.input_size), {"kind": "test"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = quantize_package(stack, tmp_path / "calib", tmp_path / "int8", method="minmax", gate=0.9,
                               openvino=True, log=lambda m: None)
    pkg = load_package(tmp_path / "int8")  # every file hash-checked, the IR's .bin included
    assert pkg.meta["variants"]["int8-ov"] == [{"file": "int8-ov/model.xml", "kind": "fused"}]
    assert {"int8-ov/model.xml", "int8-ov/model.bin"} <= set(pkg.meta["artifacts"])
    assert rec["reports"]["int8-ov"]["combined_agreement"] >= 0.9
    assert {"openvino-int8-qdq"} <= set(rec["reports"])
    assert "heat_gs_corr_min" in rec["reports"]["int8-ov"]
    out, info = _run(pkg, "openvino:int8", feed)
    # both INT8 routes were timed; the faster gated one is the package's OpenVINO INT8 form
    timing = rec["openvino"]["int8_timing_ms"]
    assert "int8-ov" in timing and set(timing) <= {"int8-ov", "int8-qdq"}  # NNCF's IR passed the gate above
    # which route is faster depends on the graph and the moment (timed, not assumed): the record names it
    assert rec["openvino"]["int8_variant"] == min(timing, key=timing.get)
    assert info["variant"] == rec["openvino"]["int8_variant"] and info["inference_precision_hint"] == "f32"
    gates, why = default_gates(pkg, None, "openvino:int8")
    assert gates.min_grade_agreement == 0.9 and "OpenVINO int8" in why
    # every CPU form was timed here; the choice runs the fastest (all timed forms passed their gates)
    t = rec["cpu_timing"]
    assert set(t["ms"]) >= {"ort-fp32", "ort-int8", "openvino-fp32", "openvino-int8"}
    assert t["on"]["cores"] == os.cpu_count() and t["on"]["cpu_class"] == cpu_class()
    from rating_edge.threads import inference_threads

    # each form timed at 1 thread and at every core the thread policy gives; its figure is the faster, with that thread count
    for form, by_n in t["ms_by_threads"].items():
        assert set(by_n) == {str(n) for n in {1, inference_threads()}}
        assert t["ms"][form] == min(by_n.values()) and by_n[str(t["threads"][form])] == t["ms"][form]
    c = choose_cpu_form(pkg)
    fastest = min(t["ms"], key=t["ms"].get)
    assert c["measured"] and "fastest measured on this CPU" in c["why"] and f"({fastest} " in c["why"]
    assert c["backend"] == ("ort" if fastest.startswith("ort") else "openvino:" + fastest.split("-")[1])
    # a tampered IR weight file is refused like any artifact
    (tmp_path / "int8" / "int8-ov" / "model.bin").write_bytes(b"0")
    from rating_edge.errors import PackageError

    with pytest.raises(PackageError, match="SHA-256"):
        load_package(tmp_path / "int8")
