"""The package's import graph: no cycles, and every module imports only from layers below its own.

Every import counts, the ones inside functions too: a lazy import hides a dependency from the
interpreter, not from the reader. The layers are docs/architecture.md's.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "mtl3d"

# Lower number = lower layer. A module may import its own top-level package and any lower layer.
LAYERS: dict[str, int] = {
    "_version": 0,
    "errors": 0,
    "io": 1,
    "typecheck": 1,
    "geometry": 1,
    "workers": 1,
    "tasks": 2,
    "config": 3,
    "losses": 4,
    "data": 4,
    "metrics": 4,
    "models": 4,
    "regularizer": 5,
    "engine": 6,
    "reporting": 7,
    "envinfo": 7,
    "cli": 8,
    "": 8,  # the package root: `mtl3d.load`
}
# Upward imports kept on purpose, each with its reason.
EXCEPTIONS = {
    # A config names a model; only the model registry knows that model's options and default backbone,
    # and a config is validated before anything is written (`mtl3d train` checks, then builds).
    ("mtl3d.config", "mtl3d.models.registry"),
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in SRC.rglob("*.py")}

    def resolve(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {resolve(a.name) for a in node.names if a.name.startswith("mtl3d")}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                if base.startswith("mtl3d"):
                    for a in node.names:  # `from mtl3d.data import nyud` imports the module data.nyud
                        full = f"{base}.{a.name}"
                        targets.add(full if full in modules else resolve(base))
        graph[name] = targets - {name, ""}
    return graph


def _layer(module: str) -> tuple[str, int]:
    top = module.split(".")[1] if "." in module else ""
    if top not in LAYERS:
        pytest.fail(
            f"{module}: its top-level name {top!r} has no layer in LAYERS (and in docs/architecture.md)"
        )
    return top, LAYERS[top]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    assert _cycles(import_graph()) == []


def test_every_import_goes_down_a_layer():
    upward = []
    for module, targets in sorted(import_graph().items()):
        top, rank = _layer(module)
        for target in sorted(targets):
            other, other_rank = _layer(target)
            if other != top and other_rank >= rank and (module, target) not in EXCEPTIONS:
                upward.append(f"{module} (layer {rank}) imports {target} (layer {other_rank})")
    assert upward == []


def test_the_exceptions_are_still_needed():
    graph = import_graph()
    assert [pair for pair in EXCEPTIONS if pair[1] not in graph.get(pair[0], set())] == []


def test_the_graph_sees_lazy_and_relative_imports(tmp_path, monkeypatch):
    """The analysis itself: an import inside a function and a relative import are both edges."""
    pkg = tmp_path / "mtl3d"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "errors.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("def f():\n    from mtl3d.engine import b\n")
    (pkg / "data" / "c.py").write_text("from . import a\nfrom ..errors import X\n")
    (pkg / "engine").mkdir()
    (pkg / "engine" / "__init__.py").write_text("")
    (pkg / "engine" / "b.py").write_text("import mtl3d.data.c\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", pkg)
    graph = import_graph()
    assert graph["mtl3d.data.a"] == {"mtl3d.engine.b"}
    assert graph["mtl3d.data.c"] == {"mtl3d.data.a", "mtl3d.errors"}
    assert _cycles(graph) == [["mtl3d.data.a", "mtl3d.data.c", "mtl3d.engine.b"]]
