"""CLI: `calib collect`, `quantize`, `build`. Heavy imports stay inside the command bodies."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from rating_edge.cli_checks import check_count, check_fraction, check_range
from rating_edge.errors import RatingEdgeError

console = Console(stderr=True)
calib_app = typer.Typer(help="Calibration sets for INT8 quantization.", no_args_is_help=True)


def _params_for(package: Optional[Path], input_size: Optional[int]):
    from rating_edge.preprocess import PreprocessParams

    if package is not None:
        from rating_edge.package import load_package

        p = load_package(package).preprocess
        if input_size is not None and input_size != p.input_size:
            raise RatingEdgeError(f"--input-size {input_size} differs from the package's {p.input_size}")
        return p
    return PreprocessParams(input_size=input_size or 224)


@calib_app.command("collect")
def collect_cmd(
    out: Path = typer.Argument(..., help="Output calibration folder (must not exist or be empty)."),
    source: Optional[str] = typer.Option(None, "--source", help="Scanner video source (file, device, URL) read "
                                          "through the runtime's capture, mode detection and pairing."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", help="Labelled dataset folder (labels.csv + images/)."),
    phantom: Optional[int] = typer.Option(None, "--phantom", help="Generate N phantom pairs (all grades)."),
    max_pairs: Optional[int] = typer.Option(None, "--max", help="Keep at most N pairs, balanced over grades and "
                                            "Doppler content."),
    package: Optional[Path] = typer.Option(None, "--package", help="Take preprocessing parameters from this package."),
    input_size: Optional[int] = typer.Option(None, "--input-size", help="Input size without --package (224)."),
    seed: int = typer.Option(0, help="Random seed (phantom, balanced subset)."),
):
    """Collect preprocessed calibration pairs into shards with a manifest."""
    from rating_edge.calibration.calibset import MIN_PAIRS, write_calib
    from rating_edge.calibration.collect import (
        collect_dataset,
        collect_phantom,
        collect_source,
    )

    chosen = [x is not None for x in (source, dataset, phantom)]
    if sum(chosen) != 1:
        raise RatingEdgeError("give exactly one of --source, --dataset or --phantom")
    check_count("--phantom", phantom)
    check_count("--max", max_pairs)
    check_count("--input-size", input_size, 32, 4096)
    check_count("--seed", seed, 0)
    params = _params_for(package, input_size)
    if phantom is not None:
        n = min(phantom, max_pairs) if max_pairs else phantom
        gs, dop, labels, src = collect_phantom(n, params, seed)
    elif dataset is not None:
        gs, dop, labels, src = collect_dataset(dataset, params, max_pairs, seed)
    else:
        gs, dop, labels, src = collect_source(source, params, max_pairs or 1000, seed)
    p = write_calib(out, gs, dop, labels, params, src)
    man = json.loads(p.read_text())
    console.print(f"[green]wrote[/] {out}: {man['count']} pairs ({man['input_size']}px), grades (combined) "
                  f"{man['grades']['combined']}, Doppler signal in {man['doppler_fraction']['with_signal']} pairs")
    if man["count"] < MIN_PAIRS:
        console.print(f"[yellow]warning:[/] only {man['count']} pairs; INT8 scales from fewer than {MIN_PAIRS} "
                      "pairs are noisy")
    console.print(f"next: rating-edge quantize PKG {out} PKG-int8", soft_wrap=True)


def quantize_cmd(
    pkg: Path = typer.Argument(..., help="FP32 model package."),
    calib: Path = typer.Argument(..., help="Calibration set from `rating-edge calib collect`."),
    out: Path = typer.Argument(..., help="Output INT8 package folder (must not exist or be empty)."),
    method: str = typer.Option("entropy", help="Calibration: entropy, minmax or percentile."),
    exclude: Optional[List[str]] = typer.Option(None, "--exclude", help="Keep nodes whose name matches this glob "
                                                "in FP32 (repeatable), e.g. '*conv1*'."),
    gate: float = typer.Option(0.98, help="Minimum combined-score agreement with FP32 on held-out pairs."),
    member_gate: Optional[float] = typer.Option(None, "--member-gate", help="Also require every network's "
                                                "binary agreement with FP32 to reach this."),
    fallback: bool = typer.Option(True, "--fallback/--no-fallback", help="Keep the most sensitive layers FP32 "
                                  "until the gate passes."),
    holdout: float = typer.Option(0.25, help="Share of the calibration set held out for the gate."),
    engine: str = typer.Option("auto", help="Q/DQ quantizer: auto (ModelOpt if installed), modelopt or ort."),
    verify: Optional[Path] = typer.Option(None, "--verify", help="Gate on this calibration set instead of a "
                                          "held-out part of CALIB."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write the agreement report (JSON) here, also "
                                          "when the gate refuses."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Draw FP32-vs-INT8 per-network scatters and grade "
                                         "disagreement matrices here, also when the gate refuses (plots extra)."),
    openvino: Optional[bool] = typer.Option(None, "--openvino/--no-openvino", help="Also make the OpenVINO INT8 "
                                            "variant (NNCF) and gate OpenVINO BF16 (default: when openvino and nncf "
                                            "are installed)."),
):
    """INT8 package (TensorRT Q/DQ + ONNX Runtime U8S8 [+ OpenVINO]) from one calibration, gated against FP32."""
    from rating_edge.calibration.quantize import (
        GateRefused,
        print_report,
        quantize_package,
        report_json,
    )
    from rating_edge.publish import write_report

    check_fraction("--gate", gate, lo_open=True)
    check_fraction("--member-gate", member_gate)
    check_range("--holdout", holdout, 0.0, 1.0, lo_open=True, hi_open=True)
    if report is not None and report.is_dir():
        raise RatingEdgeError(f"--report {report} is a folder; give a file name")
    def log(msg):
        console.print(msg, markup=False, highlight=False)

    if plots is not None:
        from rating_edge.plots.base import pyplot

        pyplot()  # a missing matplotlib stops here, before calibration
    try:
        rec = quantize_package(pkg, calib, out, method=method, exclude=exclude or [], gate=gate,
                               fallback=fallback, holdout=holdout, engine=engine,
                               verify_set=verify, member_gate=member_gate, openvino=openvino, log=log,
                               plots=plots)
    except GateRefused as e:
        if report is not None:
            write_report(report, report_json(e.report), "--report")
        raise
    print_report(rec, log)
    if report is not None:
        write_report(report, report_json(rec), "--report")
    console.print(f"[green]wrote[/] {out} (precision int8; variants int8-qdq for TensorRT, int8-u8s8 for "
                  "ONNX Runtime" + (", int8-ov for OpenVINO" if rec.get("openvino") else "") + ")")
    console.print(f"next: rating-edge bench {out}   or on the target: rating-edge build {out} --precision int8", soft_wrap=True)


def build_cmd(
    pkg: Path = typer.Argument(..., help="Model package (FP32, or INT8 from `rating-edge quantize`)."),
    precision: str = typer.Option("fp16", help="fp32, fp16 or int8 (int8 needs a quantized package)."),
    dla_core: Optional[int] = typer.Option(None, "--dla-core", help="Build for this DLA core (Jetson), GPU fallback on."),
    workspace: int = typer.Option(2048, "--workspace", help="Builder workspace memory pool limit in MB."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="Read/update this timing cache file."),
    max_batch: int = typer.Option(1, "--max-batch", help="Largest batch of the optimization profile (dynamic packages)."),
    cpu: bool = typer.Option(False, "--cpu", help="No TensorRT: time the package's gated CPU forms (ONNX Runtime, "
                             "OpenVINO) on this machine and record them, so `--backend auto` runs the fastest here."),
):
    """Build a TensorRT engine on this machine and record it in the package's engines.json (or, with
    --cpu, this machine's timings of the CPU forms)."""
    if cpu:
        from rating_edge.calibration.cpu_timing import record_cpu_timing
        from rating_edge.infer.cpu_forms import choose_cpu_form
        from rating_edge.package import load_package

        record_cpu_timing(pkg, log=lambda m: console.print(m, markup=False))
        form = choose_cpu_form(load_package(pkg))
        console.print(f"[green]recorded[/] this machine's CPU timings in {pkg}/engines.json; auto runs "
                      f"{form['backend']} ({form['variant']} graphs): {form['why']}", soft_wrap=True)
        console.print(f"next: rating-edge run ... --package {pkg} --backend auto", soft_wrap=True)
        return
    from rating_edge.calibration.trt_build import build_engine

    check_count("--dla-core", dla_core, 0)
    check_count("--workspace", workspace)
    check_count("--max-batch", max_batch, 1, 4096)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        rec = build_engine(pkg, precision=precision, dla_core=dla_core, workspace_mb=workspace,
                           timing_cache=timing_cache, max_batch=max_batch, log=lambda m: console.print(m, markup=False))
    console.print(f"[green]built[/] {pkg}/{rec['file']} for {rec['gpu']} (sm {rec['compute_capability']}, "
                  f"TensorRT {rec['trt_version']}, {rec['precision']})")
    console.print(f"next: rating-edge run ... --package {pkg} --backend trt", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.add_typer(calib_app, name="calib")
    app.command("quantize")(quantize_cmd)
    app.command("build")(build_cmd)
