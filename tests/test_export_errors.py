"""Bad inputs to export give one clear RatingEdgeError, and the CLI says what to run next."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from rating_edge.cli import main  # noqa: E402
from rating_edge.errors import CheckpointError, RatingEdgeError  # noqa: E402
from rating_edge.export.exporter import export_package  # noqa: E402
from rating_edge.model.init import write_random_ensemble  # noqa: E402
from rating_edge.spec import EnsembleSpec  # noqa: E402

SPEC = EnsembleSpec(folds=1, width=8, input_size=32, hidden=8)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("e") / "ck"
    write_random_ensemble(d, SPEC, seed=0)
    torch.set_num_threads(old)
    return d


def test_missing_network_in_manifest(ckpt, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    m = json.loads((bad / "ensemble.json").read_text())
    del m["networks"]["fold0-vs-gt2-seed1"]
    (bad / "ensemble.json").write_text(json.dumps(m))
    with pytest.raises(CheckpointError, match="fold0-vs-gt2-seed1 is missing"):
        export_package(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_network_file(ckpt, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    (bad / "networks" / "fold0-sh-gt1-seed0.safetensors").unlink()
    with pytest.raises(CheckpointError, match="fold0-sh-gt1-seed0.*missing"):
        export_package(bad, tmp_path / "out")


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        export_package(tmp_path / "nope", tmp_path / "out")


@pytest.mark.parametrize("opset", [11, 12, 22])
def test_unsupported_opset_names_the_range(ckpt, tmp_path, opset):
    with pytest.raises(RatingEdgeError, match=r"unsupported opset .*13 to 21"):
        export_package(ckpt, tmp_path / "out", opset=opset)


def test_output_exists(ckpt, tmp_path):
    """The output-folder rule (docs/hardening-packages.md): a non-empty folder is refused."""
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(RatingEdgeError, match="exists and is not empty"):
        export_package(ckpt, tmp_path / "out")


@pytest.mark.parametrize("kw,msg", [({"chunk": 0}, "at least 1"), ({"chunk": "x"}, "positive integer or 'auto'"),
                                    ({"fuse": "grouped"}, "unknown fusion strategy"), ({"batch": 4}, "dynamic")])
def test_bad_options(ckpt, tmp_path, kw, msg):
    with pytest.raises(RatingEdgeError, match=msg):
        export_package(ckpt, tmp_path / "out", **kw)


def test_cli_export_prints_next_command_and_errors_are_one_line(ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["export", str(ckpt), str(tmp_path / "pkg"), "--chunk", "2"]) == 0
    err = capsys.readouterr().err
    assert f"rating-edge verify {tmp_path / 'pkg'} --reference {ckpt}" in err
    assert (tmp_path / "pkg" / "model.json").is_file()
    assert main(["export", str(ckpt), str(tmp_path / "pkg")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err
    assert main(["export", str(ckpt), str(tmp_path / "p2"), "--opset", "9"]) == 2
    assert "13 to 21" in capsys.readouterr().err
