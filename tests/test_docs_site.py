"""The docs site's moving parts: the CLI page is generated from the live Typer app (every command, every
option), and every page the mkdocs nav names exists (mkdocs --strict would fail the build otherwise)."""
import re
from pathlib import Path

import click
import typer
import yaml

from rating_edge.cli import app

ROOT = Path(__file__).resolve().parents[1]


def _load_hook():
    import importlib.util

    spec = importlib.util.spec_from_file_location("cli_reference", ROOT / "tools" / "cli_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_page_has_every_command_and_option():
    text = _load_hook().render()
    root = typer.main.get_command(app)
    ctx = click.Context(root, info_name="rating-edge")
    for name in root.list_commands(ctx):
        cmd = root.get_command(ctx, name)
        assert f"`{name}` {{#{name}}}" in text, name
        subs = ([(f"{name} {s}", cmd.get_command(ctx, s)) for s in cmd.list_commands(ctx)]
                if hasattr(cmd, "list_commands") else [(name, cmd)])
        for full, sub in subs:
            assert f"`{full}`" in text, full
            for p in sub.params:
                for opt in getattr(p, "opts", []):
                    if opt.startswith("--"):
                        assert f"`{opt}" in text, f"{full}: {opt} missing from the CLI page"
    assert "<path>" not in re.sub(r"`[^`]*`", "", text)  # raw angle brackets only inside code spans


def test_every_nav_page_exists():
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    generated = {_load_hook().PAGE}

    def pages(node):
        if isinstance(node, str):
            yield node
        elif isinstance(node, list):
            for n in node:
                yield from pages(n)
        elif isinstance(node, dict):
            for v in node.values():
                yield from pages(v)

    listed = list(pages(cfg["nav"]))
    assert "results.md" in listed and "cli.md" in listed
    for page in listed:
        assert page in generated or (ROOT / "docs" / page).is_file(), f"nav names missing page {page}"
