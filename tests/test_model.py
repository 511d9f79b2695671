
import numpy as np
import pytest
import torch

from rating_edge.errors import RatingEdgeError
from rating_edge.model import SHNet, VSNet, load_ensemble, resnet18
from rating_edge.model.checkpoint import read_manifest
from rating_edge.model.init import write_random_ensemble
from rating_edge.spec import EnsembleSpec, network_id, parse_network_id, preset


def torchvision_resnet18_keys():
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    keys = ["conv1.weight"] + [f"bn1.{b}" for b in bn]
    for layer in range(1, 5):
        for block in range(2):
            p = f"layer{layer}.{block}"
            keys += [f"{p}.conv1.weight"] + [f"{p}.bn1.{b}" for b in bn]
            keys += [f"{p}.conv2.weight"] + [f"{p}.bn2.{b}" for b in bn]
            if block == 0 and layer > 1:
                keys += [f"{p}.downsample.0.weight"] + [f"{p}.downsample.1.{b}" for b in bn]
    return keys + ["fc.weight", "fc.bias"]


def test_resnet18_matches_torchvision_layout():
    m = resnet18(num_classes=1000, width=64)
    assert list(m.state_dict().keys()) == torchvision_resnet18_keys()
    assert sum(p.numel() for p in m.parameters()) == 11_689_512  # torchvision's resnet18 parameter count
    assert m.state_dict()["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)


def test_width_and_input_size_configurable():
    m = resnet18(2, width=8).eval()
    with torch.no_grad():
        assert m(torch.zeros(1, 3, 64, 64)).shape == (1, 2)
        assert m.feature_map(torch.zeros(1, 3, 64, 64)).shape == (1, 64, 2, 2)
    assert preset("tiny").heat_size == 2 and preset("paper").heat_size == 7


def test_sh_and_vs_networks():
    sh, vs = SHNet(8, 16).eval(), VSNet(8).eval()
    x = torch.zeros(2, 3, 64, 64)
    assert sh(x, x).shape == (2, 2) and vs(x, x).shape == (2, 2)
    assert sh.H[0].in_features == 128
    assert list(vs.state_dict().keys()) == [k for k in torchvision_resnet18_keys()]
    assert all(k.split(".")[0] in ("F", "G", "H") for k in sh.state_dict())


def test_network_ids():
    spec = preset("paper")
    ids = spec.network_ids()
    assert len(ids) == 60 and len(set(ids)) == 60
    assert parse_network_id(network_id(4, "vs", 2, 1)) == (4, "vs", 2, 1)
    with pytest.raises(RatingEdgeError):
        parse_network_id("fold0-xx-gt0-seed0")
    with pytest.raises(RatingEdgeError):
        EnsembleSpec(tasks=4)


# tiny_ckpt: the session-scoped random tiny ensemble from conftest.py


def test_reference_predict_probs(tiny_ckpt):
    ens = load_ensemble(tiny_ckpt)
    rng = np.random.default_rng(0)
    g = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    d = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    out = ens.predict_probs(g, d)
    assert out["sh_prob"].shape == out["vs_prob"].shape == (3, 5, 3, 2)
    assert np.all((out["sh_prob"] >= 0) & (out["sh_prob"] <= 1))
    # the SH network really reads both streams, the VS network only Doppler
    out2 = ens.predict_probs(255 - g, d)
    assert not np.allclose(out["sh_prob"], out2["sh_prob"])
    assert np.allclose(out["vs_prob"], out2["vs_prob"])
    # per-sample independence (eval mode, no batch statistics)
    single = ens.predict_probs(g[:1], d[:1])
    assert np.allclose(single["sh_prob"][0], out["sh_prob"][0], atol=1e-5)
    # random-init probabilities are spread, not saturated, so exactness tests can see differences
    assert 0.05 < np.abs(out["sh_prob"] - 0.5).mean() < 0.45


@pytest.mark.parametrize("bad", [
    np.zeros((1, 64, 64, 3), np.float32), np.zeros((1, 32, 32, 3), np.uint8),
    np.zeros((64, 64, 3), np.uint8), np.zeros((1, 64, 64, 1), np.uint8)])
def test_reference_rejects_bad_inputs(tiny_ckpt, bad):
    ens = load_ensemble(tiny_ckpt)
    good = np.zeros((1, 64, 64, 3), np.uint8)
    with pytest.raises(RatingEdgeError):
        ens.predict_probs(bad, good)


def test_reference_rejects_batch_mismatch(tiny_ckpt):
    ens = load_ensemble(tiny_ckpt)
    with pytest.raises(RatingEdgeError, match="differ"):
        ens.predict_probs(np.zeros((2, 64, 64, 3), np.uint8), np.zeros((1, 64, 64, 3), np.uint8))


def test_shared_backbones_are_identical_copies(tmp_path):
    write_random_ensemble(tmp_path, preset("tiny"), seed=1, share_backbones=True)
    from rating_edge.model.checkpoint import load_models

    _, models, _ = load_models(tmp_path)
    a, b = models["fold0-sh-gt0-seed0"], models["fold0-sh-gt2-seed1"]
    for k, v in a.F.state_dict().items():
        assert torch.equal(v, b.F.state_dict()[k])
    assert not torch.equal(a.H[2].weight, b.H[2].weight)
    c = models["fold1-sh-gt0-seed0"]
    assert not torch.equal(a.F.conv1.weight, c.F.conv1.weight)
    v0, v1 = models["fold2-vs-gt0-seed0"], models["fold2-vs-gt1-seed1"]
    assert torch.equal(v0.layer4[1].conv2.weight, v1.layer4[1].conv2.weight)
    assert not torch.equal(v0.fc.weight, v1.fc.weight)
    assert read_manifest(tmp_path)["meta"]["share_backbones"] is True
