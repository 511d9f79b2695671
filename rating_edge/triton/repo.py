"""A Triton model repository for a package, in one of four forms.

Why several forms: Triton's ONNX Runtime, TensorRT and OpenVINO backends are only in NVIDIA's server
containers, while the `python` form runs the toolkit's own runner inside any Triton (CPU included, e.g. the
server bundled with nvidia-pytriton), so it is the one the tests can serve for real. Every form carries the
package's identity (`rating-edge.json` beside the config, and the model hash as a config parameter) so a
client can check that it talks to the model it expects before it shows a single grade.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from rating_edge.errors import RatingEdgeError
from rating_edge.package import Package, load_package, sha256_file

MODEL_NAME = "rating"
FORMS = ("python", "onnxruntime", "tensorrt", "openvino")
HASH_PARAM = "rating_edge_model_hash"
MANIFEST = "rating-edge.json"
QUEUE_DELAY_US = 2000  # long enough for a few scanners' requests to meet, short next to one inference


def output_shapes(pkg: Package) -> dict:
    """Per-pair output shapes (no batch dimension), from one inference on a zero pair: the heatmap size
    depends on the graph (Grad-CAM on the last block), not on anything written in model.json."""
    from rating_edge.infer import make_runner

    s = pkg.spec.input_size
    z = np.zeros((1, s, s, 3), np.uint8)
    with make_runner(pkg, "ort") as r:
        out = r.infer({"gs": z, "doppler": z})
    return {k: list(np.shape(out[k])[1:]) for k in ("sh_prob", "vs_prob", "heat_gs", "heat_doppler")}


def _dims(shape, batched: bool, fixed: int | None) -> str:
    dims = list(shape) if batched else [fixed or 1, *shape]
    return "[ " + ", ".join(str(int(d)) for d in dims) + " ]"


def config_text(pkg: Package, form: str, shapes: dict, max_batch: int, instances: int, kind: str,
                plan_files: dict | None = None, runner_backend: str = "ort") -> str:
    """config.pbtxt for `form`. A package exported with a fixed batch has the batch inside its graph, so
    Triton must not add one (max_batch_size 0, explicit first dimension) and cannot batch across clients."""
    fixed = pkg.meta.get("batch", "dynamic")
    batched = fixed == "dynamic" or form == "python"
    fixed_n = None if fixed == "dynamic" else int(fixed)
    s = pkg.spec.input_size
    lines = [f'name: "{MODEL_NAME}"']
    if form == "python":
        lines.append('backend: "python"')
    elif form == "onnxruntime":
        lines += ['platform: "onnxruntime_onnx"', 'default_model_filename: "model.onnx"']
    elif form == "tensorrt":
        lines.append('platform: "tensorrt_plan"')
        if plan_files:
            lines.append("cc_model_filenames [")
            lines.append(",\n".join(f'  {{ key: "{cc}" value: "{f}" }}' for cc, f in sorted(plan_files.items())))
            lines.append("]")
    elif form == "openvino":
        lines += ['backend: "openvino"', 'default_model_filename: "model.xml"']
    lines.append(f"max_batch_size: {max_batch if batched else 0}")
    lines.append("input [")
    lines.append(",\n".join(f'  {{ name: "{n}" data_type: TYPE_UINT8 dims: {_dims([s, s, 3], batched, fixed_n)} }}'
                            for n in ("gs", "doppler")))
    lines.append("]")
    lines.append("output [")
    lines.append(",\n".join(f'  {{ name: "{n}" data_type: TYPE_FP32 dims: {_dims(shapes[n], batched, fixed_n)} }}'
                            for n in ("sh_prob", "vs_prob", "heat_gs", "heat_doppler")))
    lines.append("]")
    if batched and max_batch > 1:
        lines.append(f"dynamic_batching {{ max_queue_delay_microseconds: {QUEUE_DELAY_US} }}")
    lines.append(f"instance_group [ {{ count: {instances} kind: {'KIND_GPU' if kind == 'gpu' else 'KIND_CPU'} }} ]")
    warm_dims = [s, s, 3] if batched else [fixed_n or 1, s, s, 3]
    inputs = ", ".join(f'{{ key: "{n}" value: {{ data_type: TYPE_UINT8 dims: [ {", ".join(map(str, warm_dims))} ] '
                       f"random_data: true }} }}" for n in ("gs", "doppler"))
    lines.append(f'model_warmup [ {{ name: "pair" batch_size: 1 inputs [ {inputs} ] }} ]')
    params = {HASH_PARAM: pkg.model_hash}
    if form == "python":
        params["runner_backend"] = runner_backend
    lines.append("parameters [")
    lines.append(",\n".join(f'  {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items()))
    lines.append("]")
    return "\n".join(lines) + "\n"


def parse_config(text: str):
    """The config as Triton reads it (tritonclient's ModelConfig protobuf): catches misspelt fields and
    wrong types for the forms whose backends are not on this machine."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise RatingEdgeError("checking a Triton config needs tritonclient: pip install 'rating-edge[triton]'") from None
    try:
        return text_format.Parse(text, model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise RatingEdgeError(f"generated config.pbtxt is not a valid Triton ModelConfig: {e}") from None


def _fused_onnx(pkg: Package) -> Path:
    recs = pkg.graphs()
    if len(recs) != 1 or recs[0].get("kind", "fused") != "fused":
        raise RatingEdgeError(f"{pkg.path}: a Triton ONNX/OpenVINO/TensorRT model needs one fused graph; this package "
                              f"has {len(recs)} graphs ({pkg.strategy}): export it with --fuse stack, or use "
                              "--backend python")
    if any(p.name.endswith(".data") for p in pkg.path.iterdir()):
        raise RatingEdgeError(f"{pkg.path}: graphs with external data are not supported by the Triton repository "
                              "writer yet; use --backend python")
    return pkg.file(recs[0]["file"])


def write_repository(package, out, form: str = "python", max_batch: int = 8, instances: int = 1,
                     kind: str = "cpu", runner_backend: str = "ort") -> Path:
    """Write `out/rating/...` for `package` and return the model folder."""
    pkg = package if isinstance(package, Package) else load_package(package)
    if form not in FORMS:
        raise RatingEdgeError(f"unknown Triton form {form!r}; choose one of: {', '.join(FORMS)}")
    if max_batch < 1 or instances < 1:
        raise RatingEdgeError("--max-batch and --instances must be at least 1")
    if kind not in ("cpu", "gpu"):
        raise RatingEdgeError(f"--kind must be cpu or gpu, not {kind!r}")
    if form == "tensorrt" and kind != "gpu":
        raise RatingEdgeError("TensorRT plans run on GPU instances only: use --kind gpu")
    out = Path(out)
    model = out / MODEL_NAME
    if model.exists():
        raise RatingEdgeError(f"{model} exists: choose an empty repository folder (nothing is overwritten)")
    shapes = output_shapes(pkg)
    staging = out / f".{MODEL_NAME}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    version = staging / "1"
    version.mkdir(parents=True)
    plan_files = None
    if form == "python":
        shutil.copy2(Path(__file__).with_name("python_model.py"), version / "model.py")
        shutil.copytree(pkg.path, version / "package", symlinks=False)
        # the toolkit that wrote the repository travels with it: the server runs exactly this runner
        # code, and its Python needs only numpy, OpenCV and ONNX Runtime
        src = Path(__file__).resolve().parents[1]
        shutil.copytree(src, version / "rating_edge", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    elif form == "onnxruntime":
        shutil.copy2(_fused_onnx(pkg), version / "model.onnx")
    elif form == "openvino":
        try:
            import openvino as ov
        except ImportError:
            raise RatingEdgeError("the openvino form converts the ONNX to OpenVINO IR: pip install "
                                  "'rating-edge[openvino]'") from None
        ov.save_model(ov.convert_model(str(_fused_onnx(pkg))), str(version / "model.xml"))
    elif form == "tensorrt":
        engines = [e for e in pkg.meta.get("engines", []) if e.get("kind", "fused") == "fused"
                   and e.get("dla_core") is None]
        if not engines:
            raise RatingEdgeError(f"{pkg.path}: no fused TensorRT engine to serve; build one on the GPU server "
                                  f"(rating-edge build {pkg.path}) and write the repository there")
        plan_files = {}
        for e in engines:
            cc = str(e.get("compute_capability", "")).replace(".", "_")
            name = f"model_sm{cc}.plan"
            if cc in plan_files:
                continue  # one plan per compute capability (the first: INT8 engines are listed first)
            shutil.copy2(pkg.file(e["file"]), version / name)
            plan_files[cc] = name
    text = config_text(pkg, form, shapes, max_batch, instances, kind, plan_files, runner_backend)
    parse_config(text)
    (staging / "config.pbtxt").write_text(text)
    files = {str(p.relative_to(staging)): sha256_file(p) for p in sorted(staging.rglob("*")) if p.is_file()}
    manifest = {"model": MODEL_NAME, "form": form, "model_hash": pkg.model_hash, "package": str(pkg.path),
                "spec": pkg.meta.get("spec"), "outputs": shapes, "max_batch_size": max_batch,
                "package_artifacts": {k: v.get("sha256") for k, v in pkg.meta.get("artifacts", {}).items()},
                "files": files}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
    staging.rename(model)
    return model
