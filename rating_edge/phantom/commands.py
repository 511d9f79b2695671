"""`rating-edge phantom dataset|video`: synthetic data with known grades (numpy + OpenCV only)."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from rating_edge.errors import RatingEdgeError
from rating_edge.progress import progress_bar

console = Console(stderr=True)


def _progress():
    return progress_bar(console, elapsed=False, transient=True)


def register(app: typer.Typer) -> None:
    ph = typer.Typer(help="Synthetic finger-joint ultrasound (phantom) with known EOSS grades.", no_args_is_help=True)

    @ph.command("dataset")
    def dataset_cmd(
        out: Path = typer.Argument(..., help="Output folder (created; must not exist or be empty)."),
        n: int = typer.Option(200, "--n", help="Number of GS/Doppler pairs."),
        seed: int = typer.Option(0, help="Random seed (same seed, same dataset)."),
        doppler: str = typer.Option("cdus", help="cdus (colour Doppler), pdus (power Doppler) or mixed."),
        patients: int = typer.Option(None, help="Number of patients (default: about n/4)."),
    ):
        """Write a labelled dataset: images/<pair>_gs.png, images/<pair>_doppler.png and labels.csv."""
        from rating_edge.phantom.dataset import write_dataset

        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise RatingEdgeError(f"{out} exists and is not an empty folder; choose a new one")
        with _progress() as prog:
            task = prog.add_task("phantom pairs", total=n)
            p = write_dataset(out, n, seed=seed, doppler=doppler, patients=patients,
                              progress=lambda i: prog.update(task, completed=i + 1))
        console.print(f"[green]wrote[/] {n} pairs to {p} (labels.csv + images/)")
        console.print(f"next: rating-edge train {p} {p}-ckpt --preset tiny", soft_wrap=True)

    @ph.command("video")
    def video_cmd(
        out: Path = typer.Argument(..., help="Output video file (.mp4); the truth goes to OUT.mp4.jsonl."),
        seconds: float = typer.Option(10.0, help="Length in seconds."),
        fps: float = typer.Option(30.0, help="Frames per second."),
        size: str = typer.Option("1280x720", help="Screen size WIDTHxHEIGHT."),
        layout: str = typer.Option("single", help="single (one image area) or dual (GS left, Doppler right)."),
        seed: int = typer.Option(0, help="Random seed (sections, grades, script, theme)."),
        theme: str = typer.Option(None, help="Vendor-like screen theme (default: picked by seed)."),
        dropouts: bool = typer.Option(False, "--dropouts", help="Insert short no-signal (black) periods."),
    ):
        """Write a scanner-screen recording with a per-frame JSONL truth sidecar."""
        import math

        from rating_edge.phantom.video import PhantomScanner, parse_size, write_video

        if not (math.isfinite(seconds) and math.isfinite(fps)):  # the ranges are checked by the scanner
            raise RatingEdgeError(f"--seconds and --fps must be finite numbers, got {seconds} and {fps}")
        wh = parse_size(size)
        PhantomScanner(seed=seed, size=wh, fps=fps, layout=layout, theme=theme)  # validate before writing
        if out.exists():
            raise RatingEdgeError(f"{out} exists; choose a new file name")
        n = max(1, int(round(seconds * fps)))
        with _progress() as prog:
            task = prog.add_task("frames", total=n)
            mp4, side = write_video(out, seconds, fps=fps, size=wh, layout=layout, seed=seed, theme=theme,
                                    dropouts=dropouts, progress=lambda i: prog.update(task, completed=i + 1))
        console.print(f"[green]wrote[/] {mp4} ({n} frames, {wh[0]}x{wh[1]}, {layout}) and truth {side}")

    @ph.command("dicom")
    def dicom_cmd(
        out: Path = typer.Argument(..., help="Output folder (created; must not exist or be empty)."),
        studies: int = typer.Option(10, "--studies", help="Number of studies (one patient each)."),
        seed: int = typer.Option(0, help="Random seed (same seed, same archive)."),
        size: str = typer.Option("640x360", help="Scanner screen size WIDTHxHEIGHT of the stored frames."),
        cine_share: float = typer.Option(0.3, "--cine-share", help="Share of Doppler images stored as cines."),
        dual_share: float = typer.Option(0.15, "--dual-share", help="Share of studies in dual (side-by-side) layout."),
    ):
        """Write a phantom archive as ultrasound DICOM (OUT/<patient>/<study>/IMnnnn.dcm) with OUT/truth.json."""
        from rating_edge.phantom.dicom import write_dicom_archive

        with _progress() as prog:
            task = prog.add_task("phantom studies", total=studies)
            p = write_dicom_archive(out, studies, seed=seed, size=size, cine_share=cine_share, dual_share=dual_share,
                                    progress=lambda i: prog.update(task, completed=i + 1))
        console.print(f"[green]wrote[/] {studies} studies to {p} (truth: {p / 'truth.json'})")
        console.print(f"next: rating-edge archive score {p} --package PKG --out {p}-results", soft_wrap=True)

    app.add_typer(ph, name="phantom")
