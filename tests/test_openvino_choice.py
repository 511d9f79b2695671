"""Which CPU form runs where (issue 15): CPU classes, gated forms, backend strings. No OpenVINO needed."""
from __future__ import annotations

import sys

import pytest

from rating_edge.errors import RatingEdgeError
from rating_edge.infer.errors import EngineUnavailable
from rating_edge.infer.openvino import (
    OpenVinoRunner,
    choose_cpu_form,
    cpu_class,
    gated_forms,
    openvino_form,
    parse_backend,
)
from rating_edge.package import Package
from rating_edge.spec import EnsembleSpec


def _report(agree: float, pairs: int = 40) -> dict:
    return {"combined_agreement": agree, "pairs": pairs}


def _pkg(tmp_path, int8: bool = True, ov_agree: float | None = 0.99, bf16_agree: float | None = 0.995) -> Package:
    meta = {"spec": EnsembleSpec(folds=1, width=8, input_size=64, hidden=32).to_dict(),
            "precision": "int8" if int8 else "fp32", "graphs": [{"file": "model.onnx", "kind": "fused"}],
            "variants": {}}
    if int8:
        meta["variants"] = {"int8-u8s8": [{"file": "int8-u8s8/model.onnx"}], "int8-qdq": [{"file": "int8-qdq/model.onnx"}]}
        reports = {"int8-u8s8": _report(0.99), "int8-qdq": _report(0.99)}
        if ov_agree is not None:
            meta["variants"]["int8-ov"] = [{"file": "int8-ov/model.xml"}]
            reports["int8-ov"] = _report(ov_agree)
        if bf16_agree is not None:
            reports["openvino-bf16"] = _report(bf16_agree)
        meta["quantization"] = {"gate": 0.98, "reports": reports, "openvino": {"int8_variant": "int8-ov"}}
    return Package(tmp_path, meta)


@pytest.mark.parametrize("flags,machine,want", [
    ({"avx2", "avx512_vnni", "amx_int8", "amx_bf16"}, "x86_64", "amx"),
    ({"avx2", "avx512_vnni"}, "x86_64", "vnni"),
    ({"avx2", "avx_vnni"}, "x86_64", "vnni"),
    ({"avx2"}, "x86_64", "avx2"),
    ({"sse4_2"}, "x86_64", "other"),
    ({"asimd", "asimddp"}, "aarch64", "arm"),
])
def test_cpu_class(flags, machine, want):
    assert cpu_class(flags, machine) == want


def test_fastest_gated_form_per_cpu(tmp_path):
    pkg = _pkg(tmp_path)
    assert set(gated_forms(pkg)) == {"ort-int8", "openvino-int8", "openvino-bf16"}
    amx = choose_cpu_form(pkg, "amx", have_openvino=True)
    assert (amx["backend"], amx["variant"]) == ("openvino:int8", "int8-ov")
    assert "amx CPU" in amx["why"] and "0.990 on 40 held-out pairs" in amx["why"]
    arm = choose_cpu_form(pkg, "arm", have_openvino=True)
    assert (arm["backend"], arm["variant"]) == ("ort", "int8-u8s8")
    # without OpenVINO the ONNX Runtime U8S8 form runs, and the reason says what was skipped
    no_ov = choose_cpu_form(pkg, "amx", have_openvino=False)
    assert (no_ov["backend"], no_ov["variant"]) == ("ort", "int8-u8s8")
    assert "OpenVINO not installed" in no_ov["why"]


def test_forms_below_the_gate_are_never_chosen(tmp_path):
    pkg = _pkg(tmp_path, ov_agree=0.95, bf16_agree=0.97)
    assert set(gated_forms(pkg)) == {"ort-int8"}
    c = choose_cpu_form(pkg, "amx", have_openvino=True)
    assert (c["backend"], c["variant"]) == ("ort", "int8-u8s8")
    assert "openvino-int8 (no gated form in the package)" in c["why"]
    fp32 = _pkg(tmp_path, int8=False)
    c = choose_cpu_form(fp32, "amx", have_openvino=True)
    assert (c["backend"], c["precision"], c["variant"]) == ("openvino:fp32", "fp32", "default")
    assert "no reduced-precision form passed its gate" in c["why"]


def test_bf16_is_chosen_on_amx_when_no_openvino_int8(tmp_path):
    pkg = _pkg(tmp_path, ov_agree=None)
    assert choose_cpu_form(pkg, "amx", have_openvino=True)["backend"] == "openvino:bf16"
    # without AMX BF16 is emulated (slower than FP32): the U8S8 form wins
    assert choose_cpu_form(pkg, "vnni", have_openvino=True)["backend"] == "ort"


def test_openvino_form_resolution(tmp_path):
    pkg = _pkg(tmp_path)
    assert openvino_form(pkg, "int8") == ("int8", "int8-ov")
    assert openvino_form(pkg, "bf16") == ("bf16", None)
    assert openvino_form(pkg, None, "default") == ("fp32", None)
    assert openvino_form(pkg, None, "int8-qdq") == ("int8", "int8-qdq")


def test_parse_backend():
    assert parse_backend("openvino:bf16") == ("openvino", "bf16")
    assert parse_backend("ort") == ("ort", None)
    with pytest.raises(RatingEdgeError, match="only openvino takes a precision"):
        parse_backend("ort:int8")
    with pytest.raises(RatingEdgeError, match="unknown precision"):
        parse_backend("openvino:fp8")


def test_missing_openvino_is_engine_unavailable(tmp_path, monkeypatch):
    """Without the library the runtime fails open (EngineUnavailable), with the install command."""
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    r = OpenVinoRunner(_pkg(tmp_path, int8=False), "fp32")
    with pytest.raises(EngineUnavailable, match=r"rating-edge\[openvino\]"):
        r.activate()


def test_int8_without_variant_is_refused(tmp_path):
    with pytest.raises(RatingEdgeError, match="rating-edge quantize"):
        OpenVinoRunner(_pkg(tmp_path, int8=False), "int8")


def test_openvino_path_does_not_import_torch():
    """The runtime never imports torch; neither does the OpenVINO runner nor OpenVINO itself."""
    import subprocess

    code = ("import sys\nimport rating_edge.infer.openvino\ntry:\n    import openvino\nexcept ImportError:\n    pass\n"
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\nassert not bad, bad[:5]\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_openvino_int8_may_be_the_qdq_graph(tmp_path):
    """When OpenVINO ran the Q/DQ ONNX faster, that route is the OpenVINO INT8 form, gated on its own report."""
    pkg = _pkg(tmp_path)
    q = pkg.meta["quantization"]
    q["openvino"] = {"int8_variant": "int8-qdq", "int8_report": "openvino-int8-qdq"}
    q["reports"]["openvino-int8-qdq"] = _report(0.985)
    assert gated_forms(pkg)["openvino-int8"]["variant"] == "int8-qdq"
    assert openvino_form(pkg, "int8") == ("int8", "int8-qdq")
    q["reports"]["openvino-int8-qdq"] = _report(0.9)  # its own report below the gate: not a candidate
    assert "openvino-int8" not in gated_forms(pkg)


def test_verify_gates_follow_the_precision(tmp_path):
    from rating_edge.export.verify import default_gates

    pkg = _pkg(tmp_path)
    exact, _ = default_gates(pkg, None, "openvino:fp32")
    assert exact.max_prob_diff == 1e-4 and exact.min_grade_agreement == 1.0
    for backend in ("openvino:bf16", "openvino:int8"):
        g, why = default_gates(pkg, None, backend)
        assert g.min_grade_agreement == 0.98 and g.max_prob_diff == 1.0, backend
        assert "OpenVINO" in why


def _timed(pkg: Package, ms: dict, on: dict | None = None, threads: dict | None = None) -> Package:
    from rating_edge.infer.cpu_forms import cpu_key

    q = dict(pkg.meta["quantization"])
    q["cpu_timing"] = {"on": on or cpu_key(), "batch": 1, "iters": 7, "ms": ms, "threads": threads or {}}
    return Package(pkg.path, {**pkg.meta, "quantization": q})


def test_measured_timings_on_this_cpu_decide(tmp_path):
    """Timings made on this CPU model (quantize times every form) beat the expected order: the fastest
    gated form runs, whatever the CPU class would suggest, and the reason gives the timings."""
    ms = {"ort-fp32": 30.0, "ort-int8": 12.0, "openvino-fp32": 25.0, "openvino-bf16": 8.0, "openvino-int8": 10.0}
    c = choose_cpu_form(_timed(_pkg(tmp_path), ms), "amx", have_openvino=True)
    assert (c["backend"], c["precision"], c["measured"]) == ("openvino:bf16", "bf16", True)
    assert "fastest measured on this CPU (openvino-bf16 8.0 ms per pair; openvino-int8 10.0" in c["why"]
    # the same timings with BF16 below its gate: the next fastest gated form
    c = choose_cpu_form(_timed(_pkg(tmp_path, bf16_agree=0.9), ms), "amx", have_openvino=True)
    assert (c["backend"], c["variant"]) == ("openvino:int8", "int8-ov")
    assert "openvino-bf16 (no gated form in the package)" in c["why"]
    # ONNX Runtime's U8S8 measured fastest: it runs even on an AMX CPU
    c = choose_cpu_form(_timed(_pkg(tmp_path), {**ms, "ort-int8": 5.0}), "amx", have_openvino=True)
    assert (c["backend"], c["variant"]) == ("ort", "int8-u8s8")
    # INT8 measured slower than FP32 (tiny networks, per-call overhead): FP32 runs
    c = choose_cpu_form(_timed(_pkg(tmp_path), {"ort-fp32": 3.0, "ort-int8": 4.0}), "arm", have_openvino=False)
    assert (c["backend"], c["precision"]) == ("ort", "fp32") and c["measured"]
    # the OpenVINO precision resolution follows the same timings
    assert openvino_form(_timed(_pkg(tmp_path), ms), None) == ("bf16", None)


def test_timings_from_another_cpu_are_not_used(tmp_path):
    from rating_edge.infer.cpu_forms import cpu_key

    ms = {"ort-int8": 1.0, "openvino-int8": 50.0}
    for other in ({**cpu_key(), "cpu": "Some Other CPU"}, {**cpu_key(), "cores": cpu_key()["cores"] + 6}):
        c = choose_cpu_form(_timed(_pkg(tmp_path), ms, other), "amx", have_openvino=True)
        assert c["backend"] == "openvino:int8" and not c["measured"]
        assert "fastest expected openvino int8 (no timing made on this CPU model)" in c["why"]


def test_measured_thread_count_goes_with_the_choice(tmp_path, monkeypatch):
    """The thread count a form ran fastest at here is part of the choice, and `make_runner(pkg, "auto")`
    uses it unless the caller or RATING_EDGE_THREADS says otherwise."""
    import rating_edge.infer as infer

    pkg = _timed(_pkg(tmp_path), {"ort-int8": 20.0, "openvino-int8": 10.0}, threads={"openvino-int8": 1, "ort-int8": 2})
    c = choose_cpu_form(pkg, "amx", have_openvino=True)
    assert c["threads"] == 1 and "openvino-int8 10.0 ms per pair at 1 thread" in c["why"]
    seen = {}

    class Fake:
        def __init__(self, package, precision=None, variant=None, **kw):
            seen.update(precision=precision, variant=variant, **kw)

    import rating_edge.infer.openvino as ovmod

    monkeypatch.setattr(ovmod, "OpenVinoRunner", Fake)
    monkeypatch.setattr("rating_edge.infer.cpu_forms.openvino_available", lambda: True)
    monkeypatch.delenv("RATING_EDGE_THREADS", raising=False)
    infer.make_runner(pkg, "auto")
    assert seen == {"precision": "int8", "variant": "int8-ov", "threads": 1}
    infer.make_runner(pkg, "auto", threads=2)
    assert seen["threads"] == 2
    monkeypatch.setenv("RATING_EDGE_THREADS", "2")
    seen.clear()
    infer.make_runner(pkg, "auto")
    assert "threads" not in seen  # the environment's policy applies inside the runner
