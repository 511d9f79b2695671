"""Exactness of the `stack` and `none` exports against the eager reference (tiny ensembles)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from rating_edge.export.exporter import export_package  # noqa: E402
from rating_edge.export.gradcam import gradcam_reference  # noqa: E402
from rating_edge.infer import make_runner  # noqa: E402
from rating_edge.model.init import write_random_ensemble  # noqa: E402
from rating_edge.model.reference import load_ensemble  # noqa: E402
from rating_edge.package import load_package  # noqa: E402
from rating_edge.spec import EnsembleSpec  # noqa: E402

GATE = 1e-4
SMALL = EnsembleSpec(folds=2, width=8, input_size=32, hidden=16)


@pytest.fixture(scope="module")
def ckpts(tiny_ckpt, tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    write_random_ensemble(d / "shared", SMALL, seed=4, share_backbones=True)
    return {"tiny": tiny_ckpt, "shared": d / "shared"}


def _pairs(spec, n=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, spec.input_size, spec.input_size, 3), np.uint8),
            rng.integers(0, 256, (n, spec.input_size, spec.input_size, 3), np.uint8))


@pytest.fixture(scope="module")
def references(ckpts):
    out = {}
    for k, p in ckpts.items():
        ref = load_ensemble(p)
        gs, dop = _pairs(ref.spec)
        out[k] = (gs, dop, {**ref.predict_probs(gs, dop), **gradcam_reference(ref, gs, dop)})
    return out


def _run(pkg, gs, dop):
    with make_runner(pkg) as r:
        return r.infer({"gs": gs, "doppler": dop})


def _assert_matches(out, ref):
    for k in ("sh_prob", "vs_prob"):
        assert out[k].shape == ref[k].shape
        assert np.abs(out[k] - ref[k]).max() <= GATE, k
    for k in ("heat_gs", "heat_doppler"):
        assert out[k].shape == ref[k].shape
        assert np.abs(out[k] - ref[k]).max() <= 1e-4, k
        assert out[k].max() <= 1.0 + 1e-6 and out[k].min() >= 0.0


@pytest.mark.parametrize("which", ["tiny", "shared"])
@pytest.mark.parametrize("fuse", ["stack", "none"])
def test_export_matches_reference(ckpts, references, tmp_path, which, fuse):
    pkg = export_package(ckpts[which], tmp_path / "pkg", fuse=fuse)
    gs, dop, ref = references[which]
    _assert_matches(_run(pkg, gs, dop), ref)
    meta = load_package(pkg).meta
    assert meta["precision"] == "fp32" and meta["fusion"]["strategy"] == fuse
    assert set(meta["source"]["checkpoint"]["networks"]) == set(load_package(pkg).spec.network_ids())
    for rec in meta["graphs"]:
        onnx.checker.check_model(str(pkg / rec["file"]), full_check=True)
    if fuse == "none":
        assert len(meta["graphs"]) == len(load_package(pkg).spec.network_ids())
        g = onnx.load(str(pkg / "networks" / "fold0-vs-gt1-seed0.onnx"))
        assert [i.name for i in g.graph.input] == ["doppler"]
        assert [o.name for o in g.graph.output] == ["prob"]
        g = onnx.load(str(pkg / "networks" / "fold1-sh-gt0-seed1.onnx"))
        assert [o.name for o in g.graph.output] == ["prob", "cam_gs", "cam_doppler"]


def _conv_weight_count(path) -> int:
    m = onnx.load(str(path))
    inits = {t.name: int(np.prod(t.dims)) for t in m.graph.initializer}
    return sum(inits[n.input[1]] for n in m.graph.node if n.op_type == "Conv")


def test_dedup_shrinks_the_graph(ckpts, tmp_path):
    a = export_package(ckpts["shared"], tmp_path / "dedup", fuse="stack")
    b = export_package(ckpts["shared"], tmp_path / "nodedup", fuse="stack", dedup=False)
    d = load_package(a).meta["fusion"]["dedup"]
    # SMALL: 2 folds x 6 SH (F, G) + 2 folds x 6 VS = 36 backbones; shared per (fold, module): 2 F + 2 G + 2 VS
    assert (d["backbones_before"], d["backbones_after"]) == (36, 6)
    assert d["per_stream"] == {"gs": {"before": 12, "after": 2}, "doppler": {"before": 24, "after": 4}}
    assert _conv_weight_count(a / "model.onnx") * 6 == _conv_weight_count(b / "model.onnx")
    assert (a / "model.onnx").stat().st_size * 4 < (b / "model.onnx").stat().st_size


def test_chunking_does_not_change_outputs(ckpts, references, tmp_path):
    gs, dop, ref = references["shared"]
    outs = {}
    for chunk in (None, 1, 5):
        # without dedup: 12 GS + 24 Doppler backbones, so every chunk size really splits the stacks
        pkg = export_package(ckpts["shared"], tmp_path / f"c{chunk}", fuse="stack", chunk=chunk, dedup=False)
        stacks = load_package(pkg).meta["fusion"]["stacks"]
        assert len(stacks) == {None: 2, 1: 36, 5: 3 + 5}[chunk]
        assert all(len(s["members"]) <= (chunk or 24) for s in stacks)
        outs[chunk] = _run(pkg, gs, dop)
        _assert_matches(outs[chunk], ref)
    for chunk in (1, 5):
        for k in outs[None]:
            np.testing.assert_allclose(outs[chunk][k], outs[None][k], atol=1e-5, rtol=0)


@pytest.mark.parametrize("opset", [13, 18, 21])
def test_opsets_and_fixed_batch(ckpts, references, tmp_path, opset):
    gs, dop, ref = references["shared"]
    pkg = export_package(ckpts["shared"], tmp_path / "p", fuse="stack", opset=opset, batch=1)
    m = onnx.load(str(pkg / "model.onnx"))
    assert m.opset_import[0].version == opset
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    out = {k: np.concatenate([_run(pkg, gs[i:i + 1], dop[i:i + 1])[k] for i in range(len(gs))]) for k in ref}
    _assert_matches(out, ref)


def test_large_graphs_use_external_data(ckpts, references, tmp_path, monkeypatch):
    import rating_edge.export.exporter as ex

    monkeypatch.setattr(ex, "INLINE_LIMIT", 1000)
    pkg = export_package(ckpts["shared"], tmp_path / "ext", fuse="stack")
    meta = load_package(pkg).meta
    assert set(meta["artifacts"]) == {"model.onnx", "model.onnx.data"}
    assert (pkg / "model.onnx").stat().st_size < 100_000 < (pkg / "model.onnx.data").stat().st_size
    onnx.checker.check_model(str(pkg / "model.onnx"), full_check=True)
    gs, dop, ref = references["shared"]
    _assert_matches(_run(pkg, gs, dop), ref)
    # tampering with the external weights is refused like any artifact
    with open(pkg / "model.onnx.data", "r+b") as f:
        f.seek(4096)
        f.write(b"\x01\x02\x03\x04")
    from rating_edge.errors import PackageError

    with pytest.raises(PackageError, match="model.onnx.data"):
        load_package(pkg)


def test_chunk_auto_records_measurements(ckpts, tmp_path):
    pkg = export_package(ckpts["shared"], tmp_path / "auto", fuse="stack", chunk="auto")
    fusion = load_package(pkg).meta["fusion"]
    cands = fusion["auto_chunk"]["candidates"]
    assert set(cands) == {"1", "2", "4"}  # candidates are capped by the largest stream (4 unique Doppler)
    assert fusion["chunk"] == fusion["auto_chunk"]["chosen"]
    best = min(cands, key=lambda c: cands[c]["estimated_total_ms"])
    assert int(best) == fusion["chunk"]
    assert all(v["stack_ms"] > 0 for v in cands.values())
    json.dumps(fusion)
