"""Distillation runs: the package it writes, resumption, that training helps, and the CLI."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from rating_edge.errors import RatingEdgeError  # noqa: E402
from rating_edge.export.distill import (  # noqa: E402
    DistillConfig,
    Distiller,
    Frames,
    load_frames,
    phantom_frames,
    teacher_logodds,
)
from rating_edge.preprocess import PreprocessParams, normalize  # noqa: E402
from rating_edge.spec import EnsembleSpec  # noqa: E402

SPEC = EnsembleSpec(folds=2, width=4, input_size=32, hidden=8)  # tinier than "tiny": the CPU is shared
PARAMS = PreprocessParams(input_size=SPEC.input_size)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from rating_edge.model.init import write_random_ensemble

    p = tmp_path_factory.mktemp("teacher")
    write_random_ensemble(p, SPEC, seed=4)
    return p


@pytest.fixture(scope="module")
def frames():
    return phantom_frames(48, PARAMS, seed=0), phantom_frames(24, PARAMS, seed=1)


def test_package_io_and_provenance(teacher, tmp_path):
    from rating_edge.export.distill_commands import run_distill
    from rating_edge.export.student import Student, StudentConfig
    from rating_edge.infer import make_runner
    from rating_edge.model.checkpoint import checkpoint_hashes
    from rating_edge.package import load_package

    out = tmp_path / "pkg"
    fusion = run_distill(teacher, out, share_depth="layer3", frames="phantom:8", epochs=1, batch=4, holdout="phantom:6")
    pkg = load_package(out)
    assert pkg.strategy == "distill"
    assert fusion["share_depth"] == "layer3"
    assert fusion["teacher"] == checkpoint_hashes(teacher)
    assert pkg.meta["source"]["checkpoint"] == checkpoint_hashes(teacher)
    assert fusion["data"]["sha256"] == load_frames("phantom:8", PARAMS, 0).sha256
    assert pkg.meta["graphs"] == [{"file": "model.onnx", "kind": "fused"}]
    assert 0.0 <= fusion["holdout"]["combined_agreement"] <= 1.0
    assert fusion["holdout"]["pairs"] == 6
    gs, dop = phantom_frames(3, PARAMS, seed=9).gs, phantom_frames(3, PARAMS, seed=9).doppler
    with make_runner(pkg) as r:
        res = r.infer({"gs": gs, "doppler": dop})
    assert res["sh_prob"].shape == res["vs_prob"].shape == (3, SPEC.folds, SPEC.tasks, SPEC.seeds)
    assert res["heat_gs"].shape == res["heat_doppler"].shape == (3, SPEC.heat_size, SPEC.heat_size)
    # the package's weights are the graph's weights
    from safetensors.torch import load_file

    st = Student(StudentConfig.from_dict(fusion["student"]))
    st.load_state_dict(load_file(str(out / fusion["weights"])))
    with torch.no_grad():
        want = st.eval()(torch.from_numpy(gs), torch.from_numpy(dop))
    for k, w in zip(("sh_prob", "vs_prob", "heat_gs", "heat_doppler"), want):
        np.testing.assert_allclose(res[k], w.numpy(), atol=2e-5)
    # tampering is refused like any package
    (out / "model.onnx").write_bytes((out / "model.onnx").read_bytes() + b"x")
    with pytest.raises(RatingEdgeError, match="SHA-256"):
        load_package(out)


def test_resume_continues_exactly(teacher, frames, tmp_path):
    tr, _ = frames
    cfg = DistillConfig(share_depth="layer4", epochs=2, batch=16, init="random", seed=1)
    straight = Distiller(teacher, tmp_path / "a", tr, cfg)
    straight.train_epoch()
    straight.train_epoch()
    first = Distiller(teacher, tmp_path / "b", tr, cfg)
    first.train_epoch()
    del first  # "interrupted" after one epoch
    resumed = Distiller(teacher, tmp_path / "b", tr, cfg)
    assert resumed.epoch == 1 and resumed.targets is not None
    resumed.train_epoch()
    a, b = straight.student.state_dict(), resumed.student.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [h["loss"] for h in straight.history] == [h["loss"] for h in resumed.history]


def test_resume_refuses_another_run(teacher, frames, tmp_path):
    tr, ho = frames
    Distiller(teacher, tmp_path / "p", tr, DistillConfig(epochs=1, batch=16)).train_epoch()
    with pytest.raises(RatingEdgeError, match="share_depth"):
        Distiller(teacher, tmp_path / "p", tr, DistillConfig(share_depth="all", epochs=1, batch=16))
    with pytest.raises(RatingEdgeError, match="data"):
        Distiller(teacher, tmp_path / "p", ho, DistillConfig(epochs=1, batch=16))
    d = Distiller(teacher, tmp_path / "p", ho, DistillConfig(epochs=1, batch=16), restart=True)
    assert d.epoch == 0


def test_distillation_increases_agreement(teacher, frames, tmp_path):
    tr, ho = frames
    d = Distiller(teacher, tmp_path / "p", tr, DistillConfig(share_depth="layer4", epochs=6, batch=12, lr=3e-3, init="random"))
    target = teacher_logodds(d.teachers, SPEC, ho)

    def held_out():
        with torch.no_grad():
            sh, vs = d.student.eval().forward_logits(torch.from_numpy(normalize(ho.gs)),
                                                     torch.from_numpy(normalize(ho.doppler)))
        bits = np.concatenate([(sh.numpy() > 0) == (target["sh"] > 0), (vs.numpy() > 0) == (target["vs"] > 0)])
        mse = np.mean((sh.numpy() - target["sh"]) ** 2) + np.mean((vs.numpy() - target["vs"]) ** 2)
        return float(bits.mean()), float(mse)

    bits0, mse0 = held_out()
    for _ in range(6):
        d.train_epoch()
    bits1, mse1 = held_out()
    assert d.history[-1]["loss"] < d.history[0]["loss"]
    assert mse1 < 0.6 * mse0
    assert bits1 > bits0 + 0.1, (bits0, bits1)


def test_frames_sources(tmp_path):
    with pytest.raises(RatingEdgeError, match="phantom:N"):
        load_frames("phantom:many", PARAMS)
    with pytest.raises(RatingEdgeError, match="not phantom:N"):
        load_frames(str(tmp_path), PARAMS)
    # a labelled dataset folder gives the same preprocessed arrays as the dataset loader
    import cv2

    from rating_edge.dataset import PairRecord, write_labels
    from rating_edge.phantom.joint import make_pair

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    recs = []
    for i, (sh, vs) in enumerate([(1, 0), (2, 2)]):
        pair = make_pair(rng, sh, vs)
        for kind, img in (("gs", pair.gs), ("doppler", pair.doppler)):
            cv2.imwrite(str(tmp_path / "images" / f"p{i}_{kind}.png"), img)
        recs.append(PairRecord(f"p{i}", "x", f"images/p{i}_gs.png", f"images/p{i}_doppler.png", sh, vs, max(sh, vs),
                               pair.roi, pair.roi, pair.kind))
    write_labels(tmp_path, recs)
    fr = load_frames(str(tmp_path), PARAMS)
    assert isinstance(fr, Frames) and len(fr) == 2 and fr.source["kind"] == "dataset"
    assert fr.labels.tolist() == [[1, 0, 1], [2, 2, 2]]
    # saved frames load back identically (same data hash)
    from rating_edge.export.distill import save_frames

    p = save_frames(tmp_path / "frames", fr)
    again = load_frames(str(p), PARAMS)
    assert p.suffix == ".npz" and again.sha256 == fr.sha256 and again.labels.tolist() == fr.labels.tolist()
    with pytest.raises(RatingEdgeError, match="expected shape"):
        load_frames(str(p), PreprocessParams(input_size=64))


def test_cli(teacher, tmp_path):
    from typer.testing import CliRunner

    from rating_edge.cli import app, main

    out = tmp_path / "pkg"
    args = ["distill", str(teacher), str(out), "--share-depth", "all", "--frames", "phantom:6", "--epochs", "1",
            "--batch", "3", "--holdout", "none"]
    r = CliRunner().invoke(app, args + ["--teacher-cache", str(tmp_path / "cache")])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "cache").glob("*.safetensors"))) == 1
    meta = json.loads((out / "model.json").read_text())
    assert meta["fusion"]["strategy"] == "distill" and meta["fusion"]["training"]["epochs_done"] == 1
    r = CliRunner().invoke(app, args[:-4] + ["--epochs", "2", "--batch", "3", "--holdout", "none"])
    assert r.exit_code == 0, r.output
    assert "resuming after epoch 1" in r.output
    assert json.loads((out / "model.json").read_text())["fusion"]["training"]["epochs_done"] == 2
    assert main(["distill", str(teacher), str(tmp_path / "x"), "--share-depth", "layer9", "--frames", "phantom:2",
                 "--epochs", "0", "--holdout", "none"]) == 2


def test_losses():
    from rating_edge.export.distill import distill_loss

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, 5, 3, 2, generator=g), 5 * torch.randn(4, 5, 3, 2, generator=g)
    assert float(distill_loss(t, t, t, t, "mse")) == 0.0
    # kd is minimal (gradient zero) where the student equals the teacher, for any temperature
    for temp in (1.0, 3.0):
        x = t.clone().requires_grad_(True)
        distill_loss(x, t, t, t, "kd", temp).backward()
        assert float(x.grad.abs().max()) < 1e-6
        assert float(distill_loss(s, s, t, t, "kd", temp)) > float(distill_loss(t, t, t, t, "kd", temp))
    with pytest.raises(RatingEdgeError, match="loss"):
        distill_loss(s, s, t, t, "l1")
