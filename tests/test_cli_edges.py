"""Issue 13 probes on the non-run commands: bad option values are one-line errors (exit 2) before any
work; a NaN package or one with other output names fails `verify`/`evaluate` without a traceback."""
import json

import numpy as np
import pytest
from test_runtime_fixtures import make_onnx_package

from rating_edge.cli import main


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) <= 2, err  # rich may wrap a long path once
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.parametrize("argv,needle", [
    (["verify", "{p}", "--reference", "{p}", "--phantom", "0"], "--phantom must be >= 1, got 0"),
    (["verify", "{p}", "--reference", "{p}", "--min-grade-agreement", "nan"], "--min-grade-agreement must be a finite"),
    (["verify", "{p}", "--reference", "{p}", "--min-heat-corr", "2"], "--min-heat-corr must be <= 1"),
    (["verify", "{p}", "--reference", "{p}", "--json", "{d}"], "is a folder"),
    (["calib", "collect", "{d}/c", "--phantom", "4", "--input-size", "0"], "--input-size must be >= 32, got 0"),
    (["calib", "collect", "{d}/c", "--phantom", "-3"], "--phantom must be >= 1"),
    (["quantize", "{p}", "{p}", "{d}/q", "--gate", "nan"], "--gate must be a finite number"),
    (["quantize", "{p}", "{p}", "{d}/q", "--holdout", "1"], "--holdout must be < 1"),
    (["build", "{p}", "--max-batch", "0"], "--max-batch must be >= 1"),
    (["evaluate", "{p}", "{d}", "--batch", "0"], "--batch must be >= 1"),
    (["phantom", "video", "{d}/v.mp4", "--seconds", "nan"], "must be finite numbers"),
    (["distill", "{p}", "{d}/s", "--lr", "-1"], "--lr must be > 0"),
    (["plan", "{p}", "--device", "orin-nano", "--compute-eff", "2"], "--compute-eff must be <= 1"),
])
def test_bad_values_are_one_line_errors(tmp_path, capsys, monkeypatch, argv, needle):
    monkeypatch.setenv("COLUMNS", "300")
    p = make_onnx_package(tmp_path / "pkg")
    assert main([a.format(p=p, d=tmp_path) for a in argv]) == 2
    _one_line_error(capsys, needle)


def _rewrite_graph(pkg, fn):
    import onnx

    from rating_edge.package import write_model_json

    m = onnx.load(str(pkg / "model.onnx"))
    fn(m)
    onnx.save(m, str(pkg / "model.onnx"))
    meta = json.loads((pkg / "model.json").read_text())
    write_model_json(pkg, meta, ["model.onnx"])


def _nan_weights(m):
    import onnx

    for init in m.graph.initializer:
        if init.name == "w":
            init.CopyFrom(onnx.numpy_helper.from_array(np.full((1, 5, 3, 2), np.nan, np.float32), "w"))


def _rename_outputs(m):
    for node in m.graph.node:
        node.output[:] = [o.upper() if o in ("sh_prob", "vs_prob", "heat_gs", "heat_doppler") else o
                          for o in node.output]
    for o in m.graph.output:
        o.name = o.name.upper()


@pytest.fixture
def reference(monkeypatch, tmp_path):
    """`verify --reference` against a clean package's outputs (the eager reference would take minutes)."""
    from rating_edge.export import verify as v
    from rating_edge.package import load_package

    clean = make_onnx_package(tmp_path / "clean")
    monkeypatch.setattr(v, "reference_outputs", lambda ckpt, gs, dop, batch=8: v.run_package(load_package(clean), gs, dop))
    return clean


def test_verify_identical_package_passes(tmp_path, capsys, reference, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["verify", str(reference), "--reference", str(tmp_path), "--phantom", "4"]) == 0
    assert "PASS all gates" in capsys.readouterr().err


@pytest.mark.parametrize("edit,needle,code", [(_nan_weights, "NaN or infinite values on 4 pairs", 1),
                                              # the runner itself refuses a graph without the package outputs
                                              (_rename_outputs, "sh_prob, vs_prob, heat_gs, heat_doppler are missing", 2)])
def test_verify_fails_nan_and_renamed_packages_without_traceback(tmp_path, capsys, reference, monkeypatch, edit,
                                                                 needle, code):
    monkeypatch.setenv("COLUMNS", "300")
    pytest.importorskip("onnx")
    p = make_onnx_package(tmp_path / "bad")
    _rewrite_graph(p, edit)
    out_json = tmp_path / "rep.json"
    assert main(["verify", str(p), "--reference", str(tmp_path), "--phantom", "4", "--json", str(out_json)]) == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and "PASS" not in err and needle in err
    if code == 1:  # a gate failure still writes its report
        assert json.loads(out_json.read_text())["passed"] is False


def test_evaluate_nan_package_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    pytest.importorskip("onnx")
    from rating_edge.phantom.dataset import write_dataset

    p = make_onnx_package(tmp_path / "bad")
    _rewrite_graph(p, _nan_weights)
    data = write_dataset(tmp_path / "data", 4, seed=0)
    assert main(["evaluate", str(p), str(data), "--bootstrap", "0"]) == 2
    _one_line_error(capsys, "NaN or infinite probabilities on 4 of 4 pairs")


def test_verify_rejects_an_unknown_backend_precision_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    pytest.importorskip("onnx")
    p = make_onnx_package(tmp_path / "pkg")
    assert main(["verify", str(p), "--reference", str(tmp_path), "--backend", "openvino:fp8"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "unknown precision 'fp8'" in err
