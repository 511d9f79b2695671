"""Training recipe: patient folds, resumption, learning, jigsaw pieces, augmentation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_train_toydata import write_toy_dataset

from rating_edge.dataset import read_labels
from rating_edge.errors import RatingEdgeError
from rating_edge.model.checkpoint import load_models
from rating_edge.model.resnet import ResNet18
from rating_edge.spec import EnsembleSpec
from rating_edge.train.augment import augment_batch, balanced_indices
from rating_edge.train.config import TrainConfig, train_preset
from rating_edge.train.folds import fold_of_records, patient_folds, split_summary
from rating_edge.train.jigsaw import make_puzzles, permutation_set, pretrain_backbone
from rating_edge.train.loop import fit, image_batches
from rating_edge.train.recipe import STATE, train_ensemble

SMALL = EnsembleSpec(folds=2, seeds=1, width=4, input_size=32, hidden=8)  # 12 networks
FAST = TrainConfig(epochs=1, head_epochs=2, batch=8, step_epochs=1)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_dataset(tmp_path_factory.mktemp("toy"), n=24, patients=8)


def test_patient_folds_never_share_a_patient(tmp_path):
    write_toy_dataset(tmp_path, n=60, patients=17)
    recs = read_labels(tmp_path)
    fop = patient_folds(recs, 5, seed=3)
    assert set(fop) == {r.patient_id for r in recs}
    folds = fold_of_records(recs, fop)
    for p in fop:
        assert len({f for r, f in zip(recs, folds) if r.patient_id == p}) == 1
    assert set(folds) == set(range(5))
    summ = split_summary(recs, fop, 5)
    listed = [p for k in range(5) for p in summ["folds"][str(k)]]
    assert sorted(listed) == sorted(fop) and len(listed) == len(set(listed))
    assert sum(summ["pairs_per_fold"]) == 60
    assert patient_folds(recs, 5, seed=3) == fop  # deterministic


def test_tiny_datasets_still_split_by_patient(tmp_path):
    write_toy_dataset(tmp_path, n=10, patients=5)  # 2-3 pairs per grade: too few to stratify
    recs = read_labels(tmp_path)
    fop = patient_folds(recs, 5, seed=0)
    assert sorted(fop.values()) == [0, 1, 2, 3, 4]


def test_too_few_patients_is_a_user_error(tmp_path):
    write_toy_dataset(tmp_path, n=8, patients=3)
    with pytest.raises(RatingEdgeError, match="patients"):
        patient_folds(read_labels(tmp_path), 5)


def _hashes(folder):
    state = json.loads((folder / STATE).read_text())
    return {nid: (rec["sha256"], (folder / rec["file"]).stat().st_mtime_ns) for nid, rec in state["networks"].items()}


def test_resume_keeps_finished_networks_and_completes(toy, tmp_path):
    out = tmp_path / "ck"
    r1 = train_ensemble(toy, out, SMALL, FAST, max_networks=5, show_progress=False)
    assert len(r1.trained) == 5 and not r1.complete
    assert not (out / "ensemble.json").exists()
    before = _hashes(out)
    assert len(before) == 5
    # a half-written network (no state record) and a corrupted finished one are both retrained
    nid6 = SMALL.network_ids()[5]
    (out / "networks" / f"{nid6}.safetensors").write_bytes(b"half")
    broken = r1.trained[4]
    (out / "networks" / f"{broken}.safetensors").write_bytes(b"x")
    r2 = train_ensemble(toy, out, SMALL, FAST, show_progress=False)
    assert r2.complete
    assert r2.skipped == r1.trained[:4]
    assert set(r2.trained) == set(SMALL.network_ids()) - set(r1.trained[:4])
    after = _hashes(out)
    for nid in r1.trained[:4]:
        assert after[nid] == before[nid]  # same bytes, file untouched
    spec, models, manifest = load_models(out)
    assert spec == SMALL and len(models) == 12
    meta = manifest["meta"]
    assert meta["origin"] == "train" and meta["split"]["by"] == "patient"
    assert set(meta["split"]["folds"]) == {"0", "1"}
    # a resumed network is trained exactly as in an uninterrupted run
    r3 = train_ensemble(toy, tmp_path / "ck2", SMALL, FAST, show_progress=False)
    assert r3.complete
    again = _hashes(tmp_path / "ck2")
    assert {n: h for n, (h, _) in again.items()} == {n: h for n, (h, _) in after.items()}


def test_resume_refuses_other_settings(toy, tmp_path):
    out = tmp_path / "ck"
    train_ensemble(toy, out, SMALL, FAST, max_networks=1, show_progress=False)
    with pytest.raises(RatingEdgeError, match="other settings"):
        train_ensemble(toy, out, SMALL, FAST.with_overrides(epochs=2), show_progress=False)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    with pytest.raises(RatingEdgeError, match="not empty"):
        train_ensemble(toy, tmp_path / "busy", SMALL, FAST, show_progress=False)


def test_training_reduces_loss_on_separable_images():
    rng = np.random.default_rng(0)
    n = 64
    y = np.arange(n) % 2
    img = rng.integers(0, 60, (n, 32, 32, 3)).astype(np.uint8)
    img[y == 1, 8:24, 8:24] = 230  # a bright square: class 1
    torch.manual_seed(0)
    net = ResNet18(2, 4)
    cfg = TrainConfig(epochs=8, batch=16, lr=3e-3, step_epochs=15)
    losses = fit(net, image_batches(img, cfg, rng), y, cfg.epochs, cfg, rng)
    assert losses[-1] < 0.5 * losses[0]
    from rating_edge.preprocess import normalize
    with torch.no_grad():
        pred = net(torch.from_numpy(normalize(img))).argmax(1).numpy()
    assert (pred == y).mean() >= 0.9


def test_balanced_indices_equalise_classes():
    labels = np.array([0] * 90 + [1] * 10)
    idx = balanced_indices(labels, 20000, np.random.default_rng(0))
    frac = labels[idx].mean()
    assert 0.47 < frac < 0.53


def test_augment_keeps_uint8_shape():
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    a = augment_batch(x, np.random.default_rng(1), 0.8, 0.2)
    assert a.shape == x.shape and a.dtype == np.uint8
    assert not np.array_equal(a, x)
    assert np.array_equal(augment_batch(x, np.random.default_rng(1), 1.0, 0.0), x)


def test_jigsaw_permutations_and_puzzles():
    perms = permutation_set(12)
    assert perms.shape == (12, 9)
    assert len({tuple(p) for p in perms}) == 12
    assert all(sorted(p) == list(range(9)) for p in perms)
    assert np.array_equal(perms, permutation_set(12))
    # cells of distinct constant colours: tile i must carry the colour of cell perms[p][i]
    img = np.zeros((1, 48, 48, 3), np.uint8)
    for c in range(9):
        r, q = divmod(c, 3)
        img[0, r * 16:(r + 1) * 16, q * 16:(q + 1) * 16] = 10 * c + 5
    tiles = make_puzzles(img, np.array([3]), perms, np.random.default_rng(0))
    assert tiles.shape[:2] == (1, 9)
    assert [int(tiles[0, i, 0, 0, 0]) for i in range(9)] == [10 * int(c) + 5 for c in perms[3]]


def test_jigsaw_pretrain_runs_and_initialises(toy, tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (16, 32, 32, 3)).astype(np.uint8)
    cfg = TrainConfig(jigsaw_epochs=2, jigsaw_permutations=6, jigsaw_size=36, jigsaw_tile=10, batch=8)
    b, losses = pretrain_backbone(imgs, 4, cfg, seed=0)  # 32 px images resized to 36 px for the puzzle
    assert isinstance(b, ResNet18) and len(losses) == 2 and all(np.isfinite(losses))
    r = train_ensemble(toy, tmp_path / "jig", SMALL, FAST.with_overrides(jigsaw_epochs=1, jigsaw_permutations=4,
                                                                         jigsaw_size=32, jigsaw_tile=9),
                       jigsaw=True, max_networks=1, show_progress=False)
    state = json.loads((tmp_path / "jig" / STATE).read_text())
    assert set(state["pretrain"]) == {"fold0-gs", "fold0-doppler"} and len(r.trained) == 1


def test_paper_preset_jigsaw_follows_the_paper():
    """1,000 permutations, ROI at 225 px, 3x3 cells of 75 px, 64 px tiles taken inside their own cell."""
    p, t = train_preset("paper"), train_preset("tiny")
    assert (p.jigsaw_permutations, p.jigsaw_size, p.jigsaw_tile) == (1000, 225, 64)
    assert p.jigsaw_size // 3 == 75 and t.jigsaw_tile <= t.jigsaw_size // 3
    img = np.zeros((1, 225, 225, 3), np.uint8)
    for c in range(9):
        r, q = divmod(c, 3)
        img[0, r * 75:(r + 1) * 75, q * 75:(q + 1) * 75] = 20 * c + 5
    perms = permutation_set(8)
    tiles = make_puzzles(img, np.array([5]), perms, np.random.default_rng(1), p.jigsaw_tile)
    assert tiles.shape == (1, 9, 64, 64, 3)
    for i, c in enumerate(perms[5]):  # every pixel of tile i comes from cell perms[5][i]
        assert np.all(tiles[0, i] == 20 * int(c) + 5)
    with pytest.raises(RatingEdgeError, match="tile"):
        p.with_overrides(jigsaw_tile=76)


def test_presets_keep_the_paper_optimiser():
    p, t = train_preset("paper"), train_preset("tiny")
    assert (p.lr, p.step_epochs, p.gamma, p.batch) == (3e-4, 15, 0.3, 64)
    assert t.batch == 64 and t.gamma == 0.3
    with pytest.raises(RatingEdgeError):
        train_preset("huge")
    with pytest.raises(RatingEdgeError):
        p.with_overrides(batch=1)
