import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from rating_edge.cli import app
from rating_edge.errors import CheckpointError
from rating_edge.model import load_ensemble
from rating_edge.model.checkpoint import load_models, read_manifest
from rating_edge.model.importer import import_checkpoints
from rating_edge.spec import preset


@pytest.fixture(scope="module")
def base(tiny_ckpt):
    return tiny_ckpt  # session-scoped (conftest.py); tests that change it get a copy (`ckpt`)


@pytest.fixture
def ckpt(base, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(base, dst)
    return dst


def test_roundtrip_is_bit_exact(ckpt):
    spec, models, manifest = load_models(ckpt)
    assert len(models) == 60 and spec == preset("tiny")
    nid = "fold3-sh-gt1-seed0"
    state = load_file(str(ckpt / manifest["networks"][nid]["file"]))
    for k, v in models[nid].state_dict().items():
        assert torch.equal(v, state[k])


def test_truncated_file_names_network(ckpt):
    f = ckpt / "networks" / "fold1-vs-gt2-seed1.safetensors"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="fold1-vs-gt2-seed1.*SHA-256"):
        load_models(ckpt)
    # even without hash checking, a truncated file is named, not a deep traceback
    with pytest.raises(CheckpointError, match="fold1-vs-gt2-seed1"):
        load_models(ckpt, verify_hash=False)


def test_tampered_tensor_names_network_and_tensor(ckpt):
    nid = "fold0-sh-gt0-seed1"
    f = ckpt / "networks" / f"{nid}.safetensors"
    state = load_file(str(f))
    state["H.0.weight"] = torch.zeros(5, 7)
    save_file(state, str(f))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_models(ckpt)
    with pytest.raises(CheckpointError, match=r"fold0-sh-gt0-seed1.*'H\.0\.weight'.*shape"):
        load_models(ckpt, verify_hash=False)


def test_missing_tensor_is_named(ckpt):
    nid = "fold2-vs-gt0-seed0"
    f = ckpt / "networks" / f"{nid}.safetensors"
    state = load_file(str(f))
    del state["layer3.1.bn2.running_var"]
    save_file(state, str(f))
    with pytest.raises(CheckpointError, match=r"fold2-vs-gt0-seed0.*'layer3\.1\.bn2\.running_var'.*missing"):
        load_models(ckpt, verify_hash=False)


def test_missing_network(ckpt):
    original = (ckpt / "ensemble.json").read_text()
    m = json.loads(original)
    del m["networks"]["fold4-sh-gt2-seed1"]
    (ckpt / "ensemble.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="fold4-sh-gt2-seed1 is missing"):
        read_manifest(ckpt)
    (ckpt / "networks" / "fold4-vs-gt0-seed0.safetensors").unlink()
    (ckpt / "ensemble.json").write_text(original)
    with pytest.raises(CheckpointError, match="fold4-vs-gt0-seed0.*missing"):
        load_models(ckpt)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_models(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="ensemble.json"):
        load_models(tmp_path)


def write_pth(base, tmp_path, prefix=""):
    _, models, _ = load_models(base)
    mapping = {}
    for nid, m in models.items():
        p = tmp_path / "pth" / f"{nid}.pth"
        p.parent.mkdir(exist_ok=True)
        torch.save({"state_dict": {prefix + k: v for k, v in m.state_dict().items()}}, p)
        mapping[nid] = f"pth/{nid}.pth"
    return mapping


def test_import_checkpoints_strips_module_prefix_and_matches(base, tmp_path):
    mapping = write_pth(base, tmp_path, prefix="module.")
    mp = tmp_path / "map.json"
    mp.write_text(json.dumps({"preset": "tiny", "networks": mapping}))
    out = tmp_path / "imported"
    import_checkpoints(mp, out)
    rng = np.random.default_rng(1)
    g = rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    a = load_ensemble(base).predict_probs(g, g)
    b = load_ensemble(out).predict_probs(g, g)
    assert np.array_equal(a["sh_prob"], b["sh_prob"]) and np.array_equal(a["vs_prob"], b["vs_prob"])


def test_import_yaml_missing_network_and_pickle(base, tmp_path):
    mapping = write_pth(base, tmp_path)
    del mapping["fold1-sh-gt0-seed0"]
    import yaml

    mp = tmp_path / "map.yaml"
    mp.write_text(yaml.safe_dump({"preset": "tiny", "networks": mapping}))
    with pytest.raises(CheckpointError, match="fold1-sh-gt0-seed0"):
        import_checkpoints(mp, tmp_path / "o1")

    class Evil:  # a pickle that would run code is refused by weights_only loading
        def __reduce__(self):
            return (print, ("owned",))

    mapping["fold1-sh-gt0-seed0"] = "pth/evil.pth"
    torch.save({"state_dict": Evil()}, tmp_path / "pth" / "evil.pth")
    mp.write_text(yaml.safe_dump({"preset": "tiny", "networks": mapping}))
    with pytest.raises(CheckpointError, match="fold1-sh-gt0-seed0.*cannot be loaded safely"):
        import_checkpoints(mp, tmp_path / "o2")


def test_cli_init_and_errors(tmp_path):
    r = CliRunner()
    res = r.invoke(app, ["init-ensemble", str(tmp_path / "e"), "--preset", "tiny", "--seed", "4", "--share-backbones"])
    assert res.exit_code == 0, res.output
    assert read_manifest(tmp_path / "e")["meta"]["share_backbones"]
    res = r.invoke(app, ["init-ensemble", str(tmp_path / "e"), "--preset", "tiny"])
    assert res.exit_code != 0
    res = r.invoke(app, ["init-ensemble", str(tmp_path / "f"), "--preset", "huge"])
    assert res.exit_code != 0


def test_cli_main_prints_clear_error(tmp_path, capsys):
    from rating_edge.cli import main

    rc = main(["import-checkpoints", str(tmp_path / "missing.json"), str(tmp_path / "o")])
    assert rc == 2
    assert "does not exist" in capsys.readouterr().err
