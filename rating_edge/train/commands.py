"""CLI: `rating-edge train` and `rating-edge evaluate` (torch is imported only inside `train`)."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        data: Path = typer.Argument(..., help="Labelled dataset folder (labels.csv + images/)."),
        out: Path = typer.Argument(..., help="Output checkpoint folder (new, or an interrupted run to resume)."),
        preset: str = typer.Option("tiny", help="paper (60 full-size networks) or tiny."),
        epochs: int = typer.Option(None, help="Backbone epochs (default: the preset's)."),
        head_epochs: int = typer.Option(None, "--head-epochs", help="Epochs of the SH fusion MLP H."),
        lr: float = typer.Option(None, help="Adam learning rate (default: the preset's)."),
        step_epochs: int = typer.Option(None, "--step-epochs", help="Decay the learning rate by 0.3 every this many epochs."),
        batch: int = typer.Option(None, help="Batch size (default 64)."),
        jigsaw_pretrain: bool = typer.Option(False, "--jigsaw-pretrain", help="Initialise backbones by jigsaw pre-training."),
        jigsaw_epochs: int = typer.Option(None, "--jigsaw-epochs", help="Jigsaw pre-training epochs."),
        seed: int = typer.Option(0, help="Seed of the fold split and of every network."),
        threads: int = typer.Option(None, help="Torch threads (default: 1 for tiny widths, else all cores)."),
        max_networks: int = typer.Option(None, "--max-networks", help="Stop after training this many networks "
                                         "(resume later with the same command)."),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="Rich progress bars."),
    ):
        """Train the ensemble with the paper's recipe (resumable: rerun the same command to continue)."""
        from rating_edge.cli_checks import check_count, check_positive
        from rating_edge.spec import preset as get_preset
        from rating_edge.train.config import train_preset

        for opt, v in (("--epochs", epochs), ("--head-epochs", head_epochs), ("--step-epochs", step_epochs),
                       ("--batch", batch), ("--jigsaw-epochs", jigsaw_epochs), ("--threads", threads),
                       ("--max-networks", max_networks)):
            check_count(opt, v)
        check_positive("--lr", lr)
        check_count("--seed", seed, 0)
        from rating_edge.train.recipe import train_ensemble

        spec = get_preset(preset)
        cfg = train_preset(preset).with_overrides(epochs=epochs, head_epochs=head_epochs, lr=lr,
                                                  step_epochs=step_epochs, batch=batch,
                                                  jigsaw_epochs=jigsaw_epochs, seed=seed)
        r = train_ensemble(data, out, spec, cfg, jigsaw=jigsaw_pretrain, preset_name=preset,
                           max_networks=max_networks, show_progress=progress, threads=threads, console=console)
        console.print(f"trained {len(r.trained)} networks, kept {len(r.skipped)} already trained "
                      f"({r.wall_s:.0f} s wall, {r.cpu_s:.0f} s CPU)")
        if r.complete:
            console.print(f"[green]complete:[/] {out}/ensemble.json")
            console.print(f"next: rating-edge evaluate {out} TEST_DATA   |   rating-edge export {out} {out}-pkg", soft_wrap=True)
        else:
            left = len(spec.network_ids()) - len(r.trained) - len(r.skipped)
            console.print(f"[yellow]incomplete:[/] {left} networks left; rerun the same command to continue")

    @app.command("evaluate")
    def evaluate_cmd(
        model: Path = typer.Argument(..., help="Checkpoint folder (ensemble.json) or model package (model.json)."),
        data: Path = typer.Argument(..., help="Labelled dataset folder (labels.csv + images/)."),
        json_out: Path = typer.Option(None, "--json", help="Write the metrics as JSON here."),
        bootstrap: int = typer.Option(1000, help="Bootstrap resamples for the 95% CIs (0: none)."),
        seed: int = typer.Option(0, help="Bootstrap seed."),
        batch: int = typer.Option(32, help="Inference batch size."),
        backend: str = typer.Option("ort", help="For packages: ort, trt, openvino[:fp32|bf16|int8], auto "
                                    "(fastest gated CPU form) or triton (--url)."),
        url: str = typer.Option(None, "--url", help="--backend triton: grpc://HOST:8001 or http://HOST:8000."),
        variant: str = typer.Option(None, help="For packages: graph variant (e.g. int8-u8s8)."),
        threads: int = typer.Option(None, help="CPU threads (default: 1 for tiny checkpoints, else all cores)."),
        plots: Path = typer.Option(None, "--plots", help="Also draw ROC curves with bootstrap bands, confusion "
                                   "matrices and Youden points here (PNG + SVG; needs the plots extra)."),
    ):
        """The paper's metrics: per-task AUC, accuracy, weighted kappa, confusion matrices, Youden, 95% CIs."""
        from rating_edge.cli_checks import check_count
        from rating_edge.errors import RatingEdgeError
        from rating_edge.evaluate import evaluate_model, print_report, write_json

        if bootstrap < 0:
            raise RatingEdgeError("--bootstrap must be 0 or more")
        check_count("--batch", batch)
        check_count("--threads", threads)
        check_count("--seed", seed, 0)
        if json_out is not None and json_out.is_dir():
            raise RatingEdgeError(f"--json {json_out} is a folder; give a file name")
        if plots is not None:
            from rating_edge.plots.base import pyplot

            pyplot()  # a missing matplotlib stops here, before the model runs
        predictions = {}
        from rating_edge.infer import backend_options

        result = evaluate_model(model, data, bootstrap=bootstrap, seed=seed, batch=batch, backend=backend,
                                variant=variant, threads=threads, predictions=predictions,
                                backend_options=backend_options(backend, url))
        print_report(result, Console())
        if json_out is not None:
            console.print(f"wrote {write_json(result, json_out)}")
        if plots is not None:
            from rating_edge.plots.metrics import write_evaluation_plots

            files = write_evaluation_plots(predictions["probs"], predictions["labels"], plots, bootstrap=bootstrap,
                                           seed=seed)
            console.print(f"wrote {len(files)} pictures to {plots}/ (roc, confusion, youden)")
