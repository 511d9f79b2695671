"""The CLI reference page, generated from the Typer app so it cannot drift from the code.

Two uses: an mkdocs hook (`hooks:` in mkdocs.yml) that adds `cli.md` to the site at build time, and a
script, `python tools/cli_reference.py [OUT.md]`, that writes the same markdown (stdout without OUT).
It walks the click command tree Typer builds and renders each command's usage, help and parameters
from the parameters' own help records, the text `rating-edge CMD --help` shows.
"""
from __future__ import annotations

import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = "cli.md"


def _cell(text: str) -> str:
    """Table-cell safe: no raw HTML, no column breaks, one line."""
    text = " ".join(str(text).split())
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _help(cmd) -> str:
    return inspect.cleandoc(cmd.help or "").replace("\b\n", "").replace("\b", "")


def _is_group(cmd) -> bool:
    return hasattr(cmd, "list_commands") and hasattr(cmd, "get_command")


def _walk(cmd, ctx, path):
    """Yield (path, command, context) depth first, subcommands in the order the CLI lists them."""
    import click

    yield path, cmd, ctx
    if _is_group(cmd):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            if sub is None or getattr(sub, "hidden", False):
                continue
            yield from _walk(sub, click.Context(sub, info_name=name, parent=ctx), path + [name])


def _usage(cmd, path) -> str:
    args = [p.name.upper() + ("..." if getattr(p, "nargs", 1) == -1 else "")
            for p in cmd.params if p.param_type_name == "argument"]
    tail = ["COMMAND [ARGS]..."] if _is_group(cmd) else args
    return " ".join(path + ["[OPTIONS]"] + tail)


def render() -> str:
    """Markdown for every command of `rating-edge`."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import click
    import typer

    from rating_edge.cli import app

    root = typer.main.get_command(app)
    ctx = click.Context(root, info_name="rating-edge")
    out = ["# CLI reference", "",
           "Generated from the Typer app (`rating_edge/cli.py` and each stage's `commands.py`) when the site is "
           "built, by `tools/cli_reference.py`; `rating-edge CMD --help` prints the same text. Bad input ends "
           "with one line, `error: ...`, and exit status 2.", ""]
    entries = list(_walk(root, ctx, ["rating-edge"]))
    out += ["| command | what it does |", "| --- | --- |"]
    for path, cmd, _ in entries[1:]:
        if not _is_group(cmd):
            anchor = "-".join(path[1:])
            out.append(f"| [`{' '.join(path[1:])}`](#{anchor}) | {_cell(cmd.get_short_help_str(200))} |")
    out.append("")
    for path, cmd, cctx in entries[1:]:
        depth = len(path)  # rating-edge CMD -> level 2, rating-edge GROUP CMD -> level 3
        anchor = "-".join(path[1:])
        out += [f"{'#' * depth} `{' '.join(path[1:])}` {{#{anchor}}}", ""]
        text = _help(cmd)
        if text:
            out += [text, ""]
        out += ["```", _usage(cmd, path), "```", ""]
        if _is_group(cmd):
            continue
        rows = []
        for p in cmd.params:
            rec = p.get_help_record(cctx)
            if rec is None or getattr(p, "hidden", False):
                continue
            names, help_ = rec
            names = " ".join(names.split()).replace("`", "")  # a code span: shown as is, pipes included
            rows.append(f"| `{names}` | {_cell(help_)} |")
        if rows:
            out += ["| argument / option | help |", "| --- | --- |", *rows, ""]
    return "\n".join(out) + "\n"


def on_files(files, config):
    """mkdocs hook: add the generated page (it is never written into docs/)."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render()))
    return files


if __name__ == "__main__":
    text = render()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)
    else:
        sys.stdout.write(text)
