"""CLI: `rating-edge report SESSION.db --html OUT/` (matplotlib only inside the command body)."""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

console = Console(stderr=True)


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report_cmd(
        log: Path = typer.Argument(..., help="Session log (SQLite) from `rating-edge run --log`."),
        html_out: Path = typer.Option(..., "--html", help="Output folder for index.html and its pictures."),
        session: int = typer.Option(None, "--session", help="Session id within the log (default: the last)."),
    ):
        """A static session page: modes and grades over time, final grades, snapshots, AI outages, latency."""
        from rating_edge.plots.base import pyplot
        from rating_edge.plots.report import write_report

        pyplot()
        page = write_report(log, html_out, session)
        console.print(f"[green]wrote[/] {page} (open it in a browser; the folder is self-contained)")
