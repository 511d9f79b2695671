"""compare_outputs / gates on synthetic outputs, and `rating-edge verify` end to end on phantom pairs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from rating_edge.export.verify import (
    Gates,
    apply_gates,
    compare_outputs,
    heat_correlation,
    weighted_kappa,
)


def _outputs(rng, b=6, folds=5):
    return {"sh_prob": rng.uniform(0, 1, (b, folds, 3, 2)).astype(np.float32),
            "vs_prob": rng.uniform(0, 1, (b, folds, 3, 2)).astype(np.float32),
            "heat_gs": rng.uniform(0, 1, (b, 2, 2)).astype(np.float32),
            "heat_doppler": rng.uniform(0, 1, (b, 2, 2)).astype(np.float32)}


def test_identical_outputs_pass_every_gate():
    ref = _outputs(np.random.default_rng(0))
    rep = compare_outputs(ref, {k: v.copy() for k, v in ref.items()})
    assert rep["pairs"] == 6
    assert all(o["max_abs_diff"] == 0 for o in rep["outputs"].values())
    assert rep["min_network_agreement"] == 1.0 and len(rep["network_agreement"]) == 60
    assert all(rep["grades"][g] == {"agreement": 1.0, "kappa_linear": 1.0, "kappa_quadratic": 1.0} for g in ("sh", "vs", "combined"))
    assert rep["outputs"]["heat_gs"]["corr_min"] == pytest.approx(1.0)
    assert apply_gates(rep, Gates()) == []


def test_a_flipped_decision_is_reported_for_its_network():
    ref = _outputs(np.random.default_rng(1))
    test = {k: v.copy() for k, v in ref.items()}
    test["vs_prob"][2, 3, 1, 0] = 1.0 - ref["vs_prob"][2, 3, 1, 0]
    test["heat_gs"] = 1.0 - test["heat_gs"]
    rep = compare_outputs(ref, test)
    assert rep["network_agreement"]["fold3-vs-gt1-seed0"] == pytest.approx(5 / 6)
    assert sum(v < 1 for v in rep["network_agreement"].values()) == 1
    assert rep["outputs"]["vs_prob"]["max_abs_diff"] == pytest.approx(abs(1 - 2 * ref["vs_prob"][2, 3, 1, 0]))
    assert rep["outputs"]["heat_gs"]["corr_min"] == pytest.approx(-1.0)
    fails = apply_gates(rep, Gates())
    assert any("vs_prob" in f for f in fails) and any("fold3-vs-gt1-seed0" in f for f in fails)
    assert any("heat_gs" in f for f in fails)
    assert apply_gates(rep, Gates(max_prob_diff=1.0, min_grade_agreement=0.0, min_network_agreement=0.0,
                                  min_heat_corr=-1.1)) == []


def test_weighted_kappa():
    a = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    assert weighted_kappa(a, a) == 1.0
    assert weighted_kappa([2, 2, 2], [2, 2, 2]) == 1.0
    assert weighted_kappa(a, 3 - a) < 0
    near = weighted_kappa(a, np.minimum(a + 1, 3))
    far = weighted_kappa(a, np.where(a < 2, 3, 0))
    assert 0 < near < 1 and far < near
    sklearn = pytest.importorskip("sklearn.metrics")
    b = np.array([0, 2, 2, 3, 1, 1, 0, 3])
    assert weighted_kappa(a, b) == pytest.approx(sklearn.cohen_kappa_score(a, b, weights="linear", labels=[0, 1, 2, 3]))


def test_heat_correlation_flat_maps():
    z = np.zeros((2, 3, 3))
    assert list(heat_correlation(z, z)) == [1.0, 1.0]
    one = np.zeros((1, 3, 3))
    one[0, 1, 1] = 1
    assert list(heat_correlation(z[:1], one)) == [0.0]


def test_verify_cli_on_phantom_pairs(tmp_path, capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("rating_edge.phantom.joint")
    from rating_edge.cli import main
    from rating_edge.export.exporter import export_package
    from rating_edge.model.init import write_random_ensemble
    from rating_edge.spec import EnsembleSpec

    monkeypatch.setenv("RATING_EDGE_THREADS", "1")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ck = tmp_path / "ck"
        write_random_ensemble(ck, EnsembleSpec(folds=1, width=8, input_size=32, hidden=16), seed=5)
        pkg = export_package(ck, tmp_path / "pkg", fuse="stack", chunk=2)
        js = tmp_path / "v.json"
        assert main(["verify", str(pkg), "--reference", str(ck), "--phantom", "3", "--json", str(js),
                     "--plots", str(tmp_path / "pics")]) == 0
        assert {p.name for p in (tmp_path / "pics").glob("*.png")} == {"scatter.png", "disagreement.png"}
        rep = json.loads(js.read_text())
        assert rep["passed"] and rep["pairs"] == 3 and rep["package"]["strategy"] == "stack"
        assert rep["outputs"]["heat_doppler"]["corr_min"] > 0.999
        assert "PASS" in capsys.readouterr().err
        # an impossible gate fails with exit status 1 and names the output
        assert main(["verify", str(pkg), "--reference", str(ck), "--phantom", "2", "--max-prob-diff", "0"]) == 1
        assert "FAIL" in capsys.readouterr().err
        assert main(["verify", str(pkg), "--reference", str(ck), "--phantom", "2", "--data", str(tmp_path)]) == 2
    finally:
        torch.set_num_threads(old)


def test_default_gates_follow_what_the_package_promises():
    """Exact exports are gated on exactness; an INT8 variant on its quantization gate (probabilities and
    heatmaps reported only); a distilled student on grade agreement."""
    from types import SimpleNamespace

    from rating_edge.export.verify import DISTILL_GRADE_AGREEMENT, default_gates

    exact = SimpleNamespace(meta={"precision": "fp32"}, strategy="stack")
    int8 = SimpleNamespace(meta={"precision": "int8", "quantization": {"gate": 0.985, "member_gate": 0.9}},
                           strategy="stack")
    student = SimpleNamespace(meta={"precision": "fp32"}, strategy="distill")
    assert default_gates(exact)[0] == Gates()
    assert default_gates(int8)[0] == Gates()  # the INT8 package's default graphs are its FP32 ones
    g, why = default_gates(int8, "int8-u8s8")
    assert (g.min_grade_agreement, g.min_network_agreement) == (0.985, 0.9) and "0.985" in why
    rep = {"pairs": 10, "outputs": {"sh_prob": {"max_abs_diff": 0.3}, "heat_gs": {"corr_min": 0.2}},
           "grades": {k: {"agreement": 0.99} for k in ("sh", "vs", "combined")},
           "min_network_agreement": 0.95, "network_agreement": {"n": 0.95}}
    assert apply_gates(rep, g) == []  # INT8-sized differences pass ...
    assert apply_gates(rep, Gates())  # ... which the exact gates refuse
    rep["grades"]["combined"]["agreement"] = 0.98
    assert apply_gates(rep, g) == ["combined grade agreement 0.9800 < 0.985"]
    assert default_gates(student)[0].min_grade_agreement == DISTILL_GRADE_AGREEMENT


def test_nan_outputs_fail_under_any_gates():
    rng = np.random.default_rng(0)
    ref = {"heat_gs": rng.uniform(0, 1, (4, 3, 3)).astype(np.float32)}
    test = {"heat_gs": ref["heat_gs"].copy()}
    test["heat_gs"][2] = np.nan
    rep = compare_outputs(ref, test)
    loose = Gates(max_prob_diff=1.0, min_grade_agreement=0.0, min_network_agreement=0.0, min_heat_corr=-1.0)
    assert apply_gates(rep, loose) == ["heat_gs: NaN or infinite values on 1 pairs"]
