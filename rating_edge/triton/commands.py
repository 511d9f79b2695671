"""`rating-edge triton repo`: a Triton model repository for a package."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    triton = typer.Typer(help="Serve a package from NVIDIA Triton Inference Server.", no_args_is_help=True)

    @triton.command("repo")
    def repo_cmd(
        package: Path = typer.Argument(..., help="Model package folder."),
        out: Path = typer.Argument(..., help="Triton model repository folder (the model goes to OUT/rating)."),
        backend: str = typer.Option("python", help="python (the toolkit's runner inside Triton; runs anywhere), "
                                                   "onnxruntime, tensorrt or openvino (NVIDIA's server containers)."),
        max_batch: int = typer.Option(8, help="max_batch_size: the most pairs the dynamic batcher puts together."),
        instances: int = typer.Option(1, help="Model instances (instance_group count)."),
        kind: str = typer.Option("cpu", help="cpu or gpu instances."),
        runner_backend: str = typer.Option("ort", help="python form only: the toolkit backend inside the server."),
    ):
        """Write a Triton model repository (config.pbtxt, model, identity manifest) for PACKAGE."""
        from rating_edge.triton.repo import write_repository

        model = write_repository(package, out, backend, max_batch, instances, kind, runner_backend)
        console.print(f"[green]wrote[/] {model} ({backend}, max batch {max_batch}, {instances} x {kind})")
        console.print(f"next: tritonserver --model-repository {out}   then   "
                      f"rating-edge verify {package} --backend triton --url grpc://HOST:8001", soft_wrap=True)

    app.add_typer(triton, name="triton")
