"""The one shape of the command-line progress bars (Rich): what, bar, done/total, an optional detail,
elapsed and remaining time."""
from __future__ import annotations


def progress_bar(console, detail: str | None = None, elapsed: bool = True, remaining: bool = True,
                 transient: bool = False, disable: bool = False):
    """A Rich `Progress` on `console`; `detail` is a column template such as "{task.fields[info]}"."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if detail is not None:
        columns.append(TextColumn(detail))
    if elapsed:
        columns.append(TimeElapsedColumn())
    if remaining:
        columns.append(TimeRemainingColumn())
    return Progress(*columns, console=console, transient=transient, disable=disable)
