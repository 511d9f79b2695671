"""`rating-edge export | verify | explain`."""
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from rating_edge.cli_checks import check_count, check_fraction, check_range
from rating_edge.errors import RatingEdgeError

console = Console(stderr=True)


def _parse_roi(text):
    if not text:
        return None
    from rating_edge.dataset import parse_roi

    return parse_roi(text, "--roi")


def print_report(rep: dict) -> None:
    t = Table(title=f"verify {rep['package']['path']} ({rep['package']['strategy']}, {rep['package']['variant']})")
    t.add_column("check")
    t.add_column("value", justify="right")
    for k, o in rep["outputs"].items():
        t.add_row(f"{k} max |diff|", f"{o['max_abs_diff']:.3g}")
        t.add_row(f"{k} mean |diff|", f"{o['mean_abs_diff']:.3g}")
        if "corr_min" in o:
            t.add_row(f"{k} correlation mean / min", f"{o['corr_mean']:.4f} / {o['corr_min']:.4f}")
    if "grades" in rep:
        for g in ("sh", "vs", "combined"):
            t.add_row(f"{g} agreement / kappa", f"{rep['grades'][g]['agreement']:.4f} / {rep['grades'][g]['kappa_linear']:.4f}")
        t.add_row("min per-network binary agreement", f"{rep['min_network_agreement']:.4f}")
    t.add_row("pairs", str(rep["pairs"]))
    eng = rep.get("engine") or {}
    if eng.get("backend") == "openvino":
        t.add_row("engine", f"OpenVINO {eng.get('openvino_version')} {eng.get('precision')} "
                            f"(hint {eng.get('inference_precision_hint')}, {eng.get('cpu_class')} CPU)")
    console.print(t)


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export_cmd(
        ckpt: Path = typer.Argument(..., help="Checkpoint folder (ensemble.json + networks/)."),
        out: Path = typer.Argument(..., help="Output package folder (must not exist)."),
        fuse: str = typer.Option("stack", help="stack (fused multi-head graph) or none (one graph per network)."),
        chunk: str = typer.Option(None, help="Members per stack: an integer (1 = separate branches) or 'auto' "
                                             "(time candidates here with ONNX Runtime). Default: one stack per input."),
        opset: int = typer.Option(17, help="ONNX opset (13-21)."),
        batch: str = typer.Option("dynamic", help="'dynamic' or 1."),
        no_dedup: bool = typer.Option(False, "--no-dedup", help="Keep identical backbones separate (debugging)."),
    ):
        """Export a checkpoint as an ONNX model package (fused `stack` or per-network `none`)."""
        from rating_edge.export.exporter import export_package

        p = export_package(ckpt, out, fuse=fuse, chunk=chunk, opset=opset, batch=batch, dedup=not no_dedup,
                           log=lambda m: console.print(m))
        console.print(f"[green]exported[/] {p}", soft_wrap=True)
        console.print(f"next: rating-edge verify {p} --reference {ckpt} --phantom 16", soft_wrap=True)
        console.print(f"then: rating-edge quantize {p} CALIB_SET {p}-int8 (INT8; CALIB_SET from `rating-edge calib "
                      f"collect`), or rating-edge bench {p} --reference {ckpt}")

    @app.command("verify")
    def verify_cmd(
        pkg: Path = typer.Argument(..., help="Model package folder."),
        reference: Path = typer.Option(..., "--reference", help="Reference checkpoint folder."),
        data: Path = typer.Option(None, "--data", help="Labelled dataset folder (labels.csv + images/)."),
        phantom: int = typer.Option(None, "--phantom", help="Use N phantom pairs (default when --data is absent: 16)."),
        limit: int = typer.Option(None, help="Use at most this many pairs of --data."),
        variant: str = typer.Option(None, help="Package variant to run (e.g. int8-u8s8)."),
        backend: str = typer.Option("ort", "--backend", help="ort, openvino (fastest gated form here), "
                                    "openvino:fp32|bf16|int8 (BF16/INT8 get the quantization gate), trt, or "
                                    "triton (a server serving this package: --url)."),
        url: str = typer.Option(None, "--url", help="--backend triton: grpc://HOST:8001 or http://HOST:8000."),
        infer_timeout: float = typer.Option(30.0, "--infer-timeout", help="--backend triton: seconds per batch."),
        json_out: Path = typer.Option(None, "--json", help="Write the full report here."),
        max_prob_diff: float = typer.Option(None, help="Gate: max |P_package - P_reference| (default 1e-4 for "
                                            "exact exports, not gated for INT8 variants and distilled students)."),
        min_grade_agreement: float = typer.Option(None, help="Gate: SH/VS/combined grade agreement, 0-1 (default 1 "
                                                  "for exact exports, the quantization gate for INT8, 0.97 distilled)."),
        min_network_agreement: float = typer.Option(None, help="Gate: per-network binary decision agreement, 0-1 "
                                                    "(default 1 for exact exports)."),
        min_heat_corr: float = typer.Option(None, help="Gate: heatmap correlation with autograd Grad-CAM, min over "
                                            "pairs (default 0.99 for exact exports)."),
        seed: int = typer.Option(0, help="Seed for phantom pairs."),
        plots: Path = typer.Option(None, "--plots", help="Also draw per-network probability scatters and the "
                                   "grade disagreement matrix here (PNG + SVG; needs the plots extra)."),
    ):
        """Run a package and the eager reference on the same pairs; exit 1 when a gate fails."""
        from rating_edge.export.inputs import dataset_pairs, phantom_pairs
        from rating_edge.export.verify import Gates, default_gates, verify_package
        from rating_edge.infer import backend_options
        from rating_edge.package import load_package
        from rating_edge.publish import write_report

        if data is not None and phantom is not None:
            raise RatingEdgeError("use either --data or --phantom, not both")
        check_count("--phantom", phantom)
        check_count("--limit", limit)
        check_range("--max-prob-diff", max_prob_diff, 0.0)
        check_fraction("--min-grade-agreement", min_grade_agreement)
        check_fraction("--min-network-agreement", min_network_agreement)
        check_range("--min-heat-corr", min_heat_corr, -1.0, 1.0)
        check_count("--seed", seed, 0)
        if json_out is not None and json_out.is_dir():
            raise RatingEdgeError(f"--json {json_out} is a folder; give a file name")
        package = load_package(pkg)
        params = package.preprocess
        base, why = default_gates(package, variant, backend)
        given = {"max_prob_diff": max_prob_diff, "min_grade_agreement": min_grade_agreement,
                 "min_network_agreement": min_network_agreement, "min_heat_corr": min_heat_corr}
        gates = Gates(**{k: (v if v is not None else getattr(base, k)) for k, v in given.items()})
        console.print(f"gates: {why}" + (" (with the options given)" if any(v is not None for v in given.values()) else ""))
        if data is not None:
            gs, dop = dataset_pairs(data, params, limit)
        else:
            gs, dop = phantom_pairs(phantom or 16, params, seed)
        if plots is not None:
            from rating_edge.plots.base import pyplot

            pyplot()  # a missing matplotlib stops here, before the model runs
        outputs = {} if plots is not None else None
        rep = verify_package(package, reference, gs, dop, gates, variant, outputs=outputs, backend=backend,
                             **backend_options(backend, url, infer_timeout))  # loaded, hash-checked once
        print_report(rep)
        if json_out:
            write_report(json_out, json.dumps(rep, indent=2, default=str))
        if plots is not None:
            from rating_edge.plots.agreement import write_agreement_plots

            name = f"{package.strategy}[{variant}]" if variant else f"{package.strategy} package"
            files = write_agreement_plots(outputs["reference"], outputs["test"], plots, "reference", name)
            console.print(f"wrote {len(files)} pictures to {plots}/ (scatter, disagreement)")
        if rep["passed"]:
            console.print("[green]PASS[/] all gates")
        else:
            for f in rep["failures"]:
                console.print(f"[red]FAIL[/] {f}")
            raise typer.Exit(1)

    @app.command("explain")
    def explain_cmd(
        ckpt: Path = typer.Argument(..., help="Checkpoint folder."),
        gs: Path = typer.Option(..., "--gs", help="Grayscale scanner image."),
        doppler: Path = typer.Option(..., "--doppler", help="Doppler scanner image."),
        out: Path = typer.Option(..., "--out", help="Output PNG (GS | transformed Doppler, yellow overlay)."),
        roi_gs: str = typer.Option(None, help="GS ROI 'x y w h' (default: whole image)."),
        roi_doppler: str = typer.Option(None, help="Doppler ROI 'x y w h' (default: whole image)."),
        steps: int = typer.Option(50, help="Integration steps."),
        samples: int = typer.Option(8, help="Noisy copies."),
        seed: int = typer.Option(0, help="Noise seed."),
        method: str = typer.Option("ig", "--method", help="ig (integrated gradients as the paper describes) or "
                                   "official (the authors' captum NoiseTunnel maps; needs the explain extra)."),
    ):
        """The paper's integrated-gradients heatmaps (off-line; slow on CPU for the paper preset)."""
        from rating_edge.export.explain import explain_pair

        check_count("--steps", steps)
        check_count("--samples", samples)
        maps = explain_pair(ckpt, gs, doppler, out, steps, samples, seed, _parse_roi(roi_gs), _parse_roi(roi_doppler),
                            method=method)
        frac = {k: float((v > 0).mean()) for k, v in maps.items()}
        console.print(f"[green]wrote[/] {out} (highlighted: GS {frac['gs']:.1%}, Doppler {frac['doppler']:.1%})")
