"""The package layers and the import graph, read from the modules' own import statements
(module-level and inside functions alike): no module imports a higher layer, nothing imports in
a circle, and each package says in its docstring what it holds and may import."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "moeplan"

# Bottom first. A module may import its own package and the packages below it.
LAYERS = ("base", "model", "engines", "tables", "layout", "fleet", "planner", "kernels", "tune", "cli")
TOP = len(LAYERS)  # moeplan/__init__.py (the Python API) and __main__.py


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py")) if "_data" not in p.parts}


def imports_of(name: str) -> set[str]:
    """The moeplan modules `name` imports anywhere in its source (a `from pkg import sub` of a
    submodule counts as importing the submodule)."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "moeplan")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            if base.split(".")[0] != "moeplan":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.add(sub if sub in MODULES else base)
    out.discard(name)
    return {m for m in out if m in MODULES}


def layer(name: str) -> int:
    parts = name.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return TOP
    return LAYERS.index(parts[1])


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_package_is_a_layer():
    packages = sorted(p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists())
    assert packages == sorted(LAYERS), "a package is missing from LAYERS (or LAYERS names a missing one)"
    loose = sorted(p.name for p in ROOT.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert not loose, f"modules at the package root belong in the package of their concern: {loose}"


def test_no_module_imports_a_higher_layer():
    bad = [f"{m} (layer {LAYERS[layer(m)] if layer(m) < TOP else 'top'}) imports {t} "
           f"(layer {LAYERS[layer(t)] if layer(t) < TOP else 'top'})"
           for m, targets in GRAPH.items() for t in sorted(targets) if layer(t) > layer(m)]
    assert not bad, "\n".join(bad)


def _cycle() -> list[str]:
    """One import cycle among the modules ([] if none), as the list of modules around it."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str):
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return []


def test_no_import_cycles():
    cycle = _cycle()
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_the_checker_sees_a_cycle_and_a_layer_break(monkeypatch):
    # the two checks above must be able to fail: feed them a graph with both faults
    fake = dict(GRAPH)
    fake["moeplan.base.errors"] = GRAPH["moeplan.base.errors"] | {"moeplan.cli.app"}
    fake["moeplan.cli.app"] = GRAPH["moeplan.cli.app"] | {"moeplan.base.errors"}
    monkeypatch.setitem(globals(), "GRAPH", fake)
    assert "moeplan.base.errors" in _cycle()
    assert layer("moeplan.cli.app") > layer("moeplan.base.errors")


@pytest.mark.parametrize("package", LAYERS)
def test_each_package_says_what_it_holds_and_may_import(package):
    mod = importlib.import_module(f"moeplan.{package}")
    doc = (mod.__doc__ or "").lower()
    assert len(doc) > 80, f"moeplan.{package} has no docstring saying what it holds"
    assert "import" in doc, f"moeplan.{package}'s docstring does not say what it may import"


@pytest.mark.parametrize("package", LAYERS)
def test_each_package_docstring_names_its_modules(package):
    # the folder listing is the architecture: a module the package's docstring does not name is one
    # a newcomer cannot place
    doc = importlib.import_module(f"moeplan.{package}").__doc__ or ""
    modules = sorted(p.stem for p in (ROOT / package).glob("*.py") if p.stem != "__init__")
    unnamed = [m for m in modules if not re.search(rf"(`{m}`|^\s+{m}\s)", doc, re.M)]
    assert not unnamed, f"moeplan.{package}'s docstring does not name {unnamed}"


def test_no_module_over_600_lines_without_a_reason():
    long = []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        head = "\n".join(lines[:30]).lower()
        if len(lines) > 600 and "over 600 lines" not in head:
            long.append(f"{name}: {len(lines)} lines")
    assert not long, "split these, or say at the top why not ('over 600 lines: ...'): " + ", ".join(long)
