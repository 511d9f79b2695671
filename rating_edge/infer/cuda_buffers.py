"""Device buffers, streams and CUDA graphs through cuda-python or pycuda, behind one small interface.

TensorRT's own samples moved from pycuda to cuda-python, but JetPack images and older setups often
ship pycuda only (docs/design/precision.md), so the TensorRT runner talks to this module and never to either
library. cuda-python is preferred when both are present; RATING_EDGE_CUDA=pycuda|cuda-python forces
one. Host staging buffers are page-locked so copies are truly asynchronous and can be captured into
a CUDA graph.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np

from rating_edge.errors import RatingEdgeError

INSTALL_HINT = ("install cuda-python (pip install 'rating-edge[tensorrt]') or pycuda "
                "(pip install 'rating-edge[pycuda]')")


class CudaBackend:
    """What the TensorRT runner needs from CUDA. Pointers are plain ints; streams are opaque."""

    name = "?"

    def device_info(self, device: int = 0) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError


# ---------------------------------------------------------------- cuda-python

def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6 layout
    except ImportError:
        from cuda import cudart  # older cuda-python
    return cudart


def _native_handle_getter():
    """cuda-bindings >= 13: utils.get_cuda_native_handle; older cuda-python: int(obj)."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int
    return get_cuda_native_handle


class CudaPython(CudaBackend):
    name = "cuda-python"

    def __init__(self):
        self.rt = _cudart()
        self._native = _native_handle_getter()

    def _call(self, res):
        err, rest = (res[0], res[1:]) if isinstance(res, tuple) else (res, ())
        if int(err) != 0:
            name = self.rt.cudaGetErrorName(err)[1]
            raise RatingEdgeError(f"CUDA error {name.decode() if isinstance(name, bytes) else name}")
        return rest[0] if len(rest) == 1 else rest

    def device_info(self, device: int = 0) -> dict:
        p = self._call(self.rt.cudaGetDeviceProperties(device))
        name = p.name.decode(errors="replace") if isinstance(p.name, bytes) else str(p.name)
        return {"gpu": name.strip("\x00 "), "compute_capability": f"{p.major}.{p.minor}",
                "memory_bytes": int(p.totalGlobalMem)}

    def set_device(self, device: int) -> None:
        self._call(self.rt.cudaSetDevice(device))

    def stream(self):
        return self._call(self.rt.cudaStreamCreate())

    def stream_handle(self, stream) -> int:
        # cuda-bindings 13 deprecates int(cuda_obj) in favour of utils.get_cuda_native_handle.
        return int(stream) if isinstance(stream, int) else int(self._native(stream))

    def sync(self, stream) -> None:
        self._call(self.rt.cudaStreamSynchronize(stream))

    def destroy_stream(self, stream) -> None:
        self._call(self.rt.cudaStreamDestroy(stream))

    def malloc(self, nbytes: int):
        return self._call(self.rt.cudaMalloc(max(1, nbytes)))

    def ptr(self, dev) -> int:
        return int(dev)

    def free(self, dev) -> None:
        self._call(self.rt.cudaFree(dev))

    def host_empty(self, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        nbytes = max(1, int(np.prod(shape)) * dtype.itemsize)
        p = self._call(self.rt.cudaMallocHost(nbytes))
        buf = (ctypes.c_byte * nbytes).from_address(int(p))
        arr = np.frombuffer(buf, dtype=np.uint8, count=nbytes)[: int(np.prod(shape)) * dtype.itemsize]
        arr = arr.view(dtype).reshape(shape)
        self._pinned = getattr(self, "_pinned", {})
        self._pinned[arr.ctypes.data] = p
        return arr

    def host_free(self, arr: np.ndarray) -> None:
        p = getattr(self, "_pinned", {}).pop(arr.ctypes.data, None)
        if p is not None:
            self._call(self.rt.cudaFreeHost(p))

    def htod(self, dev, host: np.ndarray, stream) -> None:
        self._call(self.rt.cudaMemcpyAsync(dev, host.ctypes.data, host.nbytes,
                                           self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))

    def dtoh(self, host: np.ndarray, dev, stream) -> None:
        self._call(self.rt.cudaMemcpyAsync(host.ctypes.data, dev, host.nbytes,
                                           self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))

    def begin_capture(self, stream) -> None:
        self._call(self.rt.cudaStreamBeginCapture(
            stream, self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal))

    def end_capture(self, stream):
        graph = self._call(self.rt.cudaStreamEndCapture(stream))
        # cudaGraphInstantiateWithFlags(graph, flags) -> (err, exec) in both CUDA 11.4+ and 12
        # bindings; plain cudaGraphInstantiate takes (graph, bufferSize) and returns four values
        # under CUDA 11, (graph, flags) -> (err, exec) only from CUDA 12 on.
        inst = getattr(self.rt, "cudaGraphInstantiateWithFlags", None) or self.rt.cudaGraphInstantiate
        try:
            exe = self._call(inst(graph, 0))
        except Exception:
            self.rt.cudaGraphDestroy(graph)
            raise
        return graph, exe

    def launch_graph(self, graph, stream) -> None:
        self._call(self.rt.cudaGraphLaunch(graph[1], stream))

    def destroy_graph(self, graph) -> None:
        self._call(self.rt.cudaGraphExecDestroy(graph[1]))
        self._call(self.rt.cudaGraphDestroy(graph[0]))


# ---------------------------------------------------------------- pycuda

class PyCuda(CudaBackend):
    name = "pycuda"

    def __init__(self, device: int = 0):
        import pycuda.driver as drv

        drv.init()
        self.drv = drv
        self.device = drv.Device(device)
        self.ctx = self.device.retain_primary_context()
        self.ctx.push()

    def close(self) -> None:
        try:
            self.ctx.pop()
        except Exception:  # noqa: BLE001 - context already gone at interpreter exit
            pass

    def device_info(self, device: int = 0) -> dict:
        d = self.drv.Device(device)
        major, minor = d.compute_capability()
        return {"gpu": d.name(), "compute_capability": f"{major}.{minor}", "memory_bytes": int(d.total_memory())}

    def set_device(self, device: int) -> None:
        pass  # the context made in __init__ is bound to its device

    def stream(self):
        return self.drv.Stream()

    def stream_handle(self, stream) -> int:
        return int(stream.handle)

    def sync(self, stream) -> None:
        stream.synchronize()

    def destroy_stream(self, stream) -> None:
        pass

    def malloc(self, nbytes: int):
        return self.drv.mem_alloc(max(1, nbytes))

    def ptr(self, dev) -> int:
        return int(dev)

    def free(self, dev) -> None:
        dev.free()

    def host_empty(self, shape, dtype) -> np.ndarray:
        return self.drv.pagelocked_empty(shape, dtype)

    def host_free(self, arr) -> None:
        base = getattr(arr, "base", None)
        if hasattr(base, "free"):
            base.free()

    def htod(self, dev, host, stream) -> None:
        self.drv.memcpy_htod_async(dev, host, stream)

    def dtoh(self, host, dev, stream) -> None:
        self.drv.memcpy_dtoh_async(host, dev, stream)

    def begin_capture(self, stream) -> None:
        if not hasattr(stream, "begin_capture"):
            raise RatingEdgeError("this pycuda has no CUDA-graph capture (needs pycuda >= 2021.1); "
                                  "run without --cuda-graph or use cuda-python")
        stream.begin_capture(self.drv.capture_mode.THREAD_LOCAL)

    def end_capture(self, stream):
        graph = stream.end_capture()
        return graph, graph.instantiate()

    def launch_graph(self, graph, stream) -> None:
        graph[1].launch(stream)

    def destroy_graph(self, graph) -> None:
        pass  # pycuda frees graphs with their Python objects


def available_backends() -> list[str]:
    out = []
    try:
        _cudart()
        out.append("cuda-python")
    except ImportError:
        pass
    try:
        import pycuda.driver  # noqa: F401

        out.append("pycuda")
    except ImportError:
        pass
    return out


def get_backend(prefer: str | None = None, device: int = 0) -> CudaBackend:
    """The CUDA backend: `prefer`, else $RATING_EDGE_CUDA, else cuda-python, else pycuda."""
    prefer = prefer or os.environ.get("RATING_EDGE_CUDA") or None
    have = available_backends()
    if prefer is not None and prefer not in ("cuda-python", "pycuda"):
        raise RatingEdgeError(f"unknown CUDA backend {prefer!r}; use cuda-python or pycuda")
    order = [prefer] if prefer else ["cuda-python", "pycuda"]
    for name in order:
        if name in have:
            b = CudaPython() if name == "cuda-python" else PyCuda(device)
            b.set_device(device)
            return b
    if prefer:
        raise RatingEdgeError(f"CUDA backend {prefer} is not installed; {INSTALL_HINT}")
    raise RatingEdgeError(f"no CUDA Python binding found; {INSTALL_HINT}")


class DeviceBuffer:
    """A device allocation with its page-locked host twin, sized for the largest shape seen."""

    def __init__(self, cuda: CudaBackend, shape, dtype):
        self.cuda = cuda
        self.dtype = np.dtype(dtype)
        self.capacity = 0
        self.dev = None
        self.host = None
        self.shape = None
        self.reshape(shape)

    def reshape(self, shape) -> bool:
        """Resize for `shape`; True when the device pointer changed (captured graphs are then stale)."""
        shape = tuple(int(s) for s in shape)
        nbytes = int(np.prod(shape)) * self.dtype.itemsize
        changed = nbytes > self.capacity
        if changed:
            self.free()
            self.dev = self.cuda.malloc(nbytes)
            self.host = self.cuda.host_empty((max(1, nbytes // self.dtype.itemsize),), self.dtype)
            self.capacity = nbytes
        self.shape = shape
        return changed

    @property
    def ptr(self) -> int:
        return self.cuda.ptr(self.dev)

    def view(self) -> np.ndarray:
        n = int(np.prod(self.shape))
        return self.host[:n].reshape(self.shape)

    def free(self) -> None:
        if self.dev is not None:
            self.cuda.free(self.dev)
            self.dev = None
        if self.host is not None:
            self.cuda.host_free(self.host)
            self.host = None
        self.capacity = 0
