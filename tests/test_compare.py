"""rating_edge.compare: one answer per metric for verify, the INT8 gate, distillation and evaluate, and the
issue 13 probes (vacuous pass, NaN package, all-zero heatmap, one grade only)."""
import json

import numpy as np
import pytest

from rating_edge.calibration.gate import agreement_report
from rating_edge.compare import (
    Gates,
    apply_gates,
    compare_outputs,
    heat_correlation,
    kappa,
    kappa_from_confusion,
)
from rating_edge.errors import RatingEdgeError
from rating_edge.evaluate import evaluate_predictions, point_metrics, weighted_metrics
from rating_edge.export.distill import agreement as distill_agreement
from rating_edge.spec import preset

SPEC = preset("tiny")


def _outputs(rng, n=6, heat=2):
    return {"sh_prob": rng.random((n, 5, 3, 2)).astype(np.float32),
            "vs_prob": rng.random((n, 5, 3, 2)).astype(np.float32),
            "heat_gs": rng.random((n, heat, heat)).astype(np.float32),
            "heat_doppler": rng.random((n, heat, heat)).astype(np.float32)}


def test_kappa_matches_scikit_learn_and_is_one_for_a_single_grade():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.integers(0, 4, 30), rng.integers(0, 4, 30)
        for w in ("linear", "quadratic"):
            assert kappa(a, b, w) == pytest.approx(sklearn.cohen_kappa_score(a, b, weights=w, labels=[0, 1, 2, 3]))
    assert kappa([2, 2, 2], [2, 2, 2]) == 1.0 == kappa([0], [0], "quadratic")
    assert kappa([1, 1], [2, 2]) == 0.0  # one grade each, never the same: no agreement beyond chance
    assert np.isnan(kappa([], []))


def test_one_grade_only_gives_the_same_kappa_in_verify_distill_and_evaluate():
    """Probe: linear kappa was 1.0 in verify/distill and NaN in evaluate for one grade only."""
    n = 8
    probs = {"sh_prob": np.full((n, 5, 3, 2), 0.1, np.float32), "vs_prob": np.full((n, 5, 3, 2), 0.1, np.float32)}
    ref = {**probs, "heat_gs": np.zeros((n, 2, 2)), "heat_doppler": np.zeros((n, 2, 2))}
    verify_k = compare_outputs(ref, ref)["grades"]["combined"]["kappa_linear"]
    distill_k = distill_agreement(probs, probs)["combined_kappa"]
    y = np.zeros((n, 3), np.int64)  # every label grade 0, every prediction grade 0
    eval_k = evaluate_predictions(probs, y, bootstrap=0)["kappa_linear"]["combined"]["value"]
    boot_k = weighted_metrics(np.ones((1, n)), {"sh": np.zeros((n, 3)), "vs": np.zeros((n, 3))},
                              {t: np.zeros(n, np.int64) for t in ("sh", "vs", "combined")}, y)["kappa/combined"][0]
    assert verify_k == distill_k == eval_k == boot_k == 1.0


def test_kappa_from_confusion_batches_agree_with_single():
    rng = np.random.default_rng(1)
    cms = rng.integers(0, 5, (7, 4, 4)).astype(float)
    cms[3] = 0
    batch = kappa_from_confusion(cms)
    for i in range(7):
        single = kappa_from_confusion(cms[i])
        assert (np.isnan(single) and np.isnan(batch[i])) or single == pytest.approx(batch[i])


def test_all_zero_heatmap_gives_one_answer_in_verify_and_the_quantize_gate():
    """Probe: an all-zero test heatmap gave 0.0 in verify and 1.0 in the quantize gate."""
    rng = np.random.default_rng(0)
    ref = _outputs(rng)
    test = {k: v.copy() for k, v in ref.items()}
    test["heat_gs"][:] = 0
    v = compare_outputs(ref, test)["outputs"]["heat_gs"]["corr_min"]
    q = agreement_report(ref, test, SPEC)["heat_gs_corr_min"]
    assert v == q == 0.0
    both_flat = heat_correlation(np.zeros((2, 3, 3)), np.ones((2, 3, 3)))
    assert list(both_flat) == [1.0, 1.0]


def test_missing_output_is_a_failure_not_a_vacuous_pass():
    """Probe: a package whose ONNX has other output names printed PASS with pairs None."""
    rng = np.random.default_rng(0)
    ref = _outputs(rng)
    renamed = {k.upper(): v for k, v in ref.items()}
    rep = compare_outputs(ref, renamed)
    fails = apply_gates(rep, Gates(max_prob_diff=1, min_grade_agreement=0, min_network_agreement=0, min_heat_corr=-1))
    assert rep["pairs"] == 0 and any("sh_prob" in f and "missing" in f for f in fails)
    assert "no pairs were compared" in fails
    wrong_shape = {**ref, "heat_gs": ref["heat_gs"][:, :1]}
    assert any("heat_gs" in f for f in apply_gates(compare_outputs(ref, wrong_shape), Gates()))


def test_zero_pairs_fail():
    rng = np.random.default_rng(0)
    ref = {k: v[:0] for k, v in _outputs(rng).items()}
    assert "no pairs were compared" in apply_gates(compare_outputs(ref, ref), Gates())


def test_nan_outputs_fail_every_gate_without_a_traceback():
    rng = np.random.default_rng(0)
    ref = _outputs(rng)
    test = {k: v.copy() for k, v in ref.items()}
    test["sh_prob"][1, 0, 0, 0] = np.nan
    test["heat_doppler"][2] = np.inf
    rep = compare_outputs(ref, test)
    loose = Gates(max_prob_diff=1, min_grade_agreement=0, min_network_agreement=0, min_heat_corr=-1)
    fails = apply_gates(rep, loose)
    assert "sh_prob: NaN or infinite values on 1 pairs" in fails
    assert "heat_doppler: NaN or infinite values on 1 pairs" in fails
    assert rep["grades"]["combined"]["agreement"] <= 5 / 6  # the NaN pair counts as disagreeing
    json.dumps(rep)  # the report stays writable
    gate = agreement_report(ref, test, SPEC)
    assert gate["nonfinite_pairs"] == 2 and gate["combined_agreement"] <= 5 / 6
    all_nan = {k: np.full_like(v, np.nan) for k, v in ref.items()}
    assert apply_gates(compare_outputs(ref, all_nan), loose)
    assert distill_agreement(ref, all_nan)["combined_agreement"] == 0.0


def test_evaluate_refuses_nan_probabilities_in_one_line():
    probs = {"sh_prob": np.full((4, 5, 3, 2), np.nan, np.float32), "vs_prob": np.full((4, 5, 3, 2), 0.2, np.float32)}
    with pytest.raises(RatingEdgeError, match="NaN or infinite probabilities on 4 of 4 pairs"):
        evaluate_predictions(probs, np.zeros((4, 3), np.int64), bootstrap=0)


def test_point_and_bootstrap_kappa_share_the_definition():
    rng = np.random.default_rng(3)
    n = 40
    y = rng.integers(0, 4, (n, 3))
    g = {t: rng.integers(0, 4, n) for t in ("sh", "vs", "combined")}
    tp = {"sh": rng.random((n, 3)), "vs": rng.random((n, 3))}
    p = point_metrics(tp, g, y)
    w = weighted_metrics(np.ones((1, n)), tp, g, y)
    for t in ("sh", "vs", "combined"):
        assert p[f"kappa/{t}"] == pytest.approx(w[f"kappa/{t}"][0])
