"""Emit the ensemble (or one network of it) as an ONNX graph from a fusion plan.

A stack of N backbones reading the same input is one chain: the stem is a dense conv with N*width
outputs, every later conv is grouped (groups=N), BatchNorm is folded, and residual adds and pools act
on the concatenated channels. Heads are batched MatMuls over gathered features. P(grade > t) is
softmax(z)[1] = sigmoid(z1 - z0).

Grad-CAM needs no backward pass for these heads: for an SH network, d(z1 - z0)/d(pooled features) =
((W2[1] - W2[0]) * 1[h > 0]) @ W1, and alpha = that / (h*w) on F's and G's slices (rating_edge.heatmap).
With the "linear2" head (no activation, the authors' published head) the gradient is the constant
(W2[1] - W2[0]) @ W1, so each head folds into one vector and alpha is a constant.
"""
from __future__ import annotations

import numpy as np
from onnx import TensorProto

from rating_edge.export.graph import GraphBuilder
from rating_edge.export.planner import STREAMS, Plan
from rating_edge.export.weights import CheckpointReader, resnet18_layers
from rating_edge.heatmap import HEAT_EPS, HEAT_TASK
from rating_edge.preprocess import IMAGENET_MEAN, IMAGENET_STD
from rating_edge.spec import EnsembleSpec, parse_network_id


def emit_input(b: GraphBuilder, name: str, size: int, batch) -> str:
    """uint8 RGB NHWC -> float NCHW, the same float32 arithmetic as rating_edge.preprocess.normalize."""
    x = b.add_input(name, TensorProto.UINT8, [batch, size, size, 3])
    x = b.op("Transpose", [x], perm=[0, 3, 1, 2])
    x = b.op("Cast", [x], to=TensorProto.FLOAT)
    x = b.op("Mul", [x, b.const("inv255", np.asarray(1.0 / 255.0, np.float32))])
    x = b.op("Sub", [x, b.const("mean", np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1))])
    return b.op("Div", [x, b.const("std", np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1))], base=f"{name}_norm")


def _conv(b: GraphBuilder, reader: CheckpointReader, refs: list, layer, x: str, grouped: bool) -> str:
    ws, bs = zip(*(reader.folded(r, layer) for r in refs))
    w = b.const(layer.conv + ".w", np.concatenate(ws, 0))
    bias = b.const(layer.conv + ".b", np.concatenate(bs, 0))
    del ws, bs
    return b.op("Conv", [x, w, bias], base=layer.conv, group=len(refs) if grouped else 1,
                kernel_shape=[layer.k, layer.k], strides=[layer.stride, layer.stride], pads=[layer.pad] * 4)


def emit_stack(b: GraphBuilder, reader: CheckpointReader, refs: list, x: str, width: int) -> tuple[str, str]:
    """N backbones on input x -> (layer4 activations (B, N*8w, h, w), pooled features (B, N*8w, 1, 1))."""
    layers = resnet18_layers(width)
    y = b.op("Relu", [_conv(b, reader, refs, layers["stem"], x, grouped=False)])
    y = b.op("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    for c1, c2, ds in layers["blocks"]:
        h = b.op("Relu", [_conv(b, reader, refs, c1, y, grouped=True)])
        h = _conv(b, reader, refs, c2, h, grouped=True)
        identity = _conv(b, reader, refs, ds, y, grouped=True) if ds is not None else y
        y = b.op("Relu", [b.op("Add", [h, identity])])
    return y, b.op("GlobalAveragePool", [y])


def _gather(b: GraphBuilder, x: str, idx: list, total: int, axis: int) -> str:
    if list(idx) == list(range(total)):
        return x
    return b.op("Gather", [x, b.const("idx", np.asarray(idx, np.int64))], axis=axis)


def emit_networks(b: GraphBuilder, reader: CheckpointReader, plan: Plan, inputs: dict, spec: EnsembleSpec) -> dict:
    """Backbones, heads and Grad-CAMs of every network of the plan.

    Returns {"sh": (B, n_sh) probabilities in plan.sh_networks order, "vs": likewise,
    "cam_gs"/"cam_doppler": (B, h, w) mean of the SH task-0 cams (unnormalised)}; absent keys are absent.
    """
    d = spec.feature_dim
    hh = spec.heat_size
    feats, acts = {}, {}
    for s in STREAMS:
        u = len(plan.unique[s])
        if not u:
            continue
        parts = [emit_stack(b, reader, [plan.unique[s][i] for i in st], inputs[s], spec.width) for st in plan.stacks[s]]
        a = parts[0][0] if len(parts) == 1 else b.op("Concat", [p[0] for p in parts], axis=1)
        f = parts[0][1] if len(parts) == 1 else b.op("Concat", [p[1] for p in parts], axis=1)
        feats[s] = b.reshape(f, [0, u, d])  # (B, U, 8w)
        acts[s] = a
    out = {}
    sh = plan.sh_networks
    if sh:
        n = len(sh)
        heads = [reader.sh_head(nid) for nid in sh]
        idx = {s: [plan.uses[nid][s] for nid in sh] for s in STREAMS}
        xf = _gather(b, feats["gs"], idx["gs"], len(plan.unique["gs"]), 1)
        xg = _gather(b, feats["doppler"], idx["doppler"], len(plan.unique["doppler"]), 1)
        x = b.reshape(b.op("Concat", [xf, xg], axis=2), [0, n, 1, 2 * d])  # (B, n, 1, 16w)
        sel = [i for i, nid in enumerate(sh) if parse_network_id(nid)[2] == HEAT_TASK]
        inv_area = 1.0 / float(hh * hh)
        if spec.head == "linear2":
            # one linear map per network: z1 - z0 = wd . x + bd, and d(z1 - z0)/d(pooled) = wd is constant
            wd = np.stack([hd["wd"] for hd in heads])  # (n, 16w)
            z = b.op("Add", [b.op("MatMul", [x, b.const("H.wd", wd[:, :, None])]),
                             b.const("H.bd", np.asarray([hd["bd"] for hd in heads], np.float32)[:, None, None])])
            out["sh"] = b.reshape(b.op("Sigmoid", [z]), [-1, n])
            alphas = {s: [(wd[i, lo:lo + d].astype(np.float64) * inv_area).astype(np.float32)[None, :] for i in sel]
                      for s, lo in (("gs", 0), ("doppler", d))}
            for s in STREAMS if sel else ():
                a4 = b.reshape(acts[s], [0, len(plan.unique[s]), d, hh * hh])
                a4 = _gather(b, a4, [idx[s][i] for i in sel], len(plan.unique[s]), 1)  # (B, nc, 8w, hw)
                cam = b.op("Relu", [b.op("MatMul", [b.const(f"cam.{s}.alpha", np.stack(alphas[s])), a4])])
                out[f"cam_{s}"] = b.reshape(b.reduce("ReduceMean", cam, [1], keepdims=0), [-1, hh, hh])
        else:
            w1t = np.stack([hd["w1"].T for hd in heads])  # (n, 16w, hidden)
            pre = b.op("Add", [b.op("MatMul", [x, b.const("H0.w", w1t)]),
                               b.const("H0.b", np.stack([hd["b1"] for hd in heads])[:, None, :])])
            h = b.op("Relu", [pre])  # (B, n, 1, hidden)
            w2d = np.stack([hd["w2d"] for hd in heads])  # (n, hidden)
            z = b.op("Add", [b.op("MatMul", [h, b.const("H2.wd", w2d[:, :, None])]),
                             b.const("H2.bd", np.asarray([hd["b2d"] for hd in heads], np.float32)[:, None, None])])
            out["sh"] = b.reshape(b.op("Sigmoid", [z]), [-1, n])
            if sel:
                hs = _gather(b, h, sel, n, 1)  # (B, nc, 1, hidden)
                g = b.op("Mul", [b.op("Cast", [b.op("Greater", [hs, b.const("zero", np.zeros((), np.float32))])],
                                      to=TensorProto.FLOAT),
                                 b.const("cam.w2d", w2d[sel][:, None, :])])
                for s, lo in (("gs", 0), ("doppler", d)):
                    w1s = np.stack([(heads[i]["w1"][:, lo:lo + d].astype(np.float64) * inv_area).astype(np.float32)
                                    for i in sel])  # (nc, hidden, 8w)
                    alpha = b.op("MatMul", [g, b.const(f"cam.{s}.w1", w1s)])  # (B, nc, 1, 8w)
                    a4 = b.reshape(acts[s], [0, len(plan.unique[s]), d, hh * hh])
                    a4 = _gather(b, a4, [idx[s][i] for i in sel], len(plan.unique[s]), 1)  # (B, nc, 8w, hw)
                    cam = b.op("Relu", [b.op("MatMul", [alpha, a4])])  # (B, nc, 1, hw)
                    out[f"cam_{s}"] = b.reshape(b.reduce("ReduceMean", cam, [1], keepdims=0), [-1, hh, hh])
    vs = plan.vs_networks
    if vs:
        n = len(vs)
        heads = [reader.vs_head(nid) for nid in vs]
        xv = _gather(b, feats["doppler"], [plan.uses[nid]["doppler"] for nid in vs], len(plan.unique["doppler"]), 1)
        xv = b.reshape(xv, [0, n, 1, d])
        z = b.op("Add", [b.op("MatMul", [xv, b.const("fc.wd", np.stack([hd["wd"] for hd in heads])[:, :, None])]),
                         b.const("fc.bd", np.asarray([hd["bd"] for hd in heads], np.float32)[:, None, None])])
        out["vs"] = b.reshape(b.op("Sigmoid", [z]), [-1, n])
    return out


def normalize_heat(b: GraphBuilder, cam: str) -> str:
    """rating_edge.heatmap.normalize_heat inside the graph."""
    m = b.reduce("ReduceMax", cam, [1, 2], keepdims=1)
    return b.op("Div", [cam, b.op("Add", [m, b.const("eps", np.asarray(HEAT_EPS, np.float32))])])


def build_fused(b: GraphBuilder, reader: CheckpointReader, plan: Plan, batch) -> None:
    """The whole ensemble: package outputs sh_prob, vs_prob (B, folds, 3, seeds), heat_gs, heat_doppler."""
    spec = reader.spec
    inputs = {s: emit_input(b, s, spec.input_size, batch) for s in STREAMS}
    out = emit_networks(b, reader, plan, inputs, spec)
    shape = [batch, spec.folds, spec.tasks, spec.seeds]
    for m in ("sh", "vs"):
        b.add_output(b.reshape(out[m], [-1, spec.folds, spec.tasks, spec.seeds]), f"{m}_prob", TensorProto.FLOAT, shape)
    for s in STREAMS:
        b.add_output(normalize_heat(b, out[f"cam_{s}"]), f"heat_{s}", TensorProto.FLOAT,
                     [batch, spec.heat_size, spec.heat_size])


def build_network_graph(b: GraphBuilder, reader: CheckpointReader, plan: Plan, batch) -> None:
    """One network (`none`): inputs it reads, `prob` (B,), and for SH task 0 `cam_gs`/`cam_doppler`."""
    spec = reader.spec
    (nid,) = plan.networks
    _, module, task, _ = parse_network_id(nid)
    inputs = {s: emit_input(b, s, spec.input_size, batch) for s in STREAMS if plan.unique[s]}
    out = emit_networks(b, reader, plan, inputs, spec)
    b.add_output(b.reshape(out[module], [-1]), "prob", TensorProto.FLOAT, [batch])
    if module == "sh" and task == HEAT_TASK:
        for s in STREAMS:
            b.add_output(out[f"cam_{s}"], f"cam_{s}", TensorProto.FLOAT, [batch, spec.heat_size, spec.heat_size])
