"""Patient-level fold split: fold k's scoring model never sees a pair of fold k's patients.

Pairs of one patient are correlated (same joints, same scanner settings); splitting by pair would
leak them across folds and inflate every held-out number.
"""
from __future__ import annotations

import warnings

import numpy as np

from rating_edge.errors import RatingEdgeError


def patient_folds(records, folds: int, seed: int = 0) -> dict[str, int]:
    """{patient id: fold}, stratified on the combined grade as far as the patient grouping allows."""
    from sklearn.model_selection import StratifiedGroupKFold

    patients = [r.patient_id for r in records]
    n_pat = len(set(patients))
    if n_pat < folds:
        raise RatingEdgeError(f"a {folds}-fold split by patient needs at least {folds} patients; "
                              f"the dataset has {n_pat} (set patient_id in labels.csv)")
    y = np.array([r.combined for r in records])
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    out: dict[str, int] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # rare grades: fewer members than folds
            for k, (_, test_idx) in enumerate(splitter.split(np.zeros(len(y)), y, groups=patients)):
                for i in test_idx:
                    out[patients[i]] = k
    except ValueError:  # too few pairs per grade to stratify: balance pair counts only
        out = _balanced_groups(patients, folds, seed)
    return out


def _balanced_groups(patients: list[str], folds: int, seed: int) -> dict[str, int]:
    """Largest patients first (random order among equals), each into the fold with the fewest pairs."""
    ids, counts = np.unique(np.array(patients), return_counts=True)
    rng = np.random.default_rng(seed)
    order = sorted(range(len(ids)), key=lambda i: (-counts[i], rng.random()))
    load = np.zeros(folds, np.int64)
    out = {}
    for i in order:
        k = int(np.argmin(load))
        out[str(ids[i])] = k
        load[k] += counts[i]
    return out


def fold_of_records(records, fold_of_patient: dict[str, int]) -> np.ndarray:
    return np.array([fold_of_patient[r.patient_id] for r in records], np.int64)


def split_summary(records, fold_of_patient: dict[str, int], folds: int) -> dict:
    """What goes into the manifest's meta: the patients of each fold and the pair counts."""
    f = fold_of_records(records, fold_of_patient)
    return {"by": "patient",
            "folds": {str(k): sorted(p for p, v in fold_of_patient.items() if v == k) for k in range(folds)},
            "pairs_per_fold": [int((f == k).sum()) for k in range(folds)]}
