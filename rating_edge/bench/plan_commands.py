"""`rating-edge plan`: a per-pair latency estimate of a package on a Jetson (or an H200), before buying one."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from rating_edge.errors import RatingEdgeError


def register(app: typer.Typer) -> None:
    @app.command("plan")
    def plan_cmd(
        package: Optional[Path] = typer.Argument(None, help="Model package folder (with model.json)."),
        device: str = typer.Option(..., "--device", help="orin-nano | orin-nx | agx-orin | xavier-nx | igx-orin | h200"),
        precision: Optional[List[str]] = typer.Option(None, "--precision",
                                                      help="fp32|fp16|int8 (repeatable); default: the package's, fp16, int8."),
        variant: Optional[str] = typer.Option(None, help="Count a variant's graphs (e.g. int8-qdq) instead of the default."),
        dla: bool = typer.Option(False, "--dla", help="Add the DLA cores' peak to the GPU's (INT8/FP16 only)."),
        compute_eff: float = typer.Option(0.40, help="Assumed fraction of dense compute peak reached at batch 1."),
        memory_eff: float = typer.Option(0.70, help="Assumed fraction of nominal memory bandwidth sustained."),
        launch_us: float = typer.Option(3.0, help="Assumed per-layer launch cost in microseconds."),
        preset: Optional[str] = typer.Option(None, help="No package: estimate the paper|tiny ensemble structure "
                                             "(one ResNet-18 counted, x --backbones, + heads; needs torch)."),
        backbones: Optional[int] = typer.Option(None, help="With --preset: backbones per pair (default: all "
                                                "of the exact ensemble, 90 in the paper; 2 = shared-backbone student)."),
        json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the estimate as JSON here ('-' = stdout only)."),
    ):
        """ESTIMATE per-pair latency on a device from the package's counted MACs and bytes (roofline)."""
        from rating_edge.bench.plan import DEVICES, count_structure, plan

        if device not in DEVICES:
            raise RatingEdgeError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
        from rating_edge.cli_checks import check_count, check_fraction, check_range

        check_fraction("--compute-eff", compute_eff, lo_open=True)
        check_fraction("--memory-eff", memory_eff, lo_open=True)
        check_range("--launch-us", launch_us, 0.0, 1e6)
        check_count("--backbones", backbones)
        if (package is None) == (preset is None):
            raise RatingEdgeError("give a package folder, or --preset paper|tiny for the ensemble structure")
        count = None
        if preset is not None:
            from rating_edge.spec import preset as get_preset

            count = count_structure(get_preset(preset), backbones)
        res = plan(package, device, list(precision) if precision else None, variant=variant, dla=dla,
                   compute_eff=compute_eff, memory_eff=memory_eff, launch_us=launch_us, count=count)
        if json_out is not None and str(json_out) == "-":
            print(json.dumps(res, indent=2))
            return
        if json_out is not None:
            json_out.write_text(json.dumps(res, indent=2))
        print_plan(res)


def print_plan(res: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=max(Console().width, 112))
    dev = res["device"]
    a = res["assumptions"]
    t = Table(title=f"ESTIMATE (not measured): {Path(res['package']).name} ({res['strategy']}, "
                    f"{res['gmacs_per_pair']:.2f} GMAC/pair, {res['params_m']:.1f} M params) on {dev['title']}")
    for c in ("prec.", "comp ms", "mem ms", "launch", "bound", "ms/pair", "pairs/s", "30 fps", "weights MB"):
        t.add_column(c, justify="right")
    for r in res["estimates"]:
        mark = "*" if r["precision"] == res["package_precision"] else ""
        t.add_row(r["precision"] + mark + (" +DLA" if r["dla"] else ""), f"{r['compute_ms']:.2f}",
                  f"{r['memory_ms']:.2f}", f"{r['launch_ms']:.2f}", r["bound"], f"{r['latency_ms']:.2f}",
                  f"{r['pairs_per_s']:.1f}", "yes" if r["fits_30fps"] else "no",
                  f"{r['bytes_mb']['weights']:.1f}" + ("" if r["fits_memory"] else " (!)"))
    con.print(t)
    con.print("* = the package's own precision; 'mem' = weights once per pair + activations + inputs.")
    con.print(f"roofline: {a['model']}; compute_eff={a['compute_eff']}, memory_eff={a['memory_eff']}, "
              f"launch={a['launch_us_per_layer']} us x {res['mac_layers']} layers, batch 1.")
    con.print(f"peaks (dense): FP32 {dev['fp32_tflops']} TFLOPS, FP16 {dev['fp16_tflops']} TFLOPS, "
              f"INT8 {dev['int8_tops']} TOPS, DLA INT8 {dev['dla_int8_tops']} TOPS, {dev['bandwidth_gbs']} GB/s.")
    con.print(f"source: {dev['source']}")
    if res["unknown_shape_layers"]:
        con.print(f"[yellow]warning:[/] {len(res['unknown_shape_layers'])} layers had unknown shapes and are not "
                  "counted (the estimate is low)")
    con.print("Measure on the device with jetson/bench.sh; replace these estimates with the measured numbers.")
