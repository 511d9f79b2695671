"""TensorRT runner with the ONNX Runtime runner's interface (activate / infer / deactivate).

Engines are not portable across GPUs or TensorRT versions (DESIGN.md §4), so every engine record in
model.json carries the GPU name, compute capability and TensorRT version it was built with, and the
runner refuses an engine made elsewhere with the command that rebuilds it here. TensorRT and CUDA
are imported only when a runner is activated; this module imports neither at load time.
"""
from __future__ import annotations

import numpy as np

from rating_edge.errors import RatingEdgeError
from rating_edge.infer.errors import EngineMismatch, EngineUnavailable
from rating_edge.package import Package, sha256_file
from rating_edge.runtime.engines import OrtRunner, Runner

PRECISION_ORDER = ("int8", "fp16", "fp32")


def trt_major(version: str) -> int:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        raise RatingEdgeError(f"cannot read TensorRT version {version!r}") from None


def machine_key(gpu: str, compute_capability: str, trt_version: str) -> dict:
    return {"gpu": gpu, "compute_capability": str(compute_capability), "trt_version": str(trt_version)}


def rebuild_hint(package: Package, precision: str) -> str:
    return f"rebuild it on this machine: rating-edge build {package.path} --precision {precision}"


def engine_mismatch(rec: dict, here: dict) -> str | None:
    """Why engine record `rec` cannot run on machine `here` (None: it can)."""
    if rec.get("trt_version") != here["trt_version"]:
        return (f"built with TensorRT {rec.get('trt_version')}, this machine has TensorRT {here['trt_version']} "
                "(serialized engines only load in the TensorRT version that built them)")
    if str(rec.get("compute_capability")) != here["compute_capability"] or rec.get("gpu") != here["gpu"]:
        return (f"built for {rec.get('gpu')} (sm {rec.get('compute_capability')}), this machine has "
                f"{here['gpu']} (sm {here['compute_capability']})")
    return None


def select_engines(package: Package, here: dict, precision: str | None = None) -> list[dict]:
    """The engine records to run here: one per graph of one precision, preferring INT8, then FP16."""
    engines = package.meta.get("engines", [])
    if not engines:
        p = precision or ("int8" if package.meta.get("precision") == "int8" else "fp16")
        raise EngineMismatch(f"{package.path}: no TensorRT engine in this package; {rebuild_hint(package, p)}")
    wanted = [precision] if precision else list(PRECISION_ORDER)
    reasons = []
    for prec in wanted:
        recs = [e for e in engines if e.get("precision") == prec]
        if not recs:
            continue
        ok = [e for e in recs if engine_mismatch(e, here) is None]
        if ok:  # engines for other machines may sit beside this machine's
            # GPU and DLA builds of the same graphs may both be recorded: run one set, not both
            # (GPU first, else the lowest DLA core).
            cores = sorted({e.get("dla_core") for e in ok}, key=lambda c: -1 if c is None else int(c))
            return [e for e in ok if e.get("dla_core") == cores[0]]
        reasons.append((recs[0], engine_mismatch(recs[0], here)))
    if not reasons:
        raise EngineMismatch(f"{package.path}: no {precision} TensorRT engine; "
                           f"{rebuild_hint(package, precision or 'fp16')}")
    rec, why = reasons[0]
    raise EngineMismatch(f"{package.path}: engine {rec['file']}: {why}; {rebuild_hint(package, rec['precision'])}")


class _EngineSession:
    """One deserialized engine + context + buffers, with ONNX Runtime's `run`/`get_inputs` shape so
    the `none`-strategy assembly code is shared with OrtRunner."""

    class _Input:
        def __init__(self, name):
            self.name = name

    def __init__(self, trt, runtime, path, cuda, stream, cuda_graph: bool):
        self.trt, self.cuda, self.stream = trt, cuda, stream
        with open(path, "rb") as f:
            self.engine = runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise EngineMismatch(f"{path}: TensorRT could not deserialize this engine (corrupt, or built for "
                               "another TensorRT/GPU); rebuild it with `rating-edge build`")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RatingEdgeError(f"{path}: TensorRT could not create an execution context (out of GPU memory?)")
        self.path = path
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode_in = trt.TensorIOMode.INPUT
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == mode_in]
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) != mode_in]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.buffers = {}
        self.use_graph = cuda_graph
        self.graph = None
        self.graph_shapes = None

    def get_inputs(self):
        return [self._Input(n) for n in self.inputs]

    def get_output_names(self):
        return list(self.outputs)

    def _bind(self, feed) -> bool:
        from rating_edge.runtime.cuda_buffers import DeviceBuffer

        moved = False
        for n in self.inputs:
            x = feed[n]
            if not self.context.set_input_shape(n, tuple(int(d) for d in x.shape)):
                raise RatingEdgeError(
                    f"{self.path}: input {n} of shape {tuple(x.shape)} is outside this engine's optimization "
                    "profile (a larger batch than it was built for?); rebuild it with `rating-edge build "
                    "--max-batch N`")
            if n not in self.buffers:
                self.buffers[n] = DeviceBuffer(self.cuda, x.shape, self.dtypes[n])
                moved = True
            else:
                moved |= self.buffers[n].reshape(x.shape)
            np.copyto(self.buffers[n].view(), x.astype(self.dtypes[n], copy=False))
        for n in self.outputs:
            shape = tuple(self.context.get_tensor_shape(n))
            if any(s < 0 for s in shape):
                raise RatingEdgeError(f"TensorRT could not infer the shape of output {n} ({shape})")
            if n not in self.buffers:
                self.buffers[n] = DeviceBuffer(self.cuda, shape, self.dtypes[n])
                moved = True
            else:
                moved |= self.buffers[n].reshape(shape)
        for n, b in self.buffers.items():
            self.context.set_tensor_address(n, b.ptr)
        return moved

    def _enqueue(self):
        s = self.stream
        for n in self.inputs:
            self.cuda.htod(self.buffers[n].dev, self.buffers[n].view(), s)
        if not self.context.execute_async_v3(self.cuda.stream_handle(s)):
            raise RatingEdgeError("TensorRT execute_async_v3 failed")
        for n in self.outputs:
            self.cuda.dtoh(self.buffers[n].view(), self.buffers[n].dev, s)

    def run(self, names, feed):
        moved = self._bind(feed)
        shapes = tuple(tuple(feed[n].shape) for n in self.inputs)
        if self.use_graph:
            if self.graph is None or moved or shapes != self.graph_shapes:
                self._drop_graph()
                # One plain enqueue after a shape/address change: TensorRT does deferred work
                # (allocations, shape-dependent setup) on it that must not land in the graph.
                self._enqueue()
                self.cuda.sync(self.stream)
                self.cuda.begin_capture(self.stream)
                try:
                    self._enqueue()
                except BaseException:
                    try:  # end the capture so the stream is usable; the partial graph is dropped
                        self.cuda.destroy_graph(self.cuda.end_capture(self.stream))
                    except Exception:  # noqa: BLE001 - an invalidated capture has no graph to drop
                        pass
                    raise
                self.graph = self.cuda.end_capture(self.stream)
                self.graph_shapes = shapes
            self.cuda.launch_graph(self.graph, self.stream)
        else:
            self._enqueue()
        self.cuda.sync(self.stream)
        return [self.buffers[n].view().copy() for n in (names or self.outputs)]

    def _drop_graph(self):
        if self.graph is not None:
            self.cuda.destroy_graph(self.graph)
            self.graph = None
        self.graph_shapes = None

    def close(self):
        self._drop_graph()
        for b in self.buffers.values():
            b.free()
        self.buffers = {}
        self.context = None
        self.engine = None


class TrtRunner(Runner):
    """TensorRT engines of a package: fused (one engine) or `none` (one engine per network)."""

    name = "tensorrt"
    _assemble = OrtRunner._assemble  # same assembly of per-network outputs as ONNX Runtime

    def __init__(self, package: Package, precision: str | None = None, cuda_graph: bool = False,
                 cuda: str | None = None, device: int = 0, variant: str | None = None):
        super().__init__(package)
        self.precision = precision
        self.cuda_graph = cuda_graph
        self.cuda_name = cuda
        self.device = device
        self.sessions = []
        self.records = []

    def _activate(self):
        try:
            import tensorrt as trt
        except ImportError:
            raise EngineUnavailable("TensorRT is not installed: pip install 'rating-edge[tensorrt]' "
                                    "(on Jetson it comes with JetPack)") from None
        from rating_edge.runtime.cuda_buffers import get_backend

        try:
            self.cuda = get_backend(self.cuda_name, self.device)
        except RatingEdgeError as e:  # no CUDA binding / no GPU: the feed runs without AI
            raise EngineUnavailable(str(e)) from None
        try:
            self._open(trt)
        except BaseException:
            self._deactivate()  # release what was opened: engines, stream, pycuda's pushed context
            raise

    def _open(self, trt):
        info = self.cuda.device_info(self.device)
        here = machine_key(info["gpu"], info["compute_capability"], trt.__version__)
        self.records = select_engines(self.package, here, self.precision)
        arts = self.package.meta.get("artifacts", {})
        for e in self.records:
            src = e.get("onnx")
            if src in arts and e.get("onnx_sha256") and arts[src]["sha256"] != e["onnx_sha256"]:
                raise EngineMismatch(f"{self.package.path}: engine {e['file']} was built from another version of "
                                   f"{src}; {rebuild_hint(self.package, e['precision'])}")
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.stream = self.cuda.stream()
        self.sessions = []
        for e in self.records:
            if e.get("dla_core") is not None:  # the DLA core a DLA engine runs on is set on the runtime
                self.runtime.DLA_core = int(e["dla_core"])
            sess = _EngineSession(trt, self.runtime, self.package.file(e["file"]), self.cuda, self.stream,
                                  self.cuda_graph)
            graph_rec = {"kind": e.get("kind", "fused"), **({"network": e["network"]} if "network" in e else {})}
            self.sessions.append((graph_rec, sess, sess.get_output_names()))

    def _deactivate(self):
        for _, sess, _ in self.sessions:
            sess.close()
        self.sessions = []
        if getattr(self, "stream", None) is not None:
            self.cuda.destroy_stream(self.stream)
            self.stream = None
        if hasattr(self.cuda, "close"):
            self.cuda.close()

    def _infer(self, gs, dop):
        feed = {"gs": gs, "doppler": dop}
        if len(self.sessions) == 1 and self.sessions[0][0].get("kind", "fused") == "fused":
            _, sess, names = self.sessions[0]
            return dict(zip(names, sess.run(None, feed)))
        return self._assemble(feed)


def engine_onnx_hash(package: Package, onnx_rel: str) -> str:
    return package.meta.get("artifacts", {}).get(onnx_rel, {}).get("sha256") or sha256_file(package.file(onnx_rel))
