"""The package's layout holds: its wings import one way, no module imports itself back through
others, and importing it registers nothing (docs/architecture.md, "The wings")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1] / "src"

# each wing may import the wings below it and itself, never one above or beside it
WINGS = [
    ("core", 0),  # model, optimizers, schedule, options, devices, files, data, metrics
    ("runs", 1),
    ("tools", 2),  # sample, evaluate, hf: what reads a checkpoint after training
    ("sweeps", 2),
    ("training", 3),
    ("cli", 4),
]
RANK = dict(WINGS)


def wing(module: str) -> str:
    """The wing of a module of ``src/``: ``nanogpt.training.job`` is training's."""
    parts = module.split(".")
    if parts[0] == "hydra_plugins":  # the Optuna sweeper, which Hydra finds in that namespace
        return "sweeps"
    top = parts[1] if len(parts) > 1 else ""
    if top in ("runs", "sweeps", "training", "cli"):
        return top
    if top in ("sample", "evaluate", "hf"):
        return "tools"
    return "core"


def imports() -> dict[str, set[str]]:
    """Every module of ``src/`` -> the package modules it imports, at the top or inside a function."""
    graph = {}
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nanogpt"):
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("nanogpt"))
        graph[module] = found
    return graph


def test_the_wings_import_one_way():
    wrong = sorted(
        f"{module} ({wing(module)}) imports {target} ({wing(target)})"
        for module, targets in imports().items()
        for target in targets
        if wing(target) != wing(module) and RANK[wing(target)] >= RANK[wing(module)]
    )
    assert not wrong, "an import against the wings' direction (docs/architecture.md):\n" + "\n".join(wrong)


def test_no_module_imports_itself_back():
    graph = imports()
    graph = {m: {t for t in targets if t in graph and t != m} for m, targets in graph.items()}
    # Tarjan's strongly connected components: a component of more than one module is a circle
    index, low, on_stack, stack, circles = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    assert not circles, f"modules that import each other, directly or through others: {circles}"


def test_importing_the_package_registers_no_resolver():
    # every module, as a library user (a notebook, a script) imports them; the application registers
    code = (
        "import pkgutil, importlib, nanogpt\n"
        "from omegaconf import OmegaConf\n"
        "for m in pkgutil.walk_packages(nanogpt.__path__, 'nanogpt.'):\n"
        "    if not m.name.startswith('nanogpt.cli'):\n"
        "        importlib.import_module(m.name)\n"
        "print([r for r in ('run_name', 'run_suffix') if OmegaConf.has_resolver(r)])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_no_test_module_imports_another():
    # shared test code lives in tests/helpers/; a test module importing another runs its fixtures twice
    tests = Path(__file__).parent
    found = []
    for path in sorted(tests.glob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            found += [f"{path.name} imports {n}" for n in names if n.split(".")[-1].startswith("test_")]
    assert not found, "move what they share to tests/helpers/:\n" + "\n".join(found)
