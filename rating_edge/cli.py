"""Typer app `rating-edge`. Each stage registers its own commands from `<stage>/commands.py`.

Heavy imports (torch, onnx, onnxruntime, TensorRT) live inside command bodies so `--help` is instant
and the runtime commands never pull in torch.
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from rating_edge.errors import RatingEdgeError

app = typer.Typer(
    name="rating-edge",
    help="RATING synovitis scoring at the edge: export, quantize, build, run and benchmark.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)

# Stage modules that add commands; each has `register(app)`.
STAGES = [
    "rating_edge.phantom.commands",
    "rating_edge.train.commands",
    "rating_edge.export.commands",
    "rating_edge.calibration.commands",
    "rating_edge.runtime.commands",
    "rating_edge.export.distill_commands",
    "rating_edge.bench.commands",
    "rating_edge.bench.plan_commands",
    "rating_edge.triton.commands",
    "rating_edge.archive.commands",
    "rating_edge.plots.commands",
]


@app.command("init-ensemble")
def init_ensemble_cmd(
    out: Path = typer.Argument(..., help="Output checkpoint folder (must not exist)."),
    preset: str = typer.Option("tiny", help="paper (60 full-size networks) or tiny (for tests)."),
    seed: int = typer.Option(0, help="Random seed."),
    share_backbones: bool = typer.Option(False, "--share-backbones", help="Share F/G between the heads of a module."),
):
    """Write a randomly initialised ensemble in the checkpoint layout."""
    from rating_edge.model.init import write_random_ensemble
    from rating_edge.spec import preset as get_preset

    spec = get_preset(preset)
    if out.exists() and any(out.iterdir()):
        raise RatingEdgeError(f"{out} exists and is not empty; choose a new folder")
    p = write_random_ensemble(out, spec, seed, share_backbones)
    console.print(f"[green]wrote[/] {p} ({len(spec.network_ids())} networks, preset {preset})")
    console.print(f"next: rating-edge export {out} {out}-pkg --fuse stack", soft_wrap=True)


@app.command("import-checkpoints")
def import_checkpoints_cmd(
    source: Path = typer.Argument(..., help="--format mapping: JSON/YAML mapping from network id to .pth file. "
                                  "--format rating-official: the official checkpoints folder (GSDOPPLER/ and DOPPLER/)."),
    out: Path = typer.Argument(..., help="Output checkpoint folder."),
    fmt: str = typer.Option("mapping", "--format", help="mapping | rating-official (the authors' published layout)."),
    thresholds: Optional[Path] = typer.Option(None, "--thresholds", help="rating-official: the thresh_dict pickle "
                                              "(per-network decision thresholds; required)."),
    input_size: int = typer.Option(224, "--input-size", help="rating-official: network input size (224 in the "
                                   "official code; smaller only for tests)."),
):
    """Import .pth state dicts (weights_only) into the checkpoint layout; `--format rating-official`
    reads the paper's own 60 networks with their thresholds and preprocessing (docs/official.md)."""
    if out.exists() and any(out.iterdir()):
        raise RatingEdgeError(f"{out} exists and is not empty; choose a new folder")
    if fmt == "rating-official":
        from rating_edge.model.official import import_official

        if thresholds is None:
            raise RatingEdgeError("--format rating-official needs --thresholds THRESH_DICT (the official thresh_dict)")
        p = import_official(source, thresholds, out, input_size)
    elif fmt == "mapping":
        from rating_edge.model.importer import import_checkpoints

        p = import_checkpoints(source, out)
    else:
        raise RatingEdgeError(f"unknown --format {fmt!r}; use mapping or rating-official")
    console.print(f"[green]imported[/] {p}")
    console.print(f"next: rating-edge export {out} {out}-pkg --fuse stack", soft_wrap=True)


def _register_stages() -> None:
    for mod in STAGES:
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name and mod.startswith(e.name):
                continue  # stage not present in this build
            raise
        m.register(app)


_register_stages()


def main(argv=None) -> int:
    try:
        app(args=argv, standalone_mode=True)
    except RatingEdgeError as e:
        console.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True, highlight=False)
        return 2
    except SystemExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
