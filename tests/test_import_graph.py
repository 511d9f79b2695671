"""The package's modules import each other one way: no cycles, so a backend or stage can be read and
replaced on its own (the runners once imported each other)."""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "rating_edge"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every import of a project module, lazy ones inside functions included: a lazy import hides a
    cycle from Python's loader but not from the reader who has to understand both modules at once."""
    tree = ast.parse(path.read_text())
    found = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.ImportFrom) and n.module and n.level == 0 and n.module.startswith("rating_edge"):
            for alias in n.names:
                sub = f"{n.module}.{alias.name}"
                found.add(sub if sub in modules else n.module)
        elif isinstance(n, ast.Import):
            found.update(a.name for a in n.names if a.name.startswith("rating_edge"))
    return {m for m in found if m in modules}


def test_no_import_cycles():
    files = {_module_name(p): p for p in ROOT.rglob("*.py")}
    modules = set(files)
    graph = {m: _imports(p, modules) for m, p in files.items()}
    state, stack, cycles = {}, [], []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(stack[stack.index(d):] + [d])
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    # (a submodule loading its parent package first is Python's own rule, not an import: left out, so a
    # package __init__ re-exporting its submodules is not a cycle)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_runners_live_in_the_inference_layer():
    runtime = ROOT / "runtime"
    assert not (runtime / "engines.py").exists() and not (runtime / "trt_runner.py").exists()
    for p in ROOT.rglob("*.py"):
        text = p.read_text()
        assert "runtime.engines" not in text and "runtime.trt_runner" not in text, p
