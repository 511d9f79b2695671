"""`rating-edge build`: TensorRT engines on the target, for TensorRT 10 and 11.

- TensorRT 10 (JetPack 6 ships 10.3): weakly typed network + builder flags; FP16 = FP16 flag on the
  FP32 graph; INT8 = the package's Q/DQ graph ("int8-qdq") with the INT8 (and FP16, for the layers
  left unquantized) flags. Implicit INT8 calibration is deprecated and never used.
- TensorRT 11: strongly typed networks only (no FP16/INT8 flags): FP16 = an FP16 ONNX converted on the
  host (`fp16.convert_fp16`), INT8 = the Q/DQ graph, FP32 = the FP32 graph.

The engine record (GPU, compute capability, TensorRT version, precision, source ONNX and its hash)
goes into model.json `engines`, which is what lets the runner refuse engines made elsewhere.
"""
from __future__ import annotations

import time
from pathlib import Path

from rating_edge.errors import PackageError, RatingEdgeError
from rating_edge.infer.loaders import machine_key, trt_major
from rating_edge.package import (
    ENGINES_FILE,
    engine_key,
    load_package,
    write_engines_json,
)
from rating_edge.publish import publish_bytes

PRECISIONS = ("fp32", "fp16", "int8")


def build_plan(trt_version: str, precision: str, package_meta: dict) -> dict:
    """How to build `precision` with this TensorRT: which graphs, strong typing, flags, FP16 conversion."""
    if precision not in PRECISIONS:
        raise RatingEdgeError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    major = trt_major(trt_version)
    if major < 10:
        raise RatingEdgeError(f"TensorRT {trt_version} is too old: rating-edge needs TensorRT 10 or newer "
                              "(JetPack 6.1 or later on Jetson)")
    variant = None
    if precision == "int8":
        if "int8-qdq" not in package_meta.get("variants", {}):
            raise PackageError("this package has no INT8 Q/DQ graph; make one with "
                               "`rating-edge quantize PKG CALIB OUT` and build that package")
        variant = "int8-qdq"
    strongly = major >= 11
    if strongly:
        flags = []
    else:
        flags = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}[precision]
    return {"trt_major": major, "strongly_typed": strongly, "flags": flags, "variant": variant,
            "convert_fp16": strongly and precision == "fp16"}


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s.lower()).strip("-")


def engine_name(graph_file: str, precision: str, key: dict, dla_core: int | None) -> str:
    stem = Path(graph_file).stem
    dla = f"-dla{dla_core}" if dla_core is not None else ""
    return (f"engines/{stem}-{precision}{dla}-{_slug(key['gpu'])}-sm{key['compute_capability'].replace('.', '')}"
            f"-trt{key['trt_version']}.engine")


def _batch_range(meta: dict, max_batch: int) -> tuple:
    """(min, opt, max) batch of the optimization profile: the package's fixed batch, else 1..max_batch."""
    fixed = meta.get("batch", "dynamic")
    if fixed != "dynamic":
        b = int(fixed)
        return b, b, b
    return 1, 1, max(1, int(max_batch))


def _input_profile(name: str, shape, batches: tuple) -> tuple | None:
    """(min, opt, max) shapes for network input `name` of parsed shape `shape` (-1 = dynamic), or
    None when the input is static (TensorRT then needs no profile entry for it). Only the batch
    (first) dimension may be dynamic: the image size is fixed by the package."""
    dims = tuple(int(d) for d in shape)
    if not dims or all(d >= 0 for d in dims):
        return None
    if any(d < 0 for d in dims[1:]):
        raise PackageError(f"network input {name} has dynamic non-batch dimensions {dims}; re-export the "
                           "package with a fixed image size")
    return tuple((b,) + dims[1:] for b in batches)


def _check_dla(precision: str, dla_core: int | None, num_cores: int) -> None:
    if dla_core is None:
        return
    if precision == "fp32":
        raise RatingEdgeError("DLA runs FP16 and INT8 networks only; use --precision fp16 or int8 with --dla-core")
    if not 0 <= int(dla_core) < num_cores:
        raise RatingEdgeError(f"--dla-core {dla_core}: this device has {num_cores} DLA core(s)")


def _attach_timing_cache(config, cache_bytes: bytes, log=print):
    """A timing cache from `cache_bytes` attached to `config`; a fresh one when the bytes are empty,
    unreadable or from another device/TensorRT (set_timing_cache returns False for those)."""
    cache = None
    if cache_bytes:
        try:
            cache = config.create_timing_cache(cache_bytes)
        except Exception:  # noqa: BLE001 - a corrupt blob is reported by TensorRT as an error
            cache = None
        if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
            return cache
        log("the timing cache was made on another GPU or TensorRT version; starting a new one")
    cache = config.create_timing_cache(b"")
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise RatingEdgeError("TensorRT refused a new, empty timing cache")
    return cache


def build_engine(pkg_path, precision: str = "fp16", dla_core: int | None = None, workspace_mb: int = 2048,
                 timing_cache=None, max_batch: int = 1, cuda: str | None = None, log=print) -> dict:
    """Build engines for every graph of the package at `precision`; returns the first engine record."""
    try:
        import tensorrt as trt
    except ImportError:
        raise RatingEdgeError("TensorRT is not installed: pip install 'rating-edge[tensorrt]' (on Jetson it "
                              "comes with JetPack); build the engine on the target device") from None
    from rating_edge.calibration.fp16 import convert_fp16
    from rating_edge.infer.cuda_buffers import get_backend

    pkg = load_package(pkg_path)
    plan = build_plan(trt.__version__, precision, pkg.meta)
    backend = get_backend(cuda)
    try:
        info = backend.device_info(0)
    finally:
        if hasattr(backend, "close"):  # pycuda: pop the context it pushed; TensorRT uses the runtime API
            backend.close()
    key = machine_key(info["gpu"], info["compute_capability"], trt.__version__)
    graphs = pkg.graphs(plan["variant"])
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    _check_dla(precision, dla_core, builder.num_DLA_cores if dla_core is not None else 0)
    batches = _batch_range(pkg.meta, max_batch)
    cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
    # What earlier builds recorded in engines.json (model.json's own engines are from before it existed)
    listed = set(pkg.meta["artifacts"])
    old = [{k: v for k, v in e.items() if k not in ("sha256", "bytes")} for e in pkg.meta.get("engines", [])
           if e["file"] not in listed]
    old_files = _previous_files(pkg.path, listed)
    new_records, extra_files, written = [], [], []
    try:
        for rec in graphs:
            onnx_rel = rec["file"]
            onnx_path = pkg.file(onnx_rel)
            if plan["convert_fp16"]:
                fp16_rel = _fresh(f"engines/fp16/{Path(onnx_rel).name}", listed)
                log(f"converting {onnx_rel} to FP16 for TensorRT {trt.__version__}'s strongly typed network")
                written.append(fp16_rel)
                convert_fp16(onnx_path, pkg.file(fp16_rel))
                extra_files += [str(p.relative_to(pkg.path)) for p in pkg.file(fp16_rel).parent.iterdir() if p.is_file()]
                onnx_path = pkg.file(fp16_rel)
            # the parser owns the weights the network points to: it lives until the engine is built
            network, config, max_b, parser = _network_and_config(trt, builder, logger, onnx_path, onnx_rel, plan,
                                                                 workspace_mb, dla_core, batches)
            cache = _attach_timing_cache(config, cache_bytes, log)
            t0 = time.perf_counter()
            log(f"building {precision} engine for {onnx_rel} on {key['gpu']} (TensorRT {key['trt_version']}, "
                f"{'strongly typed' if plan['strongly_typed'] else 'flags ' + ','.join(plan['flags'] or ['none'])})")
            serialized = builder.build_serialized_network(network, config)
            if serialized is None:
                raise RatingEdgeError(f"TensorRT failed to build an engine for {onnx_rel} (see the TensorRT log above)")
            cache_bytes = bytes(config.get_timing_cache().serialize())
            del cache, parser  # held until here: the attached cache and the weights must outlive the build
            rel = _fresh(engine_name(onnx_rel, precision, key, dla_core), listed)
            written.append(rel)
            pkg.file(rel).parent.mkdir(parents=True, exist_ok=True)
            publish_bytes(pkg.file(rel), bytes(serialized))
            new_records.append({
                "file": rel, **key, "precision": precision, "kind": rec.get("kind", "fused"),
                **({"network": rec["network"]} if "network" in rec else {}),
                "onnx": onnx_rel, "onnx_sha256": pkg.meta["artifacts"][onnx_rel]["sha256"],
                **_build_settings(plan, dla_core, workspace_mb, max_b, t0)})
    except BaseException:
        _roll_back(pkg.path, written, old, old_files)
        raise
    if timing_cache:
        publish_bytes(Path(timing_cache), cache_bytes)
    # Replace earlier engines of the same precision for this machine; keep the others (other GPUs).
    # They go to engines.json, so model.json (and the model hash shown and logged) stays as exported.
    same = {engine_key(r) for r in new_records}
    kept = [e for e in old if engine_key(e) not in same and (pkg.path / e["file"]).is_file()]
    files = sorted({f for f in extra_files if f not in listed} | set(old_files))
    write_engines_json(pkg.path, kept + new_records, [f for f in files if (pkg.path / f).is_file()])
    return new_records[0]


def _network_and_config(trt, builder, logger, onnx_path, onnx_rel: str, plan: dict, workspace_mb: int,
                        dla_core, batches):
    """One graph parsed into a TensorRT network, with its builder config (flags, workspace, DLA, the
    optimization profile over `batches`), the largest batch the engine will take, and the parser (it owns
    the network's weights, so the caller keeps it until the engine is built)."""
    # No creation flags: TensorRT 10 networks are always explicit-batch (EXPLICIT_BATCH is
    # deprecated and ignored) and weakly typed here (precision from builder flags); TensorRT 11
    # networks are always strongly typed (STRONGLY_TYPED is deprecated and ignored there).
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PackageError(f"{onnx_path}: TensorRT's ONNX parser failed: {errs[:500]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    for f in plan["flags"]:
        config.set_flag(getattr(trt.BuilderFlag, f))
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # grouped convs, Grad-CAM ops etc. run on the GPU
    profile = builder.create_optimization_profile()
    dynamic = False
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        shapes = _input_profile(inp.name, inp.shape, batches)
        if shapes is not None:
            profile.set_shape(inp.name, *shapes)
            dynamic = True
    if dynamic and config.add_optimization_profile(profile) < 0:
        raise RatingEdgeError(f"TensorRT rejected the optimization profile for {onnx_rel} (batch {batches})")
    max_b = batches[2] if dynamic else int(network.get_input(0).shape[0])
    return network, config, max_b, parser


def _build_settings(plan: dict, dla_core, workspace_mb: int, max_b: int, t0: float) -> dict:
    """How an engine was built, recorded beside it (a rebuild with other settings is told apart)."""
    return {"variant": plan["variant"] or "default", "strongly_typed": plan["strongly_typed"],
            "trt_flags": plan["flags"], "dla_core": dla_core, "workspace_mb": workspace_mb,
            "max_batch": max_b, "build_s": round(time.perf_counter() - t0, 1),
            "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _previous_files(folder: Path, listed: set) -> list[str]:
    """Files an earlier build recorded in engines.json (FP16 graphs) that are still there."""
    import json

    p = folder / ENGINES_FILE
    if not p.exists():
        return []
    files = json.loads(p.read_text()).get("files", {})  # validated by load_package above
    return [f for f in files if f not in listed and (folder / f).is_file()]


def _fresh(rel: str, listed: set) -> str:
    """`rel`, or a new name beside it when model.json (an old-style package) lists a file of that name:
    a listed file is never overwritten, or the package would fail its own hash check."""
    if rel not in listed:
        return rel
    p = Path(rel)
    return str(p.with_name(f"{p.stem}-rebuilt{p.suffix}"))


def _roll_back(folder: Path, written: list, old: list, old_files: list) -> None:
    """A failed build removes what it wrote, so the package holds no unlisted file and stays loadable;
    earlier engines it overwrote are dropped from engines.json (it is rewritten without them)."""
    for rel in written:
        (folder / rel).unlink(missing_ok=True)
        if rel.startswith("engines/fp16"):
            data = (folder / rel).with_name(Path(rel).name + ".data")
            data.unlink(missing_ok=True)
    if (folder / ENGINES_FILE).exists():
        keep = [e for e in old if e["file"] not in written and (folder / e["file"]).is_file()]
        write_engines_json(folder, keep, [f for f in old_files if f not in written and (folder / f).is_file()])
