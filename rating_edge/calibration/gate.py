"""What INT8 did to the grades: agreement with FP32 per ensemble output and per member, and which
layers caused it.

The gate is on the combined score (what a clinician reads), but in a fused stack one activation scale
serves every member of the stack, so one member can break while the average looks fine: the report
therefore lists every network's binary agreement and every scoring model's grade agreement.
"""
from __future__ import annotations

import numpy as np

from rating_edge.compare import (
    HEAT_KEYS,
    PROB_KEYS,
    finite_rows,
    grade_report,
    heat_correlation,
    member_agreement,
)
from rating_edge.spec import network_id


def agreement_report(ref: dict, test: dict, spec, thresholds=None) -> dict:
    """Agreement of `test` with `ref` by the definitions of rating_edge.compare (NaN/Inf rule included).
    `thresholds`: the package's decision thresholds (scoring.Thresholds; None = 0.5 and ">"), so a
    member's agreement is on the decisions the grades are made of."""
    n = int(np.asarray(ref["sh_prob"]).shape[0])
    g = grade_report(ref, test, thresholds)
    agree = member_agreement(ref, test, thresholds)
    members = []
    for module in ("sh", "vs"):
        a, b = np.asarray(ref[f"{module}_prob"], np.float64), np.asarray(test[f"{module}_prob"], np.float64)
        for f in range(spec.folds):
            for task in range(spec.tasks):
                for s in range(spec.seeds):
                    d = np.abs(a[:, f, task, s] - b[:, f, task, s])
                    members.append({"network": network_id(f, module, task, s),
                                    "agreement": float(agree[module][f, task, s]),
                                    "max_abs_diff": float(np.max(d)) if np.isfinite(d).all() else float("inf")})
    models = [{"fold": f, "sh_agreement": g["per_fold"]["sh"][f] if "per_fold" in g else 0.0,
               "vs_agreement": g["per_fold"]["vs"][f] if "per_fold" in g else 0.0}
              for f in range(spec.folds)]
    rep = {
        "pairs": n,
        "combined_agreement": g["combined"]["agreement"],
        "sh_agreement": g["sh"]["agreement"],
        "vs_agreement": g["vs"]["agreement"],
        "combined_kappa_linear": g["combined"]["kappa_linear"],
        "member_agreement_min": min(m["agreement"] for m in members),
        "member_agreement_mean": float(np.mean([m["agreement"] for m in members])),
        "max_abs_prob_diff": max(m["max_abs_diff"] for m in members),
        "members": members,
        "models": models,
    }
    # NaN/Inf anywhere in a pair's outputs (a scale that lost an epsilon, an overflow) fails that pair
    # outright: a NaN heatmap would otherwise read as "no correlation to measure"
    bad = np.zeros(n, bool)
    for k in PROB_KEYS + HEAT_KEYS:
        if k in test:
            bad |= ~finite_rows(test[k])
    rep["nonfinite_pairs"] = int(bad.sum())
    for k in HEAT_KEYS:
        if k in ref and k in test:
            c = heat_correlation(ref[k], test[k])
            rep[f"{k}_corr_min"] = float(np.nanmin(c)) if np.isfinite(c).any() else 0.0
    return rep


def worst_members(rep: dict, k: int = 5) -> list[dict]:
    return sorted(rep["members"], key=lambda m: (m["agreement"], -m["max_abs_diff"]))[:k]


def node_sensitivity(fp32_path, qdq_path, feeds: dict, op_types, batch: int = 4) -> list[dict]:
    """Rank the quantized nodes of one graph by the error each adds.

    Both graphs are run with every quantized node's output exposed (the Q/DQ graph keeps FP32 tensor
    names); a node's relative error minus the largest relative error among its inputs' producers is
    the error that node's own quantization added. Errors are accumulated over small batches so the
    paper-size graphs fit in memory.
    """
    import onnx
    import onnxruntime as ort

    ref_m = onnx.load(str(fp32_path))
    nodes = [n for n in ref_m.graph.node if n.op_type in op_types]
    names = [n.output[0] for n in nodes]
    producer = {o: n for n in ref_m.graph.node for o in n.output}

    def _expose(model):
        have = {o.name for o in model.graph.output}
        for nm in names:
            if nm not in have:
                model.graph.output.append(onnx.helper.make_empty_tensor_value_info(nm))
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    q_m = onnx.load(str(qdq_path))
    q_have = {o for n in q_m.graph.node for o in n.output}
    keep = [i for i, nm in enumerate(names) if nm in q_have]
    names = [names[i] for i in keep]
    nodes = [nodes[i] for i in keep]
    s_ref, s_q = _expose(ref_m), _expose(q_m)
    err = np.zeros(len(names))
    ref2 = np.zeros(len(names))
    n = len(next(iter(feeds.values())))
    for s in range(0, n, batch):
        f = {k: v[s:s + batch] for k, v in feeds.items()}
        a = s_ref.run(names, f)
        b = s_q.run(names, f)
        for i, (x, y) in enumerate(zip(a, b)):
            err[i] += float(np.sum((x.astype(np.float64) - y) ** 2))
            ref2[i] += float(np.sum(x.astype(np.float64) ** 2))
    rel = np.sqrt(err / np.maximum(ref2, 1e-30))
    rel_of = dict(zip(names, rel))

    memo: dict = {}

    def _upstream(tensor, depth=0):
        """Largest relative error among the quantized nodes feeding `tensor` (through non-quantized ops)."""
        if tensor in rel_of:
            return rel_of[tensor]
        if tensor not in memo:
            node = producer.get(tensor)
            memo[tensor] = 0.0 if node is None or depth > 200 else max(
                (_upstream(t, depth + 1) for t in node.input if t), default=0.0)
        return memo[tensor]

    out = []
    for node, nm, r in zip(nodes, names, rel):
        upstream = max((_upstream(t) for t in node.input if t), default=0.0)
        out.append({"node": node.name, "op": node.op_type, "rel_error": float(r),
                    "added_error": float(max(0.0, r - upstream))})
    return sorted(out, key=lambda d: -d["added_error"])
