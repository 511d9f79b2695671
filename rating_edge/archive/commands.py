"""`rating-edge archive score|show`: score stored studies (folder or DICOMweb PACS) on Ray."""
from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from rating_edge.errors import RatingEdgeError
from rating_edge.progress import progress_bar

console = Console(stderr=True)


class StudyProgress:
    """Rich progress over studies, with the running pair count."""

    def __init__(self):
        self.prog = progress_bar(console, "{task.fields[pairs]} pairs", transient=True)
        self.task = None
        self.pairs = 0

    def __enter__(self):
        self.prog.__enter__()
        return self

    def __exit__(self, *exc):
        self.prog.__exit__(*exc)

    def start(self, total: int) -> None:
        self.task = self.prog.add_task("studies", total=total, pairs=0)

    def study(self, uid: str, pairs: int) -> None:
        self.pairs += pairs
        self.prog.update(self.task, advance=1, pairs=self.pairs)


def register(app: typer.Typer) -> None:
    ar = typer.Typer(help="Score stored DICOM studies (folder tree or DICOMweb PACS) on Ray; results as "
                          "Parquet and DICOM SR.", no_args_is_help=True)

    @ar.command("score")
    def score_cmd(
        source: str = typer.Argument(..., help="A folder tree of DICOM files, or dicomweb+http://HOST:PORT/dicom-web."),
        package: Path = typer.Option(..., "--package", help="Model package folder (rating-edge export)."),
        out: Path = typer.Option(..., "--out", help="RESULTS folder (created; studies already in it are skipped)."),
        ray_address: str = typer.Option(None, "--ray-address", help="Ray cluster: auto, ray://HOST:10001 or "
                                                                    "HOST:6379. Default: a private local Ray."),
        backend: str = typer.Option("ort", help="ort (ONNX Runtime) or trt (TensorRT: one GPU per actor)."),
        actors: int = typer.Option(None, help="Inference actors, one runner each (default: half the CPUs)."),
        actor_cpus: float = typer.Option(1.0, "--actor-cpus", help="CPUs reserved per inference actor."),
        num_cpus: int = typer.Option(None, "--num-cpus", help="CPUs of the local Ray (default: all)."),
        object_store_mb: int = typer.Option(256, "--object-store-mb", help="Object store of the local Ray (MB): "
                                                                           "bounds the pairs in flight."),
        batch: int = typer.Option(8, help="Pairs per inference call of an actor."),
        sr: bool = typer.Option(False, "--sr", help="Write one DICOM Comprehensive SR per study (RESULTS/sr/)."),
        store: str = typer.Option(None, "--store", help="Send the SRs: dicomweb+http://HOST:PORT/PATH (STOW-RS) or "
                                                        "dicom://AET@HOST:PORT (C-STORE)."),
        max_age: float = typer.Option(90.0, "--max-age", help="Longest GS-to-Doppler delay (s) that still pairs."),
        profile: Path = typer.Option(None, help="Scanner profile (rating-edge profile) instead of auto-detection."),
        in_process: bool = typer.Option(False, "--in-process", help="No Ray: decode and score one study after "
                                                                    "the other in this process (reference run)."),
        report: Path = typer.Option(None, "--report", help="Write the run report (counts, timings) as JSON."),
    ):
        """Score every study of SOURCE not yet in RESULTS: pairs, per-section grades, study summaries."""
        from rating_edge.archive.pipeline import ArchiveConfig, run_local, run_ray

        if batch < 1 or (actors is not None and actors < 1) or actor_cpus <= 0:
            raise RatingEdgeError("--batch and --actors must be >= 1 and --actor-cpus > 0")
        cfg = ArchiveConfig(source=source, package=str(package), out=str(out), backend=backend, actors=actors,
                            actor_cpus=actor_cpus, ray_address=ray_address, num_cpus=num_cpus,
                            object_store_mb=object_store_mb, batch=batch, sr=sr, store=store, max_age_s=max_age,
                            profile=str(profile) if profile else None)
        with StudyProgress() as prog:
            rep = (run_local if in_process else run_ray)(cfg, prog)
        d = rep.to_json()
        console.print(f"[green]scored[/] {rep.studies_done} studies ({rep.pairs} pairs) in {rep.run_s:.1f} s "
                      f"({rep.mode}; setup {rep.setup_s:.1f} s); skipped {rep.studies_skipped} already done; "
                      f"failed {rep.studies_failed}" + (f"; SRs {rep.srs_written} written, {rep.srs_stored} stored"
                                                          if sr else ""))
        for e in rep.errors[:5]:
            console.print(f"[yellow]warning:[/] {e}")
        if report:
            report.write_text(json.dumps(d, indent=1))
        console.print(f"results: {out}/pairs, {out}/sections, {out}/studies (Parquet)")

    @ar.command("bench")
    def bench_cmd(
        source: str = typer.Argument(..., help="Folder tree of DICOM files or dicomweb+http://... (read twice)."),
        package: Path = typer.Option(..., "--package", help="Model package folder."),
        out: Path = typer.Option(..., "--out", help="New folder: OUT/in-process and OUT/ray RESULTS."),
        actors: int = typer.Option(None, help="Inference actors of the Ray run (default: half the CPUs)."),
        num_cpus: int = typer.Option(None, "--num-cpus", help="CPUs of the local Ray (default: all)."),
        threads: int = typer.Option(None, help="Engine threads per runner, both runs (default: Ray 1 per actor, "
                                               "in-process all cores)."),
        truth: Path = typer.Option(None, help="truth.json of a phantom archive: add accuracy."),
        json_out: Path = typer.Option(None, "--json", help="Write the figures as JSON."),
    ):
        """Ray pipeline vs the in-process loop on the same archive: equality of every pair, throughput."""
        from rating_edge.archive.bench import bench
        from rating_edge.archive.pipeline import ArchiveConfig

        cfg = ArchiveConfig(source=source, package=str(package), out=str(out), actors=actors, num_cpus=num_cpus,
                            threads=threads)
        res = bench(cfg, out, truth)
        text = json.dumps(res, indent=1)
        if json_out:
            json_out.write_text(text)
        print(text)
        if not res["equal"]["identical"]:
            raise RatingEdgeError("the Ray run and the in-process run differ (see 'equal' above)")

    @ar.command("show")
    def show_cmd(results: Path = typer.Argument(..., help="RESULTS folder of `archive score`."),
                 truth: Path = typer.Option(None, help="truth.json of a phantom archive: report accuracy.")):
        """Summarise RESULTS (and compare with a phantom archive's truth)."""
        from rating_edge.archive.evaluate import summarise

        print(json.dumps(summarise(results, truth), indent=1))

    app.add_typer(ar, name="archive")
