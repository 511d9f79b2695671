"""The runner contract every backend keeps (Polygraphy-style: activate / infer / deactivate).

`infer({"gs": uint8 (B,S,S,3), "doppler": ...})` returns the package outputs `sh_prob`, `vs_prob`
(B, folds, 3, seeds), `heat_gs`, `heat_doppler` (B, h, w) whatever the fusion strategy or backend, so
verify, bench, calibration, archives and the runtime never care how a package was fused or where it runs.
The base class checks the feed before and the outputs after, so a backend that returns something else
fails here with the output's name, not three modules later in decoding.
"""
from __future__ import annotations

import numpy as np

from rating_edge.errors import PackageError, RatingEdgeError
from rating_edge.heatmap import HEAT_TASK, normalize_heat
from rating_edge.infer.errors import EngineMismatch
from rating_edge.preprocess import check_batch
from rating_edge.spec import parse_network_id

OUTPUTS = ("sh_prob", "vs_prob", "heat_gs", "heat_doppler")


class Runner:
    """Base runner; backends implement `_activate`, `_infer(gs, dop) -> outputs`, `_deactivate`."""

    name = "runner"
    backend = "runner"  # short name used in bench rows and reports ("ort", "trt", ...)

    def __init__(self, package):
        self.package = package
        self.spec = package.spec
        self.active = False
        self.precision = "fp32"

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
        out = self._infer(np.ascontiguousarray(gs), np.ascontiguousarray(dop))
        return check_outputs(out, gs.shape[0], self.spec, f"{self.name} ({self.package.path})")

    def describe(self) -> dict:
        """What runs: recorded in bench rows, reports and logs."""
        return {"backend": self.backend, "precision": self.precision}

    def _activate(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _infer(self, gs, dop):  # pragma: no cover - abstract
        raise NotImplementedError

    def _deactivate(self):
        pass


def check_outputs(out: dict, batch: int, spec, where: str) -> dict:
    """Every package output present with its shape: a graph exported with other output names must not
    pass as an empty result."""
    missing = [k for k in OUTPUTS if k not in out]
    if missing:
        raise EngineMismatch(f"{where}: outputs {', '.join(missing)} are missing "
                             f"(it returned {', '.join(sorted(out)) or 'nothing'}); re-export the package")
    want = (batch, spec.folds, spec.tasks, spec.seeds)
    for k in ("sh_prob", "vs_prob"):
        if tuple(np.shape(out[k])) != want:
            raise EngineMismatch(f"{where}: output {k} has shape {tuple(np.shape(out[k]))}, expected {want}")
    for k in ("heat_gs", "heat_doppler"):
        if np.ndim(out[k]) != 3 or np.shape(out[k])[0] != batch:
            raise EngineMismatch(f"{where}: output {k} has shape {tuple(np.shape(out[k]))}, expected ({batch}, h, w)")
    return out


class GraphRunner(Runner):
    """A runner over a package's graphs: one fused graph, or one graph per network (`none` strategy)
    whose outputs are assembled here, once, for every backend. Backends open `self.graphs` as
    [(record, handle)] and implement `_run_graph(handle, feed) -> {output name: array}`, taking from the
    feed only the inputs that graph declares."""

    def __init__(self, package):
        super().__init__(package)
        self.graphs: list[tuple[dict, object]] = []

    def _run_graph(self, handle, feed: dict) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _infer(self, gs, dop):
        feed = {"gs": gs, "doppler": dop}
        return assemble(self.spec, ((rec, self._run_graph(h, feed)) for rec, h in self.graphs), self.package.path)


def assemble(spec, results, where) -> dict:
    """Package outputs from per-graph results [(record, outputs)]: a lone fused graph is the answer;
    per-network graphs fill their (fold, task, seed) cell, and the SH networks of the heatmap task give
    the mean Grad-CAM. Fused records next to network records (partial fusion) fill what they computed."""
    results = list(results)
    if len(results) == 1 and results[0][0].get("kind", "fused") == "fused":
        return results[0][1]
    if not results:
        raise PackageError(f"{where}: no graphs to run")
    b = None
    out = {}
    cams = {"gs": [], "doppler": []}
    for rec, res in results:
        if b is None:
            first = next(iter(res.values()))
            b = np.shape(first)[0]
            out = {k: np.zeros((b, spec.folds, spec.tasks, spec.seeds), np.float32) for k in ("sh_prob", "vs_prob")}
        if rec.get("kind", "fused") == "fused":
            for k in ("sh_prob", "vs_prob"):
                if k in res:
                    mask = ~np.isnan(res[k])
                    out[k][mask] = res[k][mask]
            continue
        nid = rec["network"]
        fold, module, task, seed = parse_network_id(nid)
        if "prob" not in res:
            raise EngineMismatch(f"{where}: network graph {nid} has no output 'prob'")
        out[f"{module}_prob"][:, fold, task, seed] = np.asarray(res["prob"]).reshape(b)
        if module == "sh" and task == HEAT_TASK:
            cams["gs"].append(res["cam_gs"])
            cams["doppler"].append(res["cam_doppler"])
    if not cams["gs"]:
        raise PackageError(f"{where}: no Grad-CAM outputs among its network graphs")
    out["heat_gs"] = normalize_heat(np.mean(cams["gs"], axis=0))
    out["heat_doppler"] = normalize_heat(np.mean(cams["doppler"], axis=0))
    return out
