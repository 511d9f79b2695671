"""The two stages of archive scoring, as plain functions the Ray pipeline and the in-process loop share.

`decode_study` (a Ray task per study): fetch the instances, decode every frame, pair with the runtime's
rules, preprocess -> one row per pair (engine inputs + where the pair came from), or one marker row for
a study without pairs or one that failed. `PairScorer` (a Ray actor each, holding one runner): engine
+ ECOC/MULTITUDE per pair through the runtime Scorer's own grading. Rows carry their metadata as JSON
text so they cross Arrow blocks unchanged whatever fields a pair has.
"""
from __future__ import annotations

import json
import time

import numpy as np

from rating_edge import __version__

_PARAMS: dict = {}


def _params(package_path: str):
    """Preprocessing parameters of a package, read once per worker process (model.json only)."""
    p = _PARAMS.get(package_path)
    if p is None:
        from rating_edge.archive.study import scoring_params
        from rating_edge.package import load_package

        p = _PARAMS[package_path] = scoring_params(load_package(package_path, verify=False))
    return p


def decode_study(study: dict, source: str, package: str, max_age_s: float, profile: str | None = None) -> list[dict]:
    """Rows of one study: one per pair, or a single marker row (pair_index -1) with its error, if any."""
    from rating_edge.archive.sources import load_study
    from rating_edge.archive.study import empty_inputs, pair_study
    from rating_edge.runtime.layout import load_profile

    t0 = time.perf_counter()
    params = _params(package)
    uid = study["study_uid"]
    info = {"study_uid": uid, "header": {}, "instances": 0, "frames": 0, "skipped": 0, "sop_classes": {},
            "error": ""}
    try:
        sp = pair_study(uid, load_study(source, study), params, load_profile(profile) if profile else None, max_age_s)
        info.update(header=sp.header, instances=sp.instances, frames=sp.frames, skipped=sp.skipped,
                    sop_classes=sp.sop_classes)
        metas, gs, dop = sp.rows, sp.gs, sp.doppler
    except Exception as e:  # noqa: BLE001 - one bad study must not stop an archive; it is reported and retried
        info["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        metas, gs, dop = [], [], []
    info["decode_s"] = round(time.perf_counter() - t0, 4)
    text = json.dumps(info)
    n = len(metas)
    if n == 0:
        z = empty_inputs(params)
        return [{"study_uid": uid, "pair_index": -1, "n_pairs": 0, "study": text, "meta": "{}", "gs": z, "doppler": z}]
    return [{"study_uid": uid, "pair_index": i, "n_pairs": n, "study": text, "meta": json.dumps(m), "gs": g, "doppler": d}
            for i, (m, g, d) in enumerate(zip(metas, gs, dop))]


class PairScorer:
    """One runner per instance (a Ray actor or the in-process loop); `__call__` scores a batch of rows."""

    def __init__(self, package: str, backend: str = "ort", threads: int | None = None, variant: str | None = None):
        from rating_edge.infer import make_runner
        from rating_edge.package import load_package

        pkg = load_package(package)  # verified: the hash in the results must be the model that ran
        kw = {"threads": threads} if (threads and backend == "ort") else {}
        self.runner = make_runner(pkg, backend, variant, **kw).activate()
        self.model_hash = pkg.model_hash
        self.backend = backend
        from rating_edge.scoring import Thresholds

        self.thresholds = Thresholds.from_meta(pkg.meta)  # the model's own decision thresholds

    def __call__(self, batch: dict) -> dict:
        from rating_edge.runtime.worker import Scorer

        out = {"study_uid": [], "pair_index": [], "n_pairs": [], "study": [], "meta": [], "result": []}
        for i in range(len(batch["study_uid"])):
            res = {}
            if int(batch["pair_index"][i]) >= 0:
                t0 = time.perf_counter()
                try:
                    eng = self.runner.infer({"gs": np.asarray(batch["gs"][i])[None],
                                             "doppler": np.asarray(batch["doppler"][i])[None]})
                    scores, sh_prob, vs_prob = Scorer.grade(eng, self.thresholds)
                    res = {k: (np.asarray(v).tolist()) for k, v in scores.items()}
                    res.update(sh_prob=np.asarray(sh_prob, np.float64).ravel().tolist(),
                               vs_prob=np.asarray(vs_prob, np.float64).ravel().tolist(),
                               prob_shape=list(np.shape(sh_prob)))
                except Exception as e:  # noqa: BLE001 - recorded per pair; the study is still summarised
                    res = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
                res.update(infer_ms=round((time.perf_counter() - t0) * 1e3, 3), model_hash=self.model_hash,
                           backend=self.backend, toolkit_version=__version__)
            for k in ("study_uid", "pair_index", "n_pairs", "study", "meta"):
                v = batch[k][i]
                out[k].append(v.item() if hasattr(v, "item") else v)
            out["result"].append(json.dumps(res))
        return {k: np.asarray(v, dtype=object) if k in ("study_uid", "study", "meta", "result") else np.asarray(v)
                for k, v in out.items()}

    def close(self) -> None:
        self.runner.deactivate()
