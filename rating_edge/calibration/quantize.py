"""`rating-edge quantize`: FP32 package + calibration set -> INT8 package, or a refusal.

The INT8 package carries the FP32 graphs (default; FP16 TensorRT builds start from them) plus two
variants from one calibration: "int8-qdq" (TensorRT explicit quantization) and "int8-u8s8" (ONNX
Runtime on CPUs). Both are verified against FP32 on a held-out part of the calibration set and the
package is only written when both reach the gate on the combined score. Below the gate the most
sensitive layers go back to FP32, a few at a time, until the gate passes or keeping more in FP32
would no longer be INT8 (then it refuses and says which layers were to blame).
"""
from __future__ import annotations

import fnmatch
import json
import math
import shutil
import warnings
from pathlib import Path

from rating_edge.calibration.calibset import CalibSet, holdout_split, load_calib
from rating_edge.calibration.gate import (
    agreement_report,
    node_sensitivity,
    worst_members,
)
from rating_edge.calibration.qonnx import (
    METHODS,
    QUANT_OPS,
    graph_inputs,
    modelopt_available,
    quantize_modelopt,
    quantize_ort,
)
from rating_edge.errors import CalibrationError, PackageError, RatingEdgeError
from rating_edge.package import Package, load_package, write_model_json
from rating_edge.publish import publish, require_new_folder
from rating_edge.scoring import Thresholds

# U8S8 first: it quantizes more operator types, so its calibration pass records every tensor range
# that the Q/DQ form then reads from the same cache.
FORMS = {"int8-u8s8": "u8s8", "int8-qdq": "qdq"}
# The OpenVINO INT8 variant (NNCF, IR files), made when openvino + nncf are installed.
OV_FORM = "int8-ov"
# The OpenVINO INT8 variant (NNCF, IR files), made when openvino + nncf are installed.
OV_FORM = "int8-ov"
# Share of the quantized layers that may go back to FP32, per fallback round; past the last, refuse.
FALLBACK_STEPS = (0.02, 0.05, 0.1, 0.2, 0.35)


class GateRefused(CalibrationError):
    """INT8 changed the grades more than the gate allows; `report` holds the numbers."""

    def __init__(self, message: str, report: dict):
        super().__init__(message)
        self.report = report


def _quant_nodes(onnx_path) -> list[str]:
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    return [n.name for n in m.graph.node if n.op_type in QUANT_OPS]


def _copy_package(pkg: Package, dst: Path) -> None:
    for rel in pkg.meta["artifacts"]:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(pkg.file(rel), dst / rel)


def _infer(package: Package, variant, cs: CalibSet, batch: int = 16) -> dict:
    from rating_edge.infer.ort import OrtRunner

    return _run_all(OrtRunner(package, variant=variant), cs, batch)


def _infer_ov(package: Package, variant, cs: CalibSet, precision: str, batch: int = 16) -> dict:
    from rating_edge.infer.openvino import OpenVinoRunner

    return _run_all(OpenVinoRunner(package, precision=precision, variant=variant), cs, batch)


def _run_all(runner, cs: CalibSet, batch: int) -> dict:
    import numpy as np

    outs = []
    with runner as r:
        for s in range(0, len(cs), batch):
            outs.append(r.infer({"gs": cs.gs[s:s + batch], "doppler": cs.doppler[s:s + batch]}))
    return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def quantize_package(pkg_path, calib_path, out, method: str = "entropy", exclude=(), gate: float = 0.98,
                     fallback: bool = True, holdout: float = 0.25, engine: str = "auto", verify_set=None,
                     member_gate: float | None = None, openvino: bool | None = None, log=print, plots=None) -> dict:
    """Write the INT8 package to `out` and return its quantization record, or raise GateRefused.

    `verify_set`: gate on this calibration-format set instead of a held-out part of `calib_path`
    (then all of `calib_path` calibrates). `member_gate`: also require every network's binary
    agreement to reach this (one activation scale serves a whole stack, so one member can break while
    the combined score holds). A set with wrong preprocessing still yields self-consistent
    scales, so only images from outside it can show that they do not fit real input. `plots`: a folder
    for each variant's FP32-vs-INT8 pictures of the last round, drawn also when the gate refuses.
    `openvino` (default: when openvino and nncf are installed): also make the OpenVINO INT8 variant
    "int8-ov" (NNCF), gated and fallen back with the other forms, and gate OpenVINO BF16 on the same
    held-out pairs (recorded; a BF16 form below the gate is never chosen, it does not refuse INT8).
    """
    if method not in METHODS:
        raise CalibrationError(f"unknown calibration method {method!r}; use one of {', '.join(METHODS)}")
    if not 0.0 < gate <= 1.0:
        raise CalibrationError(f"--gate must lie in (0, 1], got {gate}")
    pkg = load_package(pkg_path)
    if pkg.meta.get("precision", "fp32") != "fp32":
        raise PackageError(f"{pkg.path}: precision is {pkg.meta.get('precision')}; quantize an FP32 package")
    out = Path(out)
    require_new_folder(out, CalibrationError)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cs = load_calib(calib_path, pkg.preprocess)
    for w in caught:
        log(f"warning: {w.message}")
    if cs.manifest["input_size"] != pkg.spec.input_size:
        raise CalibrationError(f"{calib_path}: {cs.manifest['input_size']}px images, the package wants "
                               f"{pkg.spec.input_size}px")
    if verify_set is not None:
        cal = cs
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            held = load_calib(verify_set, pkg.preprocess)
    else:
        cal_idx, held_idx = holdout_split(cs, holdout)
        cal, held = cs.subset(cal_idx), cs.subset(held_idx)
    from rating_edge.calibration.ov_quant import nncf_available

    if openvino and not nncf_available():
        raise CalibrationError("--openvino: openvino and nncf are not installed (pip install 'rating-edge[openvino]')")
    forms = dict(FORMS, **({OV_FORM: "ov"} if (nncf_available() if openvino is None else openvino) else {}))
    use_modelopt = engine == "modelopt" or (engine == "auto" and modelopt_available())
    if engine == "modelopt" and not modelopt_available():
        raise CalibrationError("--engine modelopt: nvidia-modelopt is not installed (pip install 'nvidia-modelopt[onnx]')")
    log(f"calibrating on {len(cal)} pairs, gate on {len(held)} held-out pairs ({method}; "
        f"Q/DQ by {'ModelOpt' if use_modelopt else 'ONNX Runtime'})")

    from rating_edge.calibration.ov_quant import nncf_available

    if openvino and not nncf_available():
        raise CalibrationError("--openvino: openvino and nncf are not installed (pip install 'rating-edge[openvino]')")
    forms = dict(FORMS, **({OV_FORM: "ov"} if (nncf_available() if openvino is None else openvino) else {}))
    with publish(out, CalibrationError) as stage:
        stage.mkdir()
        return _quantize_into(stage, pkg, cs, cal, held, calib_path, method, exclude, gate, fallback, member_gate,
                              use_modelopt, verify_set, log, plots, forms)


def _quantize_into(stage: Path, pkg: Package, cs: CalibSet, cal: CalibSet, held: CalibSet, calib_path, method,
                   exclude, gate, fallback, member_gate, use_modelopt, verify_set, log, plots=None,
                   forms=FORMS) -> dict:
    thresholds = Thresholds.from_meta(pkg.meta)
    _copy_package(pkg, stage)
    ref = _infer(pkg, None, held)
    graphs = pkg.graphs()
    per_graph = []
    for rec in graphs:
        src = stage / rec["file"]
        nodes = _quant_nodes(src)
        user_ex = sorted({n for n in nodes for p in exclude if fnmatch.fnmatchcase(n, p)})
        feeds = {k: (cal.gs if k == "gs" else cal.doppler) for k in graph_inputs(src)}
        per_graph.append({"rec": rec, "src": src, "nodes": nodes, "exclude": user_ex, "feeds": feeds,
                          "cache": stage / "calibration" / (Path(rec["file"]).stem + ".ranges.json")})
    total = sum(len(g["nodes"]) for g in per_graph)
    extra: list[tuple[int, str]] = []  # (graph index, node) kept FP32 by the fallback
    sensitivity = None
    rounds = []
    for step in (0.0,) + (FALLBACK_STEPS if fallback else ()):
        if step and sensitivity is None:
            sensitivity = _sensitivity(per_graph, stage, held)
        if step:
            k = max(1, math.ceil(step * total))
            extra = [(g, d["node"]) for g, d in sensitivity[:k]]
        reports, variants, outputs = {}, {}, {}
        for vname, form in forms.items():
            recs = []
            for gi, g in enumerate(per_graph):
                ex = g["exclude"] + [n for gj, n in extra if gj == gi]
                rel = f"{vname}/{g['rec']['file']}"
                if form == "ov":  # OpenVINO IR: model.xml + model.bin
                    rel = str(Path(rel).with_suffix(".xml"))
                dst = stage / rel
                for old in (dst, dst.with_suffix(".bin")) if form == "ov" else (dst,):
                    if old.exists():
                        old.unlink()
                if form == "ov":
                    from rating_edge.calibration.ov_quant import quantize_nncf

                    quantize_nncf(g["src"], dst, g["feeds"], ex)
                elif form == "qdq" and use_modelopt:
                    quantize_modelopt(g["src"], dst, g["feeds"], method, ex)
                else:
                    quantize_ort(g["src"], dst, form, g["feeds"], method, g["cache"], ex)
                recs.append({**g["rec"], "file": rel})
            variants[vname] = recs
            cand = Package(stage, {**pkg.meta, "variants": {**pkg.meta.get("variants", {}), vname: recs}})
            outputs[vname] = _infer_ov(cand, vname, held, "int8") if form == "ov" else _infer(cand, vname, held)
            reports[vname] = agreement_report(ref, outputs[vname], pkg.spec, thresholds)
        worst = min(r["combined_agreement"] for r in reports.values())
        members_ok = member_gate is None or all(r["member_agreement_min"] >= member_gate
                                                for r in reports.values())
        finite_ok = all(r["nonfinite_pairs"] == 0 for r in reports.values())
        rounds.append({"fp32_layers": len(extra), "combined_agreement": {v: r["combined_agreement"]
                                                                        for v, r in reports.items()}})
        log(f"  {len(extra)} extra layer(s) kept FP32: combined agreement "
            + ", ".join(f"{v} {r['combined_agreement']:.3f}" for v, r in reports.items())
            + "".join(f"; {v}: NaN/Inf on {r['nonfinite_pairs']} pairs" for v, r in reports.items()
                      if r["nonfinite_pairs"]))
        if worst >= gate and members_ok and finite_ok:
            break
    else:
        if plots is not None:
            _draw(plots, ref, outputs, log)
        if sensitivity is None:
            sensitivity = _sensitivity(per_graph, stage, held)
        top = [f"{per_graph[g]['rec']['file']}:{d['node']} (adds {d['added_error']:.3f} rel. error)"
               for g, d in sensitivity[:8]]
        bad = min(reports.items(), key=lambda kv: kv[1]["combined_agreement"])
        members = ", ".join(f"{m['network']} {m['agreement']:.2f}" for m in worst_members(bad[1]))
        why = ("even with the most sensitive layers kept in FP32" if fallback else "(fallback disabled)")
        if not finite_ok:
            bad = max(reports.items(), key=lambda kv: kv[1]["nonfinite_pairs"])
            what = f"{bad[0]} gave NaN or infinite outputs on {bad[1]['nonfinite_pairs']} pairs"
        elif worst >= gate:  # the combined score held; a member did not
            bad = min(reports.items(), key=lambda kv: kv[1]["member_agreement_min"])
            what = (f"member agreement {bad[1]['member_agreement_min']:.3f} ({bad[0]}) is below the member "
                    f"gate {member_gate}")
        else:
            what = (f"combined-score agreement {bad[1]['combined_agreement']:.3f} ({bad[0]}) is below "
                    f"the gate {gate}")
        raise GateRefused(
            f"INT8 refused: {what} on {len(held)} held-out pairs {why}. Most sensitive layers: {'; '.join(top)}. "
            f"Worst members: {members}. Check the calibration set (same preprocessing, real images, "
            ">= 300 pairs) or keep layers FP32 with --exclude PATTERN",
            {"rounds": rounds, "reports": reports, "sensitivity": _named(sensitivity, per_graph)[:20]})

    if plots is not None:
        _draw(plots, ref, outputs, log)
    ov_record = None
    if OV_FORM in forms:
        ov_record = _openvino_extras(pkg, stage, variants, held, ref, reports, gate, log, thresholds)
    meta = dict(pkg.meta)
    meta["precision"] = "int8"
    # engines built on devices (engines.json) belong to the FP32 package; old-style ones were copied
    meta["engines"] = [e for e in pkg.meta.get("engines", []) if e["file"] in pkg.meta["artifacts"]]
    meta["variants"] = {**pkg.meta.get("variants", {}), **variants}
    record = {"method": method, "gate": gate, "member_gate": member_gate,
              "verified_on": str(verify_set) if verify_set else "held-out",
              "quantizer": {"int8-qdq": "modelopt" if use_modelopt else "onnxruntime", "int8-u8s8": "onnxruntime",
                            **({OV_FORM: "nncf"} if ov_record else {})},
              "calibration": {"path": str(calib_path), "pairs": len(cal), "held_out": len(held),
                              "source": cs.manifest.get("source")},
              "exclude_patterns": list(exclude), "fp32_layers": [f"{per_graph[g]['rec']['file']}:{n}"
                                                                  for g, n in extra],
              "quantized_layers": total - len(extra) - sum(len(g["exclude"]) for g in per_graph),
              "rounds": rounds, "reports": reports, "source_package": pkg.model_hash}
    if ov_record:
        record["openvino"] = ov_record
    meta["quantization"] = record
    # every form the choice can pick here (`cpu_forms` reads the gates just recorded), timed at batch 1
    from rating_edge.calibration.cpu_timing import cpu_forms, time_cpu_forms

    cand = Package(stage, meta)
    log("timing the CPU forms at batch 1 (for the fastest-form choice on this CPU):")
    record["cpu_timing"] = time_cpu_forms(cand, held.gs, held.doppler, cpu_forms(cand, log), log=log)
    files = [str(p.relative_to(stage)) for p in stage.rglob("*") if p.is_file() and p != stage / "model.json"]
    meta["artifacts"] = {}
    write_model_json(stage, meta, files)
    return record


def _openvino_extras(pkg, stage: Path, variants: dict, held: CalibSet, ref: dict, reports: dict, gate: float,
                     log, thresholds=None) -> dict:
    """OpenVINO BF16 (the FP32 graphs at BF16) gated on the held-out pairs, and OpenVINO reading the Q/DQ
    ONNX reported beside NNCF's IR (the two INT8 routes the issue asked to compare). Neither can refuse
    the package: a BF16 form below the gate is recorded as not passed and never chosen."""
    import nncf
    import openvino as ov

    from rating_edge.infer.openvino import machine_key

    cand = Package(stage, {**pkg.meta, "variants": {**pkg.meta.get("variants", {}), **variants}})
    rec = {"int8_variant": OV_FORM, "nncf_version": nncf.__version__, "openvino_version": ov.__version__.split("-")[0],
           "made_on": machine_key()}
    try:
        reports["openvino-bf16"] = agreement_report(ref, _infer_ov(cand, None, held, "bf16"), pkg.spec, thresholds)
        rec["bf16_passed"] = reports["openvino-bf16"]["combined_agreement"] >= gate
    except RatingEdgeError as e:  # no BF16 on this CPU: nothing to gate here
        rec["bf16_passed"] = False
        rec["bf16_skipped"] = str(e)
    reports["openvino-int8-qdq"] = agreement_report(ref, _infer_ov(cand, "int8-qdq", held, "int8"),
                                                    pkg.spec, thresholds)
    # Which INT8 route OpenVINO runs faster depends on the graph (NNCF's IR won on the distilled student,
    # OpenVINO reading the Q/DQ ONNX on the grouped-conv stack: docs/openvino.md), so both gated routes
    # are timed here and the faster one is recorded as the package's OpenVINO INT8 form.
    routes = {OV_FORM: OV_FORM, "int8-qdq": "openvino-int8-qdq"}  # variant -> its report
    gated = [v for v, r in routes.items()
             if reports[r]["combined_agreement"] >= gate and reports[r]["nonfinite_pairs"] == 0]
    rec["int8_timing_ms"] = {v: _time_batch1(cand, v, held) for v in gated}
    best = min(gated, key=rec["int8_timing_ms"].get)
    rec["int8_variant"], rec["int8_report"] = best, routes[best]
    log("  OpenVINO: " + ", ".join(f"{k} {reports[k]['combined_agreement']:.3f}"
                                   for k in ("openvino-bf16", "openvino-int8-qdq") if k in reports)
        + ("" if rec["bf16_passed"] else " (BF16 not gated: never chosen)")
        + "; INT8 batch-1 ms " + ", ".join(f"{v} {ms:.1f}" for v, ms in rec["int8_timing_ms"].items())
        + f" -> {best}")
    return rec


def _time_batch1(package: Package, variant: str, held: CalibSet, iters: int = 5) -> float:
    """Median batch-1 milliseconds of OpenVINO INT8 on `variant` (after one warm-up pair)."""
    from rating_edge.calibration.cpu_timing import median_ms
    from rating_edge.infer.openvino import OpenVinoRunner

    with OpenVinoRunner(package, precision="int8", variant=variant) as r:
        return median_ms(r, {"gs": held.gs[:1], "doppler": held.doppler[:1]}, iters)


def _draw(folder, ref: dict, outputs: dict, log) -> None:
    """FP32-vs-INT8 pictures per variant (the gate's held-out pairs, the last round's layers)."""
    from rating_edge.plots.agreement import write_agreement_plots

    for vname, out in outputs.items():
        files = write_agreement_plots(ref, out, folder, "FP32", vname, prefix=f"{vname}_")
        log(f"wrote {len(files)} pictures for {vname} to {folder}/")


def _sensitivity(per_graph, stage: Path, held: CalibSet) -> list[tuple[int, dict]]:
    """All graphs' quantized nodes, most error-adding first (measured on the Q/DQ form)."""
    ranked = []
    for gi, g in enumerate(per_graph):
        qdq = stage / "int8-qdq" / g["rec"]["file"]
        feeds = {k: (held.gs if k == "gs" else held.doppler) for k in g["feeds"]}
        for d in node_sensitivity(g["src"], qdq, feeds, QUANT_OPS):
            if d["node"] not in g["exclude"]:
                ranked.append((gi, d))
    return sorted(ranked, key=lambda t: -t[1]["added_error"])


def _named(sens, per_graph) -> list[dict]:
    return [{"graph": per_graph[g]["rec"]["file"], **d} for g, d in sens]


def print_report(record: dict, log=print, members: int = 8) -> None:
    for vname, rep in record["reports"].items():
        log(f"{vname}: combined {rep['combined_agreement']:.3f}, SH {rep['sh_agreement']:.3f}, "
            f"VS {rep['vs_agreement']:.3f} on {rep['pairs']} held-out pairs; members: min "
            f"{rep['member_agreement_min']:.3f}, mean {rep['member_agreement_mean']:.3f}; "
            f"max |dp| {rep['max_abs_prob_diff']:.3f}")
        for m in rep["models"]:
            log(f"  fold {m['fold']}: SH grade agreement {m['sh_agreement']:.3f}, VS {m['vs_agreement']:.3f}")
        for m in worst_members(rep, members):
            log(f"  {m['network']}: binary agreement {m['agreement']:.3f}, max |dp| {m['max_abs_diff']:.3f}")


def report_json(record: dict) -> str:
    return json.dumps(record, indent=2)
