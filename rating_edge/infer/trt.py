"""TensorRT runner with the runner contract of rating_edge.infer.base.

Engines are not portable across GPUs or TensorRT versions (docs/design/precision.md), so every engine
record carries the GPU name, compute capability and TensorRT version it was built with, and the loader
refuses an engine made elsewhere (`EngineMismatch`) with the command that rebuilds it here. TensorRT and
CUDA are imported only when a runner is activated; this module imports neither at load time.
"""
from __future__ import annotations

import numpy as np

from rating_edge.errors import RatingEdgeError
from rating_edge.infer.base import GraphRunner
from rating_edge.infer.errors import EngineMismatch, EngineUnavailable
from rating_edge.infer.loaders import EngineFromPackage, machine_key


class _EngineSession:
    """One deserialized engine + context + buffers (+ an optional CUDA graph of its enqueue)."""

    def __init__(self, trt, runtime, path, cuda, stream, cuda_graph: bool):
        self.trt, self.cuda, self.stream = trt, cuda, stream
        with open(path, "rb") as f:
            self.engine = runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise EngineMismatch(f"{path}: TensorRT could not deserialize this engine (corrupt, or built for "
                               "another TensorRT/GPU); rebuild it with `rating-edge build`")
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise EngineUnavailable(f"{path}: TensorRT could not create an execution context (out of GPU memory?)")
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

    def _bind(self, feed) -> bool:
        from rating_edge.infer.cuda_buffers import DeviceBuffer

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

    def run(self, feed) -> dict:
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
        return {n: self.buffers[n].view().copy() for n in self.outputs}

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


class TrtRunner(GraphRunner):
    """TensorRT engines of a package: fused (one engine) or `none` (one engine per network). The
    engines are chosen by precision (`EngineFromPackage`); TensorRT has no ONNX variant to pick, so a
    `variant` other than None/"default" is refused instead of silently dropped."""

    name = "tensorrt"
    backend = "trt"

    def __init__(self, package, precision: str | None = None, cuda_graph: bool = False,
                 cuda: str | None = None, device: int = 0, variant: str | None = None):
        super().__init__(package)
        if variant not in (None, "default"):
            raise RatingEdgeError(f"the TensorRT backend runs engines, not ONNX variants ({variant!r}): choose "
                                  "--precision fp16|int8 (engines are built by `rating-edge build`)")
        self.loader = EngineFromPackage(package, precision)
        self.precision = precision or "auto"
        self.cuda_graph = cuda_graph
        self.cuda_name = cuda
        self.device = device
        self.records = []

    def _activate(self):
        try:
            import tensorrt as trt
        except ImportError:
            raise EngineUnavailable("TensorRT is not installed: pip install 'rating-edge[tensorrt]' "
                                  "(on Jetson it comes with JetPack)") from None
        from rating_edge.infer.cuda_buffers import get_backend

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
        self.records = self.loader(here)
        self.precision = self.records[0].get("precision", self.precision)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.stream = self.cuda.stream()
        self.graphs = []
        for e in self.records:
            if e.get("dla_core") is not None:  # the DLA core a DLA engine runs on is set on the runtime
                self.runtime.DLA_core = int(e["dla_core"])
            sess = _EngineSession(trt, self.runtime, self.package.file(e["file"]), self.cuda, self.stream,
                                  self.cuda_graph)
            graph_rec = {"kind": e.get("kind", "fused"), **({"network": e["network"]} if "network" in e else {})}
            self.graphs.append((graph_rec, sess))

    def _deactivate(self):
        for _, sess in self.graphs:
            sess.close()
        self.graphs = []
        if getattr(self, "stream", None) is not None:
            self.cuda.destroy_stream(self.stream)
            self.stream = None
        if hasattr(self.cuda, "close"):
            self.cuda.close()

    def _run_graph(self, handle, feed):
        return handle.run({n: feed[n] for n in handle.inputs})
