"""Backend runners with one interface (Polygraphy-style): activate / infer / deactivate.

`infer({"gs": uint8 (B,S,S,3), "doppler": ...})` returns the package outputs `sh_prob`, `vs_prob`
(B, folds, 3, seeds), `heat_gs`, `heat_doppler` (B, h, w) whatever the strategy or backend, so verify,
bench, calibration and the runtime never care how a package was fused.
"""
from __future__ import annotations

import os

import numpy as np

from rating_edge.errors import PackageError, RatingEdgeError
from rating_edge.heatmap import HEAT_TASK, normalize_heat
from rating_edge.package import Package, load_package
from rating_edge.preprocess import check_batch
from rating_edge.spec import parse_network_id


class Runner:
    """Base runner; subclasses implement `_activate`, `_infer`, `_deactivate`."""

    name = "runner"

    def __init__(self, package: Package):
        self.package = package
        self.spec = package.spec
        self.active = False

    def activate(self) -> "Runner":
        if not self.active:
            self._activate()
            self.active = True
        return self

    def deactivate(self) -> None:
        if self.active:
            self._deactivate()
            self.active = False

    def __enter__(self):
        return self.activate()

    def __exit__(self, *exc):
        self.deactivate()

    def infer(self, feed: dict) -> dict:
        if not self.active:
            raise RatingEdgeError(f"{self.name}: call activate() before infer()")
        s = self.spec.input_size
        gs = check_batch(feed.get("gs"), s, "gs")
        dop = check_batch(feed.get("doppler"), s, "doppler")
        if gs.shape[0] != dop.shape[0]:
            raise RatingEdgeError(f"gs and doppler batches differ in size: {gs.shape[0]} vs {dop.shape[0]}")
        fixed = self.package.meta.get("batch", "dynamic")
        if fixed != "dynamic" and gs.shape[0] != int(fixed):
            raise RatingEdgeError(f"this package was exported for batch {fixed}; got batch {gs.shape[0]}")
        return self._infer(np.ascontiguousarray(gs), np.ascontiguousarray(dop))

    def _activate(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _infer(self, gs, dop):  # pragma: no cover - abstract
        raise NotImplementedError

    def _deactivate(self):
        pass


def default_threads() -> int:
    return int(os.environ.get("RATING_EDGE_THREADS", "0")) or (os.cpu_count() or 1)


class OrtRunner(Runner):
    """ONNX Runtime (CPU by default). `none` packages run one session per network and are assembled."""

    name = "onnxruntime"

    def __init__(self, package: Package, variant: str | None = None, providers=None, threads: int | None = None):
        super().__init__(package)
        self.variant = variant
        self.records = package.graphs(variant)
        self.providers = providers or ["CPUExecutionProvider"]
        self.threads = threads or default_threads()
        self.sessions = []

    def _activate(self):
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - install issue
            raise RatingEdgeError("onnxruntime is not installed: pip install 'rating-edge[runtime]'") from e
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if len(self.records) > 1:
            # many sessions run one after another: spinning thread pools would fight over the cores
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sessions = []
        for rec in self.records:
            path = self.package.file(rec["file"])
            try:
                sess = ort.InferenceSession(str(path), so, providers=self.providers)
            except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
                raise PackageError(f"{path}: ONNX Runtime cannot load this graph ({str(e).splitlines()[0][:300]})") from None
            self.sessions.append((rec, sess, [o.name for o in sess.get_outputs()]))

    def _deactivate(self):
        self.sessions = []

    def _infer(self, gs, dop):
        feed = {"gs": gs, "doppler": dop}
        if len(self.sessions) == 1 and self.sessions[0][0].get("kind", "fused") == "fused":
            _, sess, names = self.sessions[0]
            res = sess.run(None, feed)
            return dict(zip(names, res))
        return self._assemble(feed)

    def _assemble(self, feed):
        sp = self.spec
        b = feed["gs"].shape[0]
        out = {"sh_prob": np.zeros((b, sp.folds, sp.tasks, sp.seeds), np.float32),
               "vs_prob": np.zeros((b, sp.folds, sp.tasks, sp.seeds), np.float32)}
        cams = {"gs": [], "doppler": []}
        seen = set()
        for rec, sess, names in self.sessions:
            if rec.get("kind") == "fused":
                res = dict(zip(names, sess.run(None, feed)))
                for k in ("sh_prob", "vs_prob"):
                    mask = ~np.isnan(res[k])
                    out[k][mask] = res[k][mask]
                continue
            nid = rec["network"]
            fold, module, task, seed = parse_network_id(nid)
            inputs = {i.name: feed[i.name] for i in sess.get_inputs()}
            res = dict(zip(names, sess.run(None, inputs)))
            out[f"{module}_prob"][:, fold, task, seed] = res["prob"].reshape(b)
            seen.add(nid)
            if module == "sh" and task == HEAT_TASK:
                cams["gs"].append(res["cam_gs"])
                cams["doppler"].append(res["cam_doppler"])
        if not cams["gs"]:
            raise PackageError(f"{self.package.path}: no Grad-CAM outputs among its network graphs")
        out["heat_gs"] = normalize_heat(np.mean(cams["gs"], axis=0))
        out["heat_doppler"] = normalize_heat(np.mean(cams["doppler"], axis=0))
        return out


def choose_variant(package: Package, backend: str = "ort") -> str | None:
    """The graph form that fits `backend`: an INT8 package runs its U8S8 graph on ONNX Runtime (the
    TensorRT-style S8S8 Q/DQ graph is barely faster than FP32 on CPUs, DESIGN.md §4); TensorRT builds
    its own engines from the Q/DQ graph, so it needs no variant here."""
    if backend.split(":")[0] == "openvino":
        from rating_edge.infer.openvino import openvino_form, parse_backend

        return openvino_form(package, parse_backend(backend)[1])[1]
    variants = package.meta.get("variants", {})
    if backend == "ort" and package.meta.get("precision") == "int8" and "int8-u8s8" in variants:
        return "int8-u8s8"
    return None


def make_runner(package, backend: str = "ort", variant: str | None = None, **kw) -> Runner:
    """A runner for `package` (path or Package) on `backend`: "ort", "trt", "openvino[:fp32|bf16|int8]"
    (no precision: the fastest gated OpenVINO form here) or "auto" (the fastest gated CPU form here,
    ONNX Runtime or OpenVINO, see `rating_edge.infer.openvino.choose_cpu_form`).

    `variant` None picks the form that fits the backend (`choose_variant`); "default" forces the
    package's main (FP32) graphs."""
    if not isinstance(package, Package):
        package = load_package(package)
    if backend == "auto":
        from rating_edge.infer.openvino import choose_cpu_form

        form = choose_cpu_form(package)
        backend = form["backend"]
        variant = variant or form["variant"]
    if backend.split(":")[0] == "openvino":
        from rating_edge.infer.openvino import OpenVinoRunner, openvino_form, parse_backend

        _, prec = parse_backend(backend)
        prec, variant = openvino_form(package, prec, variant)
        return OpenVinoRunner(package, precision=prec, variant=variant, **kw)
    if backend == "ort":
        if variant is None:
            variant = choose_variant(package, backend)
        return OrtRunner(package, variant=variant, **kw)
    if backend == "trt":
        from rating_edge.runtime.trt_runner import TrtRunner  # lazy: TensorRT/CUDA only where installed

        return TrtRunner(package, **kw)
    raise RatingEdgeError(f"unknown backend {backend!r}; use 'ort', 'trt', 'openvino[:fp32|bf16|int8]' or 'auto'")
