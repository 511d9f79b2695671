"""The paper's metrics against hand-checked small cases, and the vectorised bootstrap against scikit-learn."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    roc_auc_score,
)

from rating_edge.errors import RatingEdgeError
from rating_edge.evaluate import (
    bootstrap_ci,
    evaluate_predictions,
    point_metrics,
    resample_counts,
    weighted_metrics,
)

Y_HAND = np.array([0, 0, 1, 1, 2, 3])
G_HAND = np.array([0, 1, 1, 1, 3, 3])


def probs_for(grades, folds=5, seeds=2, hi=0.9, lo=0.1):
    """P(grade > t) that ECOC-decodes to `grades` in every fold."""
    bits = (np.asarray(grades)[:, None] > np.arange(3)[None, :])
    p = np.where(bits, hi, lo)[:, None, :, None]
    return np.broadcast_to(p, (len(grades), folds, 3, seeds)).astype(np.float32).copy()


def hand_result(**kw):
    probs = {"sh_prob": probs_for(G_HAND), "vs_prob": probs_for(np.zeros(6, int))}
    labels = np.stack([Y_HAND, np.zeros(6, int), Y_HAND], 1)  # VS all 0, so combined = SH
    return evaluate_predictions(probs, labels, **kw)


def test_accuracy_kappa_confusion_by_hand():
    r = hand_result(bootstrap=0)
    assert r["accuracy"]["sh"]["value"] == pytest.approx(4 / 6)
    assert r["accuracy"]["combined"]["value"] == pytest.approx(4 / 6)
    assert r["accuracy"]["vs"]["value"] == 1.0
    # observed weighted disagreement 2, expected 44/6 -> kappa = 1 - 12/44 = 8/11
    assert r["kappa_linear"]["sh"]["value"] == pytest.approx(8 / 11, abs=1e-6)
    assert r["confusion"]["sh"] == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]]
    assert r["confusion"]["vs"] == [[6, 0, 0, 0], [0] * 4, [0] * 4, [0] * 4]
    assert "ci" not in r["accuracy"]["sh"]


def test_youden_by_hand():
    y = hand_result(bootstrap=0)["youden"]
    # > 0: sens 4/4, spec 1/2; > 1: perfect; > 2: sens 1/1, spec 4/5
    assert y["combined_gt0"]["value"] == pytest.approx(0.5)
    assert (y["combined_gt0"]["sensitivity"], y["combined_gt0"]["specificity"]) == (1.0, 0.5)
    assert y["combined_gt1"]["value"] == pytest.approx(1.0)
    assert y["combined_gt2"]["value"] == pytest.approx(0.8)


def test_auc_by_hand_and_undefined():
    w = np.ones((1, 4))
    tp = {"sh": np.array([[0.1], [0.4], [0.35], [0.8]]), "vs": np.zeros((4, 1))}
    y = np.array([[0, 0, 0], [0, 0, 0], [1, 0, 1], [1, 0, 1]])
    g = {k: np.zeros(4, int) for k in ("sh", "vs", "combined")}
    m = weighted_metrics(w, tp, g, y)
    assert m["auc/sh/gt0"][0] == pytest.approx(0.75)  # the classic 4-sample example
    assert np.isnan(m["auc/vs/gt0"][0])  # no positive VS case: undefined, not 0.5
    assert np.isnan(point_metrics(tp, g, y)["auc/vs/gt0"])


def test_auc_is_from_mean_probability_over_folds_and_seeds():
    rng = np.random.default_rng(3)
    n = 60
    sh = rng.integers(0, 4, n)
    vs = np.where(sh == 0, 0, rng.integers(0, 4, n))
    probs = {"sh_prob": rng.random((n, 5, 3, 2)), "vs_prob": rng.random((n, 5, 3, 2))}
    r = evaluate_predictions(probs, {"sh": sh, "vs": vs}, bootstrap=0)
    for t in range(3):
        want = roc_auc_score(sh > t, probs["sh_prob"][:, :, t, :].mean(axis=(1, 2)))
        assert r["auc"]["sh"][f"gt{t}"]["value"] == pytest.approx(want, abs=1e-6)


def test_vectorised_resample_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    n = 40
    y = np.stack([rng.integers(0, 4, n), rng.integers(0, 4, n)], 1)
    y = np.c_[y, y.max(1)]
    tp = {"sh": np.round(rng.random((n, 3)), 1), "vs": np.round(rng.random((n, 3)), 1)}  # rounded: many ties
    g = {"sh": rng.integers(0, 4, n), "vs": rng.integers(0, 4, n)}
    g["combined"] = np.maximum(g["sh"], g["vs"])
    for b in range(5):
        idx = rng.integers(0, n, n)
        w = np.bincount(idx, minlength=n)[None].astype(float)
        fast = {k: v[0] for k, v in weighted_metrics(w, tp, g, y).items()}
        ref = point_metrics({k: v[idx] for k, v in tp.items()}, {k: v[idx] for k, v in g.items()}, y[idx])
        assert set(fast) == set(ref)
        for k in ref:
            if np.isnan(ref[k]):
                assert np.isnan(fast[k]), k
            else:
                assert fast[k] == pytest.approx(ref[k], abs=1e-9), k
        # and the sklearn-based point metrics themselves
        assert ref["accuracy/sh"] == pytest.approx(accuracy_score(y[idx, 0], g["sh"][idx]))
        assert ref["kappa/vs"] == pytest.approx(cohen_kappa_score(y[idx, 1], g["vs"][idx], weights="linear"))


def test_bootstrap_ci_contains_point_and_is_deterministic():
    rng = np.random.default_rng(1)
    n = 80
    sh = rng.integers(0, 4, n)
    noisy = np.where(rng.random(n) < 0.8, sh, rng.integers(0, 4, n))
    probs = {"sh_prob": probs_for(noisy), "vs_prob": probs_for(np.zeros(n, int))}
    labels = np.stack([sh, np.zeros(n, int), sh], 1)
    a = evaluate_predictions(probs, labels, bootstrap=300, seed=7)
    b = evaluate_predictions(probs, labels, bootstrap=300, seed=7)
    c = evaluate_predictions(probs, labels, bootstrap=300, seed=8)
    assert a == b
    assert a != c  # another seed draws other resamples (discrete metrics may still share a CI)
    for key in ("accuracy", "kappa_linear"):
        e = a[key]["sh"]
        assert e["ci"][0] <= e["value"] <= e["ci"][1]
        assert e["ci"][0] < e["ci"][1]
    for t in range(3):
        e = a["youden"][f"combined_gt{t}"]
        assert e["ci"][0] <= e["value"] <= e["ci"][1]
    assert a["bootstrap"] == {"resamples": 300, "seed": 7, "level": 0.95, "method": "percentile"}


def test_resample_counts_are_resamples():
    c = resample_counts(10, 50, seed=0)
    assert c.shape == (50, 10) and np.all(c.sum(1) == 10)
    assert np.array_equal(c, resample_counts(10, 50, seed=0))
    assert not np.array_equal(c, resample_counts(10, 50, seed=1))


def test_bootstrap_skips_undefined_resamples():
    # one positive in 10: many resamples miss it; their AUC is skipped and counted
    y = np.zeros((10, 3), int)
    y[0] = [1, 0, 1]
    tp = {"sh": np.linspace(0, 1, 30).reshape(10, 3), "vs": np.zeros((10, 3))}
    g = {k: np.zeros(10, int) for k in ("sh", "vs", "combined")}
    ci = bootstrap_ci(tp, g, y, 200, seed=0)
    lo, hi, valid = ci["auc/sh/gt0"]
    assert 0 < valid < 200
    assert ci["auc/vs/gt0"][2] == 0 and np.isnan(ci["auc/vs/gt0"][0])


def test_bad_inputs_are_user_errors():
    probs = {"sh_prob": probs_for([0, 1]), "vs_prob": probs_for([0, 1])}
    with pytest.raises(RatingEdgeError):
        evaluate_predictions(probs, np.zeros((3, 3), int), bootstrap=0)
    with pytest.raises(RatingEdgeError):
        evaluate_predictions(probs, np.full((2, 3), 5), bootstrap=0)
    with pytest.raises(RatingEdgeError):
        evaluate_predictions({"sh_prob": np.zeros((2, 5, 2, 2)), "vs_prob": np.zeros((2, 5, 2, 2))},
                             np.zeros((2, 3), int), bootstrap=0)


def test_confusion_matches_sklearn_orientation():
    r = hand_result(bootstrap=0)
    assert r["confusion"]["sh"] == confusion_matrix(Y_HAND, G_HAND, labels=[0, 1, 2, 3]).tolist()
