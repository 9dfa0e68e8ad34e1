"""The import graph of xbarlab, read from the source with ``ast`` (no module is imported).

Every ``import``/``from … import`` statement counts wherever it stands: at module level, inside a function, under
``if TYPE_CHECKING:`` or ``try:``. Relative imports are resolved. ``from package import name`` is an edge to the
submodule ``package.name`` when that is a file, else to ``package`` (its ``__init__.py``). Importing
``pkg.sub`` from outside ``pkg`` is also an edge to ``pkg`` (Python runs ``pkg/__init__.py`` first). A string
literal that is exactly a module path (``"xbarlab.x.y"`` or ``"xbarlab.x.y:function"``, as lazy registries use)
is an edge too for the layering rule, because it imports that module on first use.

Asserted: (a) no import cycle between files (the message lists the cycle with file:line of each import), and
(b) no core module imports a paper module (core = everything except ``xbarlab.papers.*``, ``xbarlab.cli.*`` and
``xbarlab.__main__``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "xbarlab"

PAPER_MODULES = ("xbarlab.papers",)
"""Paper code: everything under ``xbarlab/papers/``."""

NOT_CORE = ("xbarlab.papers", "xbarlab.cli", "xbarlab.__main__")
"""Modules (or package prefixes) that may import paper code: the papers themselves and the command line."""

_MODULE_STRING = re.compile(r"^xbarlab(\.[A-Za-z_][A-Za-z0-9_]*)+(:[A-Za-z_][A-Za-z0-9_]*)?$")


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``line`` (``lazy``: named in a string, imported on first use)."""

    source: str
    target: str
    line: int
    lazy: bool = False

    def where(self, files: dict[str, Path]) -> str:
        """``xbarlab/x/y.py:line``: the file (relative to the folder holding the package) and the line."""
        root = files["xbarlab"].parent.parent
        return f"{files[self.source].relative_to(root).as_posix()}:{self.line}"


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def module_files(root: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name → file, for every ``.py`` below ``root`` (``pkg/__init__.py`` is ``pkg``)."""
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _existing(name: str, files: dict[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of ours (``xbarlab.x.Name`` → ``xbarlab.x``)."""
    while name and name not in files:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str, files: dict[str, Path]) -> list[Edge]:
    """Every xbarlab import of one file (top-level and nested), relative imports resolved."""
    path = files[module]
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    edges: list[Edge] = []

    own_packages = {module.rsplit(".", k)[0] for k in range(module.count(".") + 1)}

    def add(target: str | None, line: int, lazy: bool = False) -> None:
        if target is None or target == module:
            return
        edges.append(Edge(module, target, line, lazy))
        # importing pkg.sub first runs pkg/__init__.py: an edge to every package above the target that does
        # not also contain this module (those are already initialised when this module runs)
        parts = target.split(".")
        for k in range(1, len(parts)):
            parent = ".".join(parts[:k])
            if parent not in own_packages and parent in files:
                edges.append(Edge(module, parent, line, lazy))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "xbarlab":
                    add(_existing(alias.name, files), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                full = ".".join([*base, *([node.module] if node.module else [])])
            else:
                full = node.module or ""
            if full.split(".")[0] != "xbarlab":
                continue
            for alias in node.names:
                sub = f"{full}.{alias.name}"
                add(sub if sub in files else _existing(full, files), node.lineno)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _MODULE_STRING.match(node.value):
            add(_existing(node.value.partition(":")[0], files), node.lineno, lazy=True)
    return edges


def import_graph(files: dict[str, Path]) -> dict[str, list[Edge]]:
    """Module → its import edges (lazy string references included; filter on ``Edge.lazy``)."""
    return {module: imports_of(module, files) for module in files}


def find_cycle(graph: dict[str, list[Edge]]) -> list[Edge] | None:
    """One import cycle as the list of its edges, or ``None`` (iterative depth-first search)."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        nodes = [start]  # the current path; edges[i] leads from nodes[i] to nodes[i + 1]
        edges: list[Edge] = []
        todo = [_children(graph, start)]
        while todo:
            edge = next(todo[-1], None)
            if edge is None:
                done.add(nodes.pop())
                todo.pop()
                if edges:
                    edges.pop()
            elif edge.target in nodes:
                return [*edges[nodes.index(edge.target) :], edge]
            elif edge.target not in done:
                nodes.append(edge.target)
                edges.append(edge)
                todo.append(_children(graph, edge.target))
    return None


def _children(graph: dict[str, list[Edge]], node: str) -> Iterator[Edge]:
    return iter(sorted(graph.get(node, []), key=lambda e: (e.target, e.line)))


def strongly_connected(graph: dict[str, list[Edge]]) -> list[set[str]]:
    """The groups of modules that import each other (directly or through others), largest first."""
    reach: dict[str, set[str]] = {}
    for start in graph:
        seen, todo = {start}, [start]
        while todo:
            for edge in graph.get(todo.pop(), []):
                if edge.target not in seen:
                    seen.add(edge.target)
                    todo.append(edge.target)
        reach[start] = seen
    groups = {frozenset(m for m in reach[a] if a in reach.get(m, ())) for a in graph}
    return sorted((set(g) for g in groups if len(g) > 1), key=lambda g: (-len(g), sorted(g)))


def all_cycles(graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """One cycle per group of mutually importing modules."""
    out = []
    for group in strongly_connected(graph):
        sub = {m: [e for e in graph[m] if e.target in group] for m in group}
        cycle = find_cycle(sub)
        assert cycle is not None
        out.append(cycle)
    return out


def describe(cycle: list[Edge], files: dict[str, Path]) -> str:
    return " -> ".join([*(f"{e.source} ({e.where(files)})" for e in cycle), cycle[0].source])


# ------------------------------------------------------------------------------------------------------------
# the rules


@pytest.fixture(scope="module")
def files() -> dict[str, Path]:
    return module_files()


@pytest.fixture(scope="module")
def graph(files: dict[str, Path]) -> dict[str, list[Edge]]:
    return import_graph(files)


def test_no_import_cycle_between_files(graph: dict[str, list[Edge]], files: dict[str, Path]) -> None:
    real = {m: [e for e in edges if not e.lazy] for m, edges in graph.items()}
    cycles = all_cycles(real)
    if cycles:
        pytest.fail("import cycles between files:\n" + "\n".join(describe(c, files) for c in cycles))


def test_no_core_module_imports_paper_code(graph: dict[str, list[Edge]], files: dict[str, Path]) -> None:
    bad = [
        f"{e.where(files)}: core module {e.source} imports paper module {e.target}" + (" (by name)" if e.lazy else "")
        for edges in graph.values()
        for e in edges
        if not _within(e.source, NOT_CORE) and not _within(e.source, PAPER_MODULES) and _within(e.target, PAPER_MODULES)
    ]
    if bad:
        pytest.fail("\n".join(bad))


# ------------------------------------------------------------------------------------------------------------
# the reader itself, on a synthetic package


def _write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_reader_sees_nested_relative_and_string_imports(tmp_path: Path) -> None:
    pkg = tmp_path / "xbarlab"
    _write(pkg, "__init__.py", "")
    _write(pkg, "a.py", "def f():\n    from .sub import b\n")
    _write(pkg, "sub/__init__.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..a import f\n")
    _write(pkg, "sub/b.py", "import xbarlab.a as a\nX = 'xbarlab.sub:name'\nDOC = 'see xbarlab.a for more'\n")
    files = module_files(pkg)
    assert sorted(files) == ["xbarlab", "xbarlab.a", "xbarlab.sub", "xbarlab.sub.b"]
    graph = import_graph(files)
    # ``from .sub import b`` in xbarlab.a: the submodule, and the package whose __init__ runs first
    assert [(e.target, e.line) for e in graph["xbarlab.a"]] == [("xbarlab.sub.b", 2), ("xbarlab.sub", 2)]
    assert [(e.target, e.line) for e in graph["xbarlab.sub"]] == [("xbarlab.a", 3)]
    assert sorted((e.target, e.line, e.lazy) for e in graph["xbarlab.sub.b"]) == [
        ("xbarlab.a", 1, False),
        ("xbarlab.sub", 2, True),
    ]
    real = {m: [e for e in es if not e.lazy] for m, es in graph.items()}
    assert strongly_connected(real) == [{"xbarlab.a", "xbarlab.sub", "xbarlab.sub.b"}]
    cycle = find_cycle(real)
    assert cycle is not None
    assert [(e.source, e.target) for e in cycle] == [("xbarlab.a", "xbarlab.sub"), ("xbarlab.sub", "xbarlab.a")]
    assert (
        describe(cycle, files) == "xbarlab.a (xbarlab/a.py:2) -> xbarlab.sub (xbarlab/sub/__init__.py:3) -> xbarlab.a"
    )


def test_a_package_init_cycle_is_seen(tmp_path: Path) -> None:
    """top → pkg.x runs pkg/__init__, which imports pkg.y, which imports top: a cycle through the __init__."""
    pkg = tmp_path / "xbarlab"
    _write(pkg, "__init__.py", "")
    _write(pkg, "top.py", "from xbarlab.pkg.x import f\n")
    _write(pkg, "pkg/__init__.py", "from xbarlab.pkg.y import g\n")
    _write(pkg, "pkg/x.py", "def f(): pass\n")
    _write(pkg, "pkg/y.py", "from xbarlab.pkg import x\nfrom xbarlab import top\n")
    graph = import_graph(module_files(pkg))
    # a submodule importing its own package's modules adds no edge to that package's __init__
    assert sorted(e.target for e in graph["xbarlab.pkg.y"]) == ["xbarlab.pkg.x", "xbarlab.top"]
    assert strongly_connected(graph) == [{"xbarlab.top", "xbarlab.pkg", "xbarlab.pkg.y"}]


def test_reader_finds_no_cycle_in_a_layered_package(tmp_path: Path) -> None:
    pkg = tmp_path / "xbarlab"
    _write(pkg, "__init__.py", "")
    _write(pkg, "low.py", "import os\n")
    _write(pkg, "mid.py", "from xbarlab import low\n")
    _write(pkg, "top.py", "from xbarlab.mid import thing\nfrom xbarlab.low import other\n")
    graph = import_graph(module_files(pkg))
    assert find_cycle(graph) is None and all_cycles(graph) == []
    assert {e.target for e in graph["xbarlab.top"]} == {"xbarlab.mid", "xbarlab.low"}
