"""Fixtures for the calibration/quantization tests: a tiny `none` package and a phantom-free image set.

The package is built here (not through rating_edge.export) so these tests keep testing the quantizer
even while the exporter changes; `test_quantize_export.py` covers the exporter's real packages.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from rating_edge.package import write_model_json  # noqa: E402
from rating_edge.preprocess import IMAGENET_MEAN, IMAGENET_STD, PreprocessParams  # noqa: E402
from rating_edge.spec import EnsembleSpec, parse_network_id  # noqa: E402


class _Wrapped(torch.nn.Module):
    """uint8 NHWC in, P(grade > t) out; SH task-0 networks also give Grad-CAM maps (package convention)."""

    def __init__(self, net, module: str, cams: bool):
        super().__init__()
        self.net, self.module, self.cams = net, module, cams
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)

    def _prep(self, x):
        return (x.permute(0, 3, 1, 2).float() - self.mean) / self.std

    def forward(self, *inputs):
        if self.module == "vs":
            z = self.net.fc(self.net.features(self._prep(inputs[0])))
            return torch.sigmoid(z[:, 1] - z[:, 0])
        gs, dop = (self._prep(x) for x in inputs)
        a_gs, a_dop = self.net.F.feature_map(gs), self.net.G.feature_map(dop)
        f = torch.cat([a_gs.mean((2, 3)), a_dop.mean((2, 3))], 1)
        lin1, lin2 = self.net.H[0], self.net.H[2]
        h = lin1(f)
        z = lin2(torch.relu(h))
        prob = torch.sigmoid(z[:, 1] - z[:, 0])
        if not self.cams:
            return prob
        w2 = (lin2.weight[1] - lin2.weight[0]).unsqueeze(0) * (h > 0).float()
        grad = w2 @ lin1.weight  # d(z1 - z0)/d features, (B, 2d); alpha = grad / (h*w) * (h*w) positions mean
        d = a_gs.shape[1]
        hw = a_gs.shape[2] * a_gs.shape[3]
        cam_gs = torch.relu((a_gs * (grad[:, :d, None, None] / hw)).sum(1))
        cam_dop = torch.relu((a_dop * (grad[:, d:, None, None] / hw)).sum(1))
        return prob, cam_gs, cam_dop


_ENSEMBLES: dict = {}


def init_ensemble(spec: EnsembleSpec, seed: int = 0) -> dict:
    """The foundation's random ensemble, made once per test session (it calibrates BatchNorm: slow)."""
    from rating_edge.model.init import init_ensemble as _init

    key = (spec, seed)
    if key not in _ENSEMBLES:
        _ENSEMBLES[key] = _init(spec, seed)
    return _ENSEMBLES[key]


def make_none_package(out: Path, spec: EnsembleSpec, seed: int = 0) -> Path:
    out = Path(out)
    (out / "networks").mkdir(parents=True)
    s = spec.input_size
    records = []
    for nid, net in init_ensemble(spec, seed).items():
        _, module, task, _ = parse_network_id(nid)
        cams = module == "sh" and task == 0
        w = _Wrapped(net.eval(), module, cams).eval()
        names_in = ["gs", "doppler"] if module == "sh" else ["doppler"]
        names_out = ["prob", "cam_gs", "cam_doppler"] if cams else ["prob"]
        x = tuple(torch.zeros(2, s, s, 3, dtype=torch.uint8) for _ in names_in)
        rel = f"networks/{nid}.onnx"
        torch.onnx.export(w, x, str(out / rel), input_names=names_in, output_names=names_out, opset_version=17,
                          dynamic_axes={n: {0: "batch"} for n in names_in + names_out}, dynamo=False)
        records.append({"file": rel, "kind": "network", "network": nid})
    meta = {"spec": spec.to_dict(), "preprocess": PreprocessParams(input_size=s).to_dict(),
            "inputs": {k: {"dtype": "uint8", "shape": ["B", s, s, 3], "layout": "NHWC RGB"} for k in ("gs", "doppler")},
            "fusion": {"strategy": "none"}, "precision": "fp32", "batch": "dynamic", "graphs": records,
            "variants": {}, "engines": []}
    write_model_json(out, meta)
    return out


def synthetic_pairs(n: int, size: int, seed: int = 0):
    """Smooth ultrasound-like GS images and transformed Doppler (gray + pure-red blobs), with grades.

    Brightness and the amount of red follow the grade so a trained-looking decision spread exists.
    """
    import cv2

    rng = np.random.default_rng(seed)
    gs, dop, labels = [], [], []
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        sh = i % 4
        vs = 0 if sh == 0 else (i // 4) % 4
        base = rng.normal(60 + 25 * sh, 30, (size // 4, size // 4)).clip(0, 255).astype(np.float32)
        img = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        img += 60 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.15 * size) ** 2))
        g = np.repeat(img.clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)
        d = g.copy()
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < (0.04 * size * (vs + 0.5)) ** 2 * (vs > 0)
        d[blob] = (255, 0, 0)
        gs.append(g)
        dop.append(d)
        labels.append((sh, vs, max(sh, vs)))
    return np.stack(gs), np.stack(dop), np.asarray(labels, np.int64)


class _Fused(torch.nn.Module):
    """All networks in one graph with the package's fused outputs (sh_prob, vs_prob, heat_*)."""

    def __init__(self, models: dict, spec: EnsembleSpec):
        super().__init__()
        self.spec = spec
        self.ids = list(models)
        self.nets = torch.nn.ModuleList(
            _Wrapped(m.eval(), parse_network_id(n)[1], parse_network_id(n)[1] == "sh" and parse_network_id(n)[2] == 0)
            for n, m in models.items())

    def forward(self, gs, dop):
        sp = self.spec
        probs = {"sh": [[[None] * sp.seeds for _ in range(sp.tasks)] for _ in range(sp.folds)],
                 "vs": [[[None] * sp.seeds for _ in range(sp.tasks)] for _ in range(sp.folds)]}
        cams_gs, cams_dop = [], []
        for nid, w in zip(self.ids, self.nets):
            f, module, task, seed = parse_network_id(nid)
            out = w(dop) if module == "vs" else w(gs, dop)
            if isinstance(out, tuple):
                out, cg, cd = out
                cams_gs.append(cg)
                cams_dop.append(cd)
            probs[module][f][task][seed] = out
        res = [torch.stack([torch.stack([torch.stack(s, 1) for s in t], 1) for t in probs[m]], 1) for m in ("sh", "vs")]
        heats = []
        for cams in (cams_gs, cams_dop):
            avg = torch.stack(cams, 0).mean(0)
            heats.append(avg / (avg.flatten(1).max(1).values[:, None, None] + 1e-8))
        return res[0], res[1], heats[0], heats[1]


def make_fused_package(out: Path, spec: EnsembleSpec, seed: int = 0) -> Path:
    """A one-graph (`fused` kind) package from a random ensemble, exported with torch in seconds."""
    out = Path(out)
    out.mkdir(parents=True)
    s = spec.input_size
    x = tuple(torch.zeros(2, s, s, 3, dtype=torch.uint8) for _ in range(2))
    names_out = ["sh_prob", "vs_prob", "heat_gs", "heat_doppler"]
    torch.onnx.export(_Fused(init_ensemble(spec, seed), spec).eval(), x, str(out / "model.onnx"),
                      input_names=["gs", "doppler"], output_names=names_out, opset_version=17,
                      dynamic_axes={n: {0: "batch"} for n in ["gs", "doppler"] + names_out}, dynamo=False)
    meta = {"spec": spec.to_dict(), "preprocess": PreprocessParams(input_size=s).to_dict(),
            "inputs": {k: {"dtype": "uint8", "shape": ["B", s, s, 3], "layout": "NHWC RGB"} for k in ("gs", "doppler")},
            "fusion": {"strategy": "stack"}, "precision": "fp32", "batch": "dynamic",
            "graphs": [{"file": "model.onnx", "kind": "fused"}], "variants": {}, "engines": []}
    write_model_json(out, meta)
    return out


def test_fused_helper_matches_none_helper(tmp_path):
    from rating_edge.infer import make_runner

    spec = EnsembleSpec(folds=1, width=8, input_size=64, hidden=32)
    gs, dop, _ = synthetic_pairs(3, 64)
    outs = []
    for make in (make_none_package, make_fused_package):
        with make_runner(make(tmp_path / make.__name__, spec), "ort") as r:
            outs.append(r.infer({"gs": gs, "doppler": dop}))
    for k in ("sh_prob", "vs_prob", "heat_gs", "heat_doppler"):
        np.testing.assert_allclose(outs[0][k], outs[1][k], atol=1e-4)
