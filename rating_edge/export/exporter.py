"""`export_package`: checkpoint folder -> model package (model.json + ONNX graphs), checked and hashed."""
from __future__ import annotations

from pathlib import Path

from rating_edge.errors import RatingEdgeError
from rating_edge.export.graph import GraphBuilder, check_graph, check_opset
from rating_edge.export.planner import (
    STREAMS,
    check_chunk,
    plan_fusion,
    single_network_plan,
)
from rating_edge.export.weights import CheckpointReader, backbone_params
from rating_edge.model.checkpoint import checkpoint_hashes
from rating_edge.package import write_model_json
from rating_edge.preprocess import PreprocessParams
from rating_edge.publish import publish, require_new_folder

STRATEGIES = ("none", "stack")
INLINE_LIMIT = 1 << 30  # graphs whose weights exceed 1 GiB keep them in an external .data file


def checkpoint_preprocess(manifest: dict, spec) -> PreprocessParams:
    """The preprocessing the networks were made with (the checkpoint's meta.preprocess, e.g. the
    `rating-official` profile of imported official networks), at the spec's input size."""
    pp = (manifest.get("meta") or {}).get("preprocess")
    if isinstance(pp, dict):
        return PreprocessParams.from_dict({**pp, "input_size": spec.input_size})
    return PreprocessParams(input_size=spec.input_size)


def check_batch_option(batch) -> str | int:
    if batch in ("dynamic", None):
        return "dynamic"
    if str(batch) == "1":
        return 1
    raise RatingEdgeError(f"--batch must be 'dynamic' or 1, got {batch!r}")


def _graph(b_opset: int, path: Path, external: bool, build, name: str) -> list[str]:
    """Build one graph file (plus its data file when external); returns the files written."""
    data = path.with_name(path.name + ".data") if external else None
    b = GraphBuilder(b_opset, data)
    try:
        build(b)
        b.save(path, name)
    finally:
        b.close()
    check_graph(path)
    return [path.name] + ([data.name] if data is not None else [])


def export_package(ckpt_dir, out_dir, fuse: str = "stack", chunk=None, opset: int = 17, batch="dynamic",
                   dedup: bool = True, log=None) -> Path:
    """Export a checkpoint folder as a model package; returns the package folder.

    `chunk`: None (one stack per input stream), an int (members per stack; 1 = separate branches), or
    "auto" (time candidate chunk sizes on this machine with ONNX Runtime and keep the fastest).
    """
    from rating_edge.export.fused import build_fused, build_network_graph

    if fuse not in STRATEGIES:
        extra = " (`distill` is made by `rating-edge distill`)" if fuse == "distill" else ""
        raise RatingEdgeError(f"unknown fusion strategy {fuse!r}; choose one of {', '.join(STRATEGIES)}{extra}")
    opset = check_opset(opset)
    batch = check_batch_option(batch)
    auto = isinstance(chunk, str) and chunk == "auto"
    if not auto:
        chunk = check_chunk(chunk)
    out = Path(out_dir)
    require_new_folder(out)
    reader = CheckpointReader(ckpt_dir)
    spec = reader.spec
    hashes = checkpoint_hashes(ckpt_dir)
    say = log or (lambda msg: None)

    fusion: dict = {"strategy": fuse}
    with publish(out) as tmp:
        tmp.mkdir()
        graphs = []
        files: list[str] = []
        if fuse == "stack":
            plan = plan_fusion(reader, None, dedup)
            if auto:
                from rating_edge.export.autochunk import choose_chunk

                sizes = {s: len(plan.unique[s]) for s in STREAMS}
                chunk, timings = choose_chunk(spec, sizes, opset, log=say)
                fusion["auto_chunk"] = timings
            plan = plan_fusion(reader, chunk, dedup)
            fusion.update(plan.describe())
            n_unique = sum(len(u) for u in plan.unique.values())
            external = n_unique * backbone_params(spec.width) * 4 > INLINE_LIMIT
            say(f"stack: {fusion['dedup']['backbones_before']} backbones -> {n_unique} unique, "
                f"{len(fusion['stacks'])} stack(s), chunk {chunk}")
            files += _graph(opset, tmp / "model.onnx", external, lambda b: build_fused(b, reader, plan, batch),
                            "rating_ensemble")
            graphs.append({"file": "model.onnx", "kind": "fused"})
        else:
            (tmp / "networks").mkdir()
            fusion.update({"chunk": 1, "dedup": {"backbones_before": None, "backbones_after": None}})
            before = 0
            for nid in spec.network_ids():
                plan = single_network_plan(nid)
                before += sum(len(u) for u in plan.unique.values())
                rel = f"networks/{nid}.onnx"
                files += ["networks/" + f for f in _graph(
                    opset, tmp / rel, False, lambda b, p=plan: build_network_graph(b, reader, p, batch), nid)]
                graphs.append({"file": rel, "kind": "network", "network": nid})
            fusion["dedup"] = {"backbones_before": before, "backbones_after": before}
        meta = {
            "spec": spec.to_dict(),
            "preprocess": checkpoint_preprocess(reader.manifest, spec).to_dict(),
            "inputs": {s: {"dtype": "uint8", "layout": "NHWC", "channels": "RGB",
                           "shape": [batch, spec.input_size, spec.input_size, 3]} for s in STREAMS},
            "fusion": fusion,
            "precision": "fp32",
            "batch": batch,
            "opset": opset,
            "heat_size": spec.heat_size,
            "graphs": graphs,
            **({"thresholds": reader.manifest["thresholds"]} if reader.manifest.get("thresholds") else {}),
            "source": {"checkpoint": hashes, "checkpoint_path": str(Path(ckpt_dir).resolve()),
                       "checkpoint_meta": reader.manifest.get("meta", {})},
        }
        write_model_json(tmp, meta, files)
    return out
