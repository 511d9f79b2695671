"""`rating-edge train` / `rating-edge evaluate` end to end, on checkpoints and (without torch) on packages."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from test_train_toydata import write_toy_dataset
from typer.testing import CliRunner

from rating_edge.cli import app
from rating_edge.spec import EnsembleSpec
from rating_edge.train.config import TrainConfig
from rating_edge.train.recipe import train_ensemble

SMALL = EnsembleSpec(folds=2, seeds=1, width=4, input_size=32, hidden=8)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = tmp_path_factory.mktemp("ev")
    data = write_toy_dataset(base / "data", n=16, patients=6)
    ck = base / "ck"
    r = train_ensemble(data, ck, SMALL, TrainConfig(epochs=1, head_epochs=2, batch=8), show_progress=False)
    assert r.complete
    return data, ck


def test_cli_train_tiny_is_resumable(tmp_path):
    data = write_toy_dataset(tmp_path / "data", n=10, patients=5)
    out = tmp_path / "ck"
    runner = CliRunner()
    args = ["train", str(data), str(out), "--preset", "tiny", "--epochs", "1", "--head-epochs", "1",
            "--max-networks", "2", "--no-progress"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "incomplete" in res.output and "58 networks left" in res.output
    res = runner.invoke(app, args[:-3] + ["--max-networks", "1", "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "kept 2 already trained" in res.output
    state = json.loads((out / "train_state.json").read_text())
    assert len(state["networks"]) == 3


def test_cli_train_reports_bad_data(tmp_path):
    from rating_edge.cli import main

    assert main(["train", str(tmp_path / "nothing"), str(tmp_path / "o"), "--preset", "tiny"]) == 2


def test_cli_evaluate_checkpoint_json(trained, tmp_path):
    data, ck = trained
    out = tmp_path / "m.json"
    res = CliRunner().invoke(app, ["evaluate", str(ck), str(data), "--json", str(out), "--bootstrap", "50",
                                   "--plots", str(tmp_path / "pics")])
    assert res.exit_code == 0, res.output
    assert {p.name for p in (tmp_path / "pics").iterdir()} == {f"{n}.{e}" for n in ("roc", "confusion", "youden")
                                                               for e in ("png", "svg")}
    r = json.loads(out.read_text())
    assert r["n"] == 16 and r["model"]["kind"] == "checkpoint"
    assert set(r["accuracy"]) == {"sh", "vs", "combined"}
    assert set(r["youden"]) == {"combined_gt0", "combined_gt1", "combined_gt2"}
    assert np.array(r["confusion"]["combined"]).sum() == 16
    assert r["bootstrap"]["resamples"] == 50
    assert "Confusion matrix" in res.output and "AUC" in res.output


def test_evaluate_batches_agree(trained):
    from rating_edge.evaluate import predict_dataset

    data, ck = trained
    a, la, _, _ = predict_dataset(ck, data, batch=16)
    b, lb, _, _ = predict_dataset(ck, data, batch=3)
    assert np.array_equal(la, lb)
    np.testing.assert_allclose(a["sh_prob"], b["sh_prob"], atol=1e-5)


def test_evaluate_package_without_torch(trained, tmp_path):
    pytest.importorskip("onnxruntime")
    exporter = pytest.importorskip("rating_edge.export.exporter")
    data, ck = trained
    pkg = tmp_path / "pkg"
    exporter.export_package(ck, pkg, fuse="stack")
    code = ("import sys, json; from rating_edge.evaluate import evaluate_model; "
            f"r = evaluate_model({str(pkg)!r}, {str(data)!r}, bootstrap=20, batch=5); "
            "assert 'torch' not in sys.modules, 'evaluate imported torch for a package'; "
            "print(json.dumps(r))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    r_pkg = json.loads(out.stdout.strip().splitlines()[-1])
    from rating_edge.evaluate import evaluate_model

    r_ck = evaluate_model(ck, data, bootstrap=20)
    assert r_pkg["model"]["kind"] == "package"
    for k in ("accuracy", "kappa_linear", "confusion", "youden", "label_counts"):
        assert r_pkg[k] == r_ck[k], k  # same grades from the package as from the eager checkpoint
    for m in ("sh", "vs"):
        for t in ("gt0", "gt1", "gt2"):
            a, b = r_pkg["auc"][m][t]["value"], r_ck["auc"][m][t]["value"]
            assert (a is None and b is None) or abs(a - b) < 1e-3


def test_evaluate_rejects_unknown_model_folder(tmp_path):
    from rating_edge.cli import main

    write_toy_dataset(tmp_path / "d", n=4, patients=2)
    (tmp_path / "m").mkdir()
    assert main(["evaluate", str(tmp_path / "m"), str(tmp_path / "d")]) == 2
