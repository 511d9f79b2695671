"""The paper's own networks through rating-edge give the official code's decisions and grades.

The official network, preprocessing and decoding are re-created in tests/official_ref.py from the facts
of issue 19; here a random official-layout checkpoint folder + thresh_dict (with thresholds 0.0 and
0.9998 among them) is imported, exported (`stack`) and run through the runtime's Scorer on phantom
pairs with ROI boxes (one overhanging the image edge), and must give the same 60 decisions, per-model
grades and final grades as the official decoding, with probabilities within 1e-4.
Tiny width (8) and hidden size (32): the facts fix the layout, not the size.
"""
from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("PIL")

from official_ref import (  # noqa: E402
    CLASSES,
    OfficialNet,
    do_multitude,
    ecoc,
    official_inputs,
    randomise,
)

from rating_edge.errors import CheckpointError  # noqa: E402

WIDTH, HIDDEN = 8, 32


SPECIAL = {("sh", 0, 0, 0): 0.0, ("sh", 2, 1, 1): 0.9998, ("vs", 2, 0, 0): 0.0, ("vs", 1, 2, 0): 0.9998}


def folder_name(module: str, classes: str, split: int, seed: int) -> str:
    if module == "sh":
        return (f"Dec01_12-00_SH_classifier,task=GSDOPPLER,label=SH,in_channels=3,3,backbones=resnet,resnet,"
                f"archs=18,18,frozen_stages=4,heads=0,1_2,lr=0.0003,classes={classes},split={split},seed={seed}"
                f"(instance_auc=0.900)")
    return (f"Dec01_12-01_vascularity_classifier,task=DOPPLER,label=vascularity,archs=18,heads=0_2,frozen_stages=0,"
            f"classes={classes},split={split},seed={seed}(instance_auc=0.800)")


def write_official(root, size: int, seed: int = 0):
    """checkpoints/{GSDOPPLER,DOPPLER}/<name>/optimal_net_cls.pth + thresh_dict; returns (nets, thresholds)."""
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    probe = torch.randn(4, 3, size, size, generator=gen)
    nets, th = {}, {"GSDOPPLER_SH_THRESH_DICT": {}, "DOPPLER_VASCULARITY_THRESH_DICT": {}}
    for module, sub, key, nb in (("sh", "GSDOPPLER", "GSDOPPLER_SH_THRESH_DICT", 2),
                                 ("vs", "DOPPLER", "DOPPLER_VASCULARITY_THRESH_DICT", 1)):
        for task, classes in enumerate(CLASSES):
            per_split = th[key].setdefault(classes, {}).setdefault(0, {})
            for split in range(1, 6):
                for s in range(2):
                    net = OfficialNet(nb, WIDTH, HIDDEN)
                    randomise(net, gen, [probe] * nb)
                    d = root / "checkpoints" / sub / folder_name(module, classes, split, s)
                    d.mkdir(parents=True)
                    torch.save(net.state_dict(), d / "optimal_net_cls.pth")
                    t = SPECIAL.get((module, task, split - 1, s), float(rng.uniform(0.05, 0.95)))
                    per_split.setdefault(split, {})[s] = np.float64(t)
                    nets[(module, task, split - 1, s)] = net
    with open(root / "thresh_dict", "wb") as f:
        pickle.dump(th, f)
    return nets, th


def phantom_cases(n: int, seed: int = 1):
    from rating_edge.phantom.joint import make_pair, sample_grades

    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        sh, vs = sample_grades(rng)
        p = make_pair(rng, sh, vs, "cdus" if i % 2 == 0 else "pdus")
        roi = tuple(int(v) for v in p.roi)
        if i == 1:  # an ROI overhanging the bottom-right corner: the official crop clamps it
            H, W = p.gs.shape[:2]
            roi = (W - 90, H - 70, 120, 100)
        cases.append((p.gs, p.doppler, roi))
    return cases


def official_outputs(nets, th, cases, size):
    """Per pair: probabilities s = softmax[1] {(module, task, fold, seed): s}, bits, per-model and final
    grades, and the official uint8 images. Pairs run as one batch (eval-mode BatchNorm is per sample)."""
    ins = []
    for gs, dop, (x, y, w, h) in cases:
        box = (x, y, x + w, y + h)
        ins.append(official_inputs(gs, dop, box, box, size))
    x_gs, x_dop = torch.cat([i[0] for i in ins]), torch.cat([i[1] for i in ins])
    probs = {}
    with torch.no_grad():
        for key, net in nets.items():
            z = net(x_gs, x_dop) if key[0] == "sh" else net(x_dop)
            probs[key] = torch.softmax(z, dim=1)[:, 1].tolist()
    out = []
    for i in range(len(cases)):
        p_i, bits = {}, {}
        for (m, task, f, s), p in probs.items():
            key = "GSDOPPLER_SH_THRESH_DICT" if m == "sh" else "DOPPLER_VASCULARITY_THRESH_DICT"
            p_i[(m, task, f, s)] = p[i]
            bits[(m, task, f, s)] = 1 if p[i] >= th[key][CLASSES[task]][0][f + 1][s] else 0
        grades = {m: [ecoc([bits[(m, t, f, s)] for s in range(2) for t in range(3)]) for f in range(5)]
                  for m in ("sh", "vs")}
        out.append({"probs": p_i, "bits": bits, "grades": grades, "final": do_multitude(grades["sh"], grades["vs"]),
                    "gs": ins[i][2], "dop": ins[i][3]})
    return out


def _run_compat(tmp_path, size: int, n_pairs: int):
    from rating_edge.cli import main
    from rating_edge.export.exporter import export_package
    from rating_edge.infer import make_runner
    from rating_edge.package import load_package
    from rating_edge.preprocess import prepare_doppler, prepare_gs
    from rating_edge.runtime.pairing import Pair
    from rating_edge.runtime.worker import Scorer

    nets, th = write_official(tmp_path, size)
    ck = tmp_path / "imported"
    assert main(["import-checkpoints", "--format", "rating-official", str(tmp_path / "checkpoints"), str(ck),
                 "--thresholds", str(tmp_path / "thresh_dict"), "--input-size", str(size)]) == 0
    pkg = load_package(export_package(ck, tmp_path / "pkg", fuse="stack"))
    assert pkg.preprocess.profile == "rating-official" and pkg.spec.head == "linear2"
    cases = phantom_cases(n_pairs)
    ref = official_outputs(nets, th, cases, size)
    n_bits = 0
    with make_runner(pkg) as runner:
        scorer = Scorer(runner)
        for i, ((gs, dop, roi), want) in enumerate(zip(cases, ref)):
            # the engine inputs are the official images bit for bit
            assert np.array_equal(prepare_gs(gs, roi, pkg.preprocess), want["gs"])
            assert np.array_equal(prepare_doppler(dop, roi, pkg.preprocess), want["dop"])
            pair = Pair(i, i, float(i), 0, gs, dop, roi, roi, (0, 0, 1, 1), (0, 0, 1, 1), 1.0)
            res = scorer.score(pair)
            assert res.ok, res.error
            for (m, task, f, s), p_off in want["probs"].items():
                p = float((res.sh_prob if m == "sh" else res.vs_prob)[f, task, s])
                expected = 1.0 - p_off if task == 2 else p_off  # task 2 is stored as P(grade > 2)
                assert abs(p - expected) < 1e-4, (m, task, f, s, p, expected)
                bit = bool(res.scores[f"{m}_bits"][f, task, s])
                off = bool(want["bits"][(m, task, f, s)])
                assert bit == (not off if task == 2 else off), (i, m, task, f, s)
                n_bits += 1
            assert list(res.scores["sh_models"]) == want["grades"]["sh"]
            assert list(res.scores["vs_models"]) == want["grades"]["vs"]
            assert (int(res.scores["sh"]), int(res.scores["vs"]), int(res.scores["combined"])) == want["final"]
        scorer.close()
    assert n_bits == 60 * n_pairs
    # the special thresholds decide as the official code: 0.0 always, 0.9998 almost never
    return ref


def test_official_networks_give_official_grades(tmp_path):
    ref = _run_compat(tmp_path, 64, 8)
    assert all(r["bits"][("sh", 0, 0, 0)] == 1 for r in ref)  # threshold 0.0: s >= 0 always
    assert all(r["bits"][("vs", 2, 0, 0)] == 1 for r in ref)


def test_official_networks_at_224(tmp_path):
    _run_compat(tmp_path, 224, 2)


# ------------------------------------------------------------------------------------ import errors

def test_missing_and_ambiguous_networks_are_named(tmp_path):
    from rating_edge.model.official import find_networks

    write_official(tmp_path, 32)
    root = tmp_path / "checkpoints"
    gone = root / "DOPPLER" / folder_name("vs", CLASSES[1], 3, 1)
    (gone / "optimal_net_cls.pth").rename(tmp_path / "x.pth")
    gone.rename(gone.with_name(gone.name.replace("archs=18", "archs=34")))
    dup = root / "GSDOPPLER" / folder_name("sh", CLASSES[0], 2, 0)
    (dup.parent / (dup.name + "_copy")).mkdir()
    with pytest.raises(CheckpointError) as e:
        find_networks(tmp_path)
    msg = str(e.value)
    assert "fold2-vs-gt1-seed1" in msg and "lacks archs=18" in msg
    assert "fold1-sh-gt0-seed0" in msg and "2 folders match" in msg


def test_thresh_dict_cannot_run_code(tmp_path):
    import os

    from rating_edge.model.official import read_thresh_dict

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    p = tmp_path / "thresh_dict"
    p.write_bytes(pickle.dumps({"GSDOPPLER_SH_THRESH_DICT": Evil()}))
    with pytest.raises(CheckpointError, match="posix.system|nt.system|os.system"):
        read_thresh_dict(p)
    p.write_bytes(pickle.dumps({"a": {0: [np.float64(0.25), np.float32(0.5), 1]}}, protocol=2))
    assert float(read_thresh_dict(p)["a"][0][0]) == 0.25


def test_threshold_conversion_keeps_decisions():
    """Task 2: P(<=2) >= t  <=>  P(>2) > 1 - t, for the converted record (strict), at the edges too."""
    from rating_edge.model.official import CLASSES as OC
    from rating_edge.model.official import convert_thresholds
    from rating_edge.scoring import Thresholds

    vals = [0.0, 0.3, 0.5, 0.9998, 1.0]
    d = {k: {c: {0: {sp: {s: np.float64(vals[(sp + s + ci) % 5]) for s in range(2)} for sp in range(1, 6)}}
             for ci, c in enumerate(OC)} for k in ("GSDOPPLER_SH_THRESH_DICT", "DOPPLER_VASCULARITY_THRESH_DICT")}
    th = Thresholds.from_dict(convert_thresholds(d), 5, 2)
    for s_off in (0.0, 0.00019, 0.25, 0.5, 0.7, 0.99990, 1.0):
        p = np.full((5, 3, 2), s_off)
        p[:, 2, :] = 1.0 - s_off  # what the swapped network outputs
        bits = th.decide("sh", p)
        for f in range(5):
            for s in range(2):
                for task in range(3):
                    t = vals[(f + 1 + s + task) % 5]
                    off = s_off >= t
                    assert bool(bits[f, task, s]) == ((not off) if task == 2 else off), (s_off, t, task)


@pytest.mark.slow
def test_explain_official_matches_captum_on_the_official_networks(tmp_path):
    """`explain --method official` on the imported networks = captum run on the official networks."""
    pytest.importorskip("captum")
    from captum.attr import IntegratedGradients, NoiseTunnel

    from rating_edge.export.explain import _captum_normalize, official_heatmaps
    from rating_edge.model.official import import_official
    from rating_edge.model.reference import load_ensemble
    from rating_edge.preprocess import PreprocessParams, prepare_doppler, prepare_gs

    size = 32
    nets, _ = write_official(tmp_path, size)
    import_official(tmp_path / "checkpoints", tmp_path / "thresh_dict", tmp_path / "ck", input_size=size)
    ref = load_ensemble(tmp_path / "ck")
    gs_img, dop_img, roi = phantom_cases(1)[0]
    x, y, w, h = roi
    x_gs, x_dop, _, _ = official_inputs(gs_img, dop_img, (x, y, x + w, y + h), (x, y, x + w, y + h), size)
    torch.manual_seed(0)
    want = {"gs": [], "doppler": []}
    for f in range(5):
        for s in range(2):
            net = nets[("sh", 0, f, s)]
            target = int(net(x_gs, x_dop).argmax(1)[0])
            attrs = NoiseTunnel(IntegratedGradients(net)).attribute((x_gs, x_dop), target=target, nt_samples=8,
                                                                     nt_type="smoothgrad_sq")
            for k, a in zip(("gs", "doppler"), attrs):
                want[k].append(_captum_normalize(a[0].detach().permute(1, 2, 0).numpy()))
    params = PreprocessParams.official(size)
    torch.manual_seed(0)
    got = official_heatmaps(ref, prepare_gs(gs_img, roi, params), prepare_doppler(dop_img, roi, params))
    for k in ("gs", "doppler"):
        m = np.mean(want[k], axis=0)
        assert got[k].shape == (size, size) and 0.0 <= got[k].min() and got[k].max() <= 1.0
        assert np.abs(got[k] - m).max() < 1e-3, k


def test_linear2_export_matches_reference_with_gradcam(tmp_path):
    """The fused `stack` graph of linear2 heads (folded into one vector, constant Grad-CAM weights)
    against the eager networks and autograd Grad-CAM, under the exact-export gates."""
    from rating_edge.export.exporter import export_package
    from rating_edge.export.verify import verify_package
    from rating_edge.model.init import write_random_ensemble
    from rating_edge.spec import EnsembleSpec

    spec = EnsembleSpec(folds=1, width=8, input_size=32, hidden=8, head="linear2")
    write_random_ensemble(tmp_path / "ck", spec, seed=3)
    export_package(tmp_path / "ck", tmp_path / "pkg", fuse="stack")
    rng = np.random.default_rng(0)
    gs = rng.integers(0, 256, (3, 32, 32, 3), np.uint8)
    dop = rng.integers(0, 256, (3, 32, 32, 3), np.uint8)
    rep = verify_package(tmp_path / "pkg", tmp_path / "ck", gs, dop)
    assert rep["passed"], rep["failures"]


def test_calibration_check_knows_the_official_profile():
    """A calibration set of official inputs is accepted for an official package; raw colour Doppler is not."""
    from rating_edge.calibration.calibset import content_problems
    from rating_edge.preprocess import PreprocessParams, prepare_doppler, prepare_gs

    params = PreprocessParams.official(64)
    cases = phantom_cases(3)
    gs = np.stack([prepare_gs(g, r, params) for g, _, r in cases])
    dop = np.stack([prepare_doppler(d, r, params) for _, d, r in cases])
    assert not content_problems(gs, dop, "rating-official")
    raw = dop.copy()
    raw[:, 10:30, 10:30] = (200, 30, 30)  # red flow left unpainted, as an untransformed colour Doppler crop
    assert any("rating-official" in p for p in content_problems(gs, raw, "rating-official"))
