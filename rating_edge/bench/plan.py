"""Per-pair latency ESTIMATES for a model package on a target device, before anyone owns the device.

Why: the exact ensemble is large (docs/design/model.md: ~330 GFLOP and up to 2 GB of FP16 weights per pair
for the paper preset), so whether a Jetson reaches video rate depends on compute *and* on reading
every weight once per pair at batch 1. This module counts both from the package's ONNX graphs and
puts them against the device's datasheet peaks (a roofline), so users can pick device, precision and
fusion strategy up front. Nothing here runs the model; every number it prints is an estimate.

Counting (no weights are loaded: graphs are read with `load_external_data=False`, shapes come from
ONNX shape inference with the batch fixed to 1):
    MACs    Conv: N*Cout*Hout*Wout*(Cin/groups)*kh*kw;  Gemm: M*N*K;  MatMul: batch*M*N*K;
            ConvTranspose/ConvInteger/QLinearConv/MatMulInteger/QLinearMatMul the same way.
    bytes   weights: every initializer element once, at the precision's size (INT8 packages keep
            biases and scales in 32 bit, which this treats as negligible);
            activations: each MAC layer's output written once and read once, at the precision's
            size (elementwise ops are assumed fused into the producing layer, as TensorRT does);
            plus the two uint8 input images.
Model:
    compute_ms = 2*MACs / (peak_ops * compute_eff)
    memory_ms  = bytes  / (bandwidth * memory_eff)
    latency_ms = max(compute_ms, memory_ms) + layers * launch_us
with the efficiency factors and per-layer launch cost stated below (overridable). They are
assumptions, not measurements: TensorRT at batch 1 on small ResNet layers usually reaches well
under half of the tensor-core peak, and LPDDR5 sustains ~70% of its nominal bandwidth.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from rating_edge.errors import PackageError, RatingEdgeError

# Assumptions of the roofline (stated in every output).
COMPUTE_EFF = 0.40   # fraction of dense peak reached by batch-1 ResNet-18 layers
MEMORY_EFF = 0.70    # fraction of nominal DRAM bandwidth sustained
LAUNCH_US = 3.0      # per MAC layer: kernel launch / scheduling floor
TARGET_FPS = 30.0

BYTES = {"fp32": 4, "fp16": 2, "int8": 1}


@dataclass(frozen=True)
class Device:
    """Datasheet peaks. TOPS are DENSE (NVIDIA quotes Ampere INT8 with 2:4 sparsity; dense = half).

    FP16 here is the tensor-core dense rate; FP32 runs on the CUDA cores (cores * 2 * clock).
    """

    name: str
    title: str
    fp32_tflops: float
    fp16_tflops: float
    int8_tops: float
    dla_int8_tops: float       # dense, all DLA cores together; 0 where the module has none
    dla_fp16_tflops: float
    bandwidth_gbs: float
    memory_gb: float
    source: str


# Sources: NVIDIA module datasheets / product pages (figures as published; dense derived as stated).
DEVICES: dict[str, Device] = {d.name: d for d in [
    Device("orin-nano", "Jetson Orin Nano 8GB (JetPack 5/6 original clocks, 15 W)", 1.28, 10.0, 20.0, 0.0, 0.0,
           68.0, 8.0,
           "NVIDIA Jetson Orin Nano Series Data Sheet (DS-11105) and "
           "https://www.nvidia.com/en-us/autonomous-machines/embedded-systems/jetson-orin/ : 40 INT8 TOPS "
           "(sparse) -> 20 dense; 1024 CUDA cores + 32 tensor cores at 625 MHz; 128-bit LPDDR5 68 GB/s; no DLA. "
           "JetPack 6.1+ 'Super' mode (1020 MHz GPU, 102 GB/s) is about 1.6x these rates"),
    Device("orin-nx", "Jetson Orin NX 16GB (25 W)", 1.88, 15.0, 30.0, 20.0, 10.0, 102.4, 16.0,
           "NVIDIA Jetson Orin NX Series Data Sheet (DS-10712) and "
           "https://www.nvidia.com/en-us/autonomous-machines/embedded-systems/jetson-orin/ : 100 INT8 TOPS "
           "(sparse, GPU 60 + 2x NVDLA v2 40) -> 30 + 20 dense; 1024 CUDA cores + 32 tensor cores at 918 MHz; "
           "128-bit LPDDR5 102.4 GB/s"),
    Device("agx-orin", "Jetson AGX Orin 64GB (60 W)", 5.3, 42.5, 85.0, 52.5, 26.0, 204.8, 64.0,
           "NVIDIA Jetson AGX Orin Series Data Sheet (DS-10662) and "
           "https://www.nvidia.com/en-us/autonomous-machines/embedded-systems/jetson-orin/ : 275 INT8 TOPS "
           "(sparse, GPU 170 + 2x NVDLA v2 105) -> 85 + 52.5 dense; GPU 5.3 FP32 TFLOPS; 2048 CUDA cores + "
           "64 tensor cores at 1.3 GHz; 256-bit LPDDR5 204.8 GB/s"),
    Device("xavier-nx", "Jetson Xavier NX 8GB (20 W)", 0.85, 6.8, 13.5, 7.5, 3.7, 59.7, 8.0,
           "NVIDIA Jetson Xavier NX Data Sheet (DS-09693) and "
           "https://developer.nvidia.com/embedded/jetson-xavier-nx : 21 INT8 TOPS total (Volta, no sparsity: "
           "GPU ~13.5 + 2x NVDLA ~7.5); 384 CUDA cores + 48 tensor cores at 1.1 GHz; 128-bit LPDDR4x 59.7 GB/s"),
    Device("igx-orin", "IGX Orin (integrated Orin GPU, no dGPU)", 4.9, 39.0, 78.0, 46.5, 23.0, 204.8, 64.0,
           "NVIDIA IGX Orin Developer Kit User Guide / https://www.nvidia.com/en-us/edge-computing/products/igx/ :"
           " 248 INT8 TOPS (sparse, iGPU ~157 + DLA ~91 at industrial clocks) -> ~78 + ~46 dense (GPU 1.185 GHz"
           " derived from the AGX Orin Industrial datasheet); 256-bit LPDDR5 204.8 GB/s. With the optional RTX A6000"
           " dGPU use a dGPU table instead"),
    Device("h200", "NVIDIA H200 SXM 141GB", 67.0, 989.5, 1979.0, 0.0, 0.0, 4800.0, 141.0,
           "NVIDIA H200 Tensor Core GPU datasheet, https://www.nvidia.com/en-us/data-center/h200/ : FP16 tensor "
           "1,979 TFLOPS and INT8 3,958 TOPS with sparsity -> 989.5 / 1,979 dense; FP32 67 TFLOPS; HBM3e 4.8 TB/s"),
]}

MAC_OPS = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "Gemm", "MatMul", "MatMulInteger",
           "QLinearMatMul"}


@dataclass
class GraphCount:
    file: str
    macs: int = 0
    params: int = 0
    mac_layers: int = 0
    act_elems: int = 0      # outputs of MAC layers (elements, batch 1)
    input_bytes: int = 0
    unknown_shapes: list[str] = field(default_factory=list)


def _dims(vi) -> list | None:
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    out = []
    for d in t.shape.dim:
        out.append(d.dim_value if d.HasField("dim_value") else None)
    return out


def _prod(xs) -> int:
    p = 1
    for x in xs:
        p *= int(x)
    return p


def count_graph(path, batch: int = 1) -> GraphCount:
    """Count MACs, parameters and activation elements of one ONNX file without loading external weights."""
    try:
        import onnx
        from onnx import shape_inference
    except ImportError as e:  # pragma: no cover - install issue
        raise RatingEdgeError("`rating-edge plan` needs onnx: pip install 'rating-edge[export]'") from e
    path = Path(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - onnx raises DecodeError and friends
        raise PackageError(f"{path}: not a readable ONNX graph ({str(e)[:200]})") from None
    g = model.graph
    init_names = {i.name for i in g.initializer}
    # Fix symbolic batch dims of the real inputs so shape inference yields concrete sizes.
    for inp in g.input:
        if inp.name in init_names:
            continue
        t = inp.type.tensor_type
        if t.HasField("shape") and len(t.shape.dim) > 0:
            d0 = t.shape.dim[0]
            if not d0.HasField("dim_value"):
                d0.Clear()
                d0.dim_value = batch
    try:
        model = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as e:  # noqa: BLE001
        raise PackageError(f"{path}: ONNX shape inference failed ({str(e)[:200]})") from None
    g = model.graph
    shapes: dict[str, list | None] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        shapes[vi.name] = _dims(vi)
    for init in g.initializer:
        shapes[init.name] = list(init.dims)
    res = GraphCount(file=path.name)
    res.params = sum(_prod(i.dims) for i in g.initializer)
    for inp in g.input:
        if inp.name in init_names:
            continue
        s = shapes.get(inp.name)
        if s and all(x is not None for x in s):
            res.input_bytes += _prod(s) * _elem_size(inp.type.tensor_type.elem_type)
    for node in g.node:
        if node.op_type not in MAC_OPS:
            continue
        res.mac_layers += 1
        macs = _node_macs(node, shapes)
        out = shapes.get(node.output[0])
        if macs is None or out is None or any(x is None for x in out):
            res.unknown_shapes.append(node.name or node.op_type)
            continue
        res.macs += macs
        res.act_elems += _prod(out)
    return res


def _elem_size(elem_type: int) -> int:
    # onnx.TensorProto: FLOAT=1 UINT8=2 INT8=3 FLOAT16=10 DOUBLE=11 INT64=7 INT32=6 BFLOAT16=16
    return {1: 4, 2: 1, 3: 1, 10: 2, 11: 8, 7: 8, 6: 4, 16: 2}.get(elem_type, 4)


def _attr(node, name, default=None):
    for a in node.attribute:
        if a.name == name:
            if a.type == 2:   # INT
                return a.i
            if a.type == 7:   # INTS
                return list(a.ints)
    return default


def _node_macs(node, shapes) -> int | None:
    op = node.op_type
    out = shapes.get(node.output[0])
    if out is None or any(x is None for x in out):
        return None
    if op in ("Conv", "ConvInteger", "QLinearConv", "ConvTranspose"):
        w_name = node.input[3] if op == "QLinearConv" else node.input[1]
        w = shapes.get(w_name)
        if not w or any(x is None for x in w):
            return None
        if op == "ConvTranspose":
            x = shapes.get(node.input[0])
            if not x or any(v is None for v in x):
                return None
            # weight (Cin, Cout/groups, k...): each input element meets Cout/groups * prod(k) weights
            return _prod(x) * w[1] * _prod(w[2:])
        # weight (Cout, Cin/groups, k...): MACs = N*Cout*spatial_out * Cin/groups * prod(k)
        return _prod(out) * w[1] * _prod(w[2:])
    if op == "Gemm":
        a = shapes.get(node.input[0])
        if not a or any(x is None for x in a):
            return None
        k = a[0] if _attr(node, "transA", 0) else a[1]
        return _prod(out) * k
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        a = shapes.get(node.input[0])
        if not a or any(x is None for x in a):
            return None
        k = a[-1]
        return _prod(out) * k
    return None


@dataclass
class PackageCount:
    package: str
    strategy: str
    precision: str
    graphs: list[GraphCount]

    @property
    def macs(self) -> int:
        return sum(g.macs for g in self.graphs)

    @property
    def params(self) -> int:
        return sum(g.params for g in self.graphs)

    @property
    def mac_layers(self) -> int:
        return sum(g.mac_layers for g in self.graphs)

    @property
    def act_elems(self) -> int:
        return sum(g.act_elems for g in self.graphs)

    @property
    def input_bytes(self) -> int:
        # `none` graphs each read the inputs; they are the same two images, read once per pair.
        return max((g.input_bytes for g in self.graphs), default=0)

    def bytes_per_pair(self, precision: str) -> dict:
        b = BYTES[precision]
        w = self.params * b
        a = 2 * self.act_elems * b
        return {"weights": w, "activations": a, "inputs": self.input_bytes, "total": w + a + self.input_bytes}


def count_package(path, variant: str | None = None) -> PackageCount:
    """Counts for the graphs of a package (the default form, or one `variants` entry)."""
    from rating_edge.package import load_package

    pkg = load_package(path, verify=False)
    recs = pkg.graphs(variant)
    if not recs:
        raise PackageError(f"{pkg.path}: model.json lists no graphs")
    graphs = []
    for r in recs:
        f = pkg.file(r["file"])
        if not f.is_file():
            raise PackageError(f"{pkg.path}: graph {r['file']} is missing; re-export the package")
        graphs.append(count_graph(f))
    precision = str(pkg.meta.get("precision", "fp32")).lower()
    return PackageCount(str(pkg.path), pkg.strategy, precision, graphs)


def count_structure(spec, backbones: int | None = None, strategy: str = "stack") -> PackageCount:
    """Counts for an ensemble *structure* without a package: one ResNet-18 at the spec's width and input
    size is exported and counted (torch needed), then taken `backbones` times, plus the heads.

    Why: the paper preset's package holds ~1 G parameters (4 GB), too big to export just to ask whether a
    device is fast enough. The `stack` graph computes exactly these convolutions (fused, not fewer);
    the heads (SH MLP, VS fc) are added in closed form; Grad-CAM adds well under 1% and is left out.
    `backbones`: default the exact ensemble's (folds*tasks*seeds*(2 SH + 1 VS) = 90 in the paper),
    2 for the shared-backbone student, fewer for deduplicated checkpoints.
    """
    import tempfile

    try:
        import torch

        from rating_edge.model.resnet import ResNet18
    except ImportError as e:  # pragma: no cover - install issue
        raise RatingEdgeError("`rating-edge plan --preset` needs torch: pip install 'rating-edge[export]'") from e
    nets = spec.folds * spec.tasks * spec.seeds           # networks per module
    n = int(backbones if backbones is not None else 3 * nets)
    if n < 1:
        raise RatingEdgeError("--backbones must be at least 1")
    with tempfile.TemporaryDirectory() as td:
        f = Path(td) / "resnet18.onnx"
        m = ResNet18(2, spec.width).eval()
        m.fc = torch.nn.Identity()  # heads are counted below
        torch.onnx.export(m, torch.zeros(1, 3, spec.input_size, spec.input_size), str(f), input_names=["x"],
                          output_names=["y"], dynamo=False)
        one = count_graph(f)
    d, h = spec.feature_dim, spec.hidden
    head_macs = nets * (2 * d * h + h * 2) + nets * (d * 2)        # SH MLPs + VS fc layers
    head_params = nets * (2 * d * h + h + h * 2 + 2) + nets * (d * 2 + 2)
    g = GraphCount(file=f"{n} x resnet18(width={spec.width}, {spec.input_size}px) + heads",
                   macs=n * one.macs + head_macs, params=n * one.params + head_params,
                   # `stack`: one fused chain per input stream (grouped convs), heads as a few batched
                   # MatMuls; other strategies launch every backbone's layers and every head separately
                   mac_layers=(min(n, 2) * one.mac_layers + 4) if strategy == "stack" else n * one.mac_layers + 3 * nets,
                   act_elems=n * one.act_elems + nets * (h + 2) + nets * 2,
                   input_bytes=2 * spec.input_size * spec.input_size * 3)
    return PackageCount(f"structure:{n}-backbones", strategy, "fp32", [g])


def _peak_ops(dev: Device, precision: str, dla: bool) -> float:
    """Dense ops/s (a MAC = 2 ops) for the precision; the DLA adds only where asked (it runs INT8/FP16)."""
    if precision == "fp32":
        return dev.fp32_tflops * 1e12
    if precision == "fp16":
        return (dev.fp16_tflops + (dev.dla_fp16_tflops if dla else 0.0)) * 1e12
    return (dev.int8_tops + (dev.dla_int8_tops if dla else 0.0)) * 1e12


def estimate(count: PackageCount, device: str, precision: str, *, dla: bool = False,
             compute_eff: float = COMPUTE_EFF, memory_eff: float = MEMORY_EFF,
             launch_us: float = LAUNCH_US) -> dict:
    """Roofline estimate of one pair at batch 1; all inputs and assumptions are echoed in the result."""
    if device not in DEVICES:
        raise RatingEdgeError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if precision not in BYTES:
        raise RatingEdgeError(f"unknown precision {precision!r}; choose one of {', '.join(BYTES)}")
    if not (0 < compute_eff <= 1 and 0 < memory_eff <= 1):
        raise RatingEdgeError("efficiency factors must be in (0, 1]")
    dev = DEVICES[device]
    peak = _peak_ops(dev, precision, dla)
    by = count.bytes_per_pair(precision)
    compute_ms = 2 * count.macs / (peak * compute_eff) * 1e3
    memory_ms = by["total"] / (dev.bandwidth_gbs * 1e9 * memory_eff) * 1e3
    launch_ms = count.mac_layers * launch_us / 1e3
    latency = max(compute_ms, memory_ms) + launch_ms
    fps = 1000.0 / latency if latency > 0 else float("inf")
    return {
        "estimate": True,
        "device": device, "device_title": dev.title, "precision": precision, "dla": dla,
        "gmacs": count.macs / 1e9, "params_m": count.params / 1e6,
        "bytes_mb": {k: v / 1e6 for k, v in by.items()},
        "compute_ms": compute_ms, "memory_ms": memory_ms, "launch_ms": launch_ms,
        "bound": "memory" if memory_ms > compute_ms else "compute",
        "latency_ms": latency, "pairs_per_s": fps,
        "fits_30fps": latency <= 1000.0 / TARGET_FPS,
        "fits_memory": by["weights"] < 0.5 * dev.memory_gb * 1e9,
    }


def plan(path, device: str, precisions: list[str] | None = None, *, variant: str | None = None,
         dla: bool = False, compute_eff: float = COMPUTE_EFF, memory_eff: float = MEMORY_EFF,
         launch_us: float = LAUNCH_US, count: PackageCount | None = None) -> dict:
    """Everything `rating-edge plan` prints, as a JSON-able dict (for a package, or a given `count`)."""
    if device not in DEVICES:
        raise RatingEdgeError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if count is None:
        count = count_package(path, variant)
    if precisions is None:
        # The package's own precision first; an FP32 package would be built as FP16 on a GPU too.
        precisions = [count.precision] if count.precision in BYTES else ["fp32"]
        for p in ("fp16", "int8"):
            if p not in precisions:
                precisions.append(p)
    dev = DEVICES.get(device)
    if dev is None:
        raise RatingEdgeError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    rows = [estimate(count, device, p, dla=dla, compute_eff=compute_eff, memory_eff=memory_eff,
                     launch_us=launch_us) for p in precisions]
    unknown = sorted({u for g in count.graphs for u in g.unknown_shapes})
    return {
        "kind": "estimate",
        "note": "ESTIMATE from counted operations and datasheet peaks (roofline), not a measurement",
        "package": count.package, "strategy": count.strategy, "package_precision": count.precision,
        "graphs": [asdict(g) for g in count.graphs] if len(count.graphs) <= 8 else len(count.graphs),
        "gmacs_per_pair": count.macs / 1e9, "params_m": count.params / 1e6, "mac_layers": count.mac_layers,
        "unknown_shape_layers": unknown,
        "assumptions": {"compute_eff": compute_eff, "memory_eff": memory_eff, "launch_us_per_layer": launch_us,
                        "batch": 1, "target_fps": TARGET_FPS,
                        "model": "latency = max(2*MACs/(peak*compute_eff), bytes/(bw*memory_eff)) + layers*launch"},
        "device": asdict(dev),
        "estimates": rows,
    }
