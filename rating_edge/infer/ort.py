"""ONNX Runtime (CPU by default): the reference backend every other one is compared with."""
from __future__ import annotations

from rating_edge.errors import PackageError
from rating_edge.infer.base import GraphRunner
from rating_edge.infer.errors import EngineUnavailable
from rating_edge.infer.loaders import GraphsFromPackage
from rating_edge.threads import inference_threads


class OrtRunner(GraphRunner):
    """Sessions for the package's graphs (or a variant's). `none` packages open one session per network."""

    name = "onnxruntime"
    backend = "ort"

    def __init__(self, package, variant: str | None = None, providers=None, threads: int | None = None):
        super().__init__(package)
        self.loader = GraphsFromPackage(package, variant if variant is not None else "default", "ort")
        self.variant = self.loader.variant
        self.precision = self.loader.precision
        self.records = self.loader()
        self.providers = providers or ["CPUExecutionProvider"]
        self.threads = inference_threads(threads)

    def _activate(self):
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - install issue
            raise EngineUnavailable("onnxruntime is not installed: pip install 'rating-edge[runtime]'") from None
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if len(self.records) > 1:
            # many sessions run one after another: spinning thread pools would fight over the cores
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.graphs = []
        for rec in self.records:
            path = self.package.file(rec["file"])
            try:
                sess = ort.InferenceSession(str(path), so, providers=self.providers)
            except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
                raise PackageError(f"{path}: ONNX Runtime cannot load this graph ({str(e).splitlines()[0][:300]})") from None
            handle = (sess, [i.name for i in sess.get_inputs()], [o.name for o in sess.get_outputs()])
            self.graphs.append((rec, handle))

    def _deactivate(self):
        self.graphs = []

    def _run_graph(self, handle, feed):
        sess, inputs, outputs = handle
        return dict(zip(outputs, sess.run(None, {n: feed[n] for n in inputs})))

    def describe(self) -> dict:
        return {**super().describe(), "variant": self.variant or "default", "threads": self.threads}
