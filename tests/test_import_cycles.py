"""No import cycles among batchdispatch's modules.

Each module's imports are read with :mod:`ast`, those inside functions
included (they run too, only later), and those under ``if TYPE_CHECKING:``
left out (they never run). Importing ``a.b.c`` runs the packages ``a``
and ``a.b`` first, so an import reaches those packages as well, except the
ones that hold the importing module (they are being imported already).
"""

from __future__ import annotations

import ast
import os
from typing import Dict, FrozenSet, Iterator, List, Set

import batchdispatch

PACKAGE = os.path.dirname(os.path.abspath(batchdispatch.__file__))

#: Cycles through modules that the spool's work does not own, each named by
#: its modules: listed so that a new cycle still fails. Remove an entry once
#: its cycle is gone (test_known_cycles_are_still_there says so).
KNOWN_CYCLES: FrozenSet[FrozenSet[str]] = frozenset()


def modules() -> Dict[str, str]:
    """Every module of the package, by dotted name: its file."""
    found = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(directory, name)
            parts = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """The import statements under *node*, but not under ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes(ast.Module(body=[other], type_ignores=[]))
        else:
            yield from _import_nodes(child)


def imports_of(name: str, path: str, known: Set[str]) -> Set[str]:
    """The package's modules that importing *name* runs directly (packages included)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    targets: Set[str] = set()
    for node in _import_nodes(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        assert isinstance(node, ast.ImportFrom)
        if node.level:
            base = name.split(".")
            if not is_package:
                base.pop()
            base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        targets.add(module)
        # "from package import name": name may be a submodule.
        targets.update(f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in known)
    reached: Set[str] = set()
    for target in targets:
        parts = target.split(".")
        for end in range(1, len(parts) + 1):
            step = ".".join(parts[:end])
            holds_importer = name == step or name.startswith(step + ".")
            if step in known and not holds_importer:
                reached.add(step)
    return reached


def graph() -> Dict[str, Set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def cycles(edges: Dict[str, Set[str]]) -> List[FrozenSet[str]]:
    """The strongly connected components of more than one module (or one that imports itself)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[FrozenSet[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.add(top)
                if top == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(frozenset(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def describe(component: FrozenSet[str], edges: Dict[str, Set[str]]) -> str:
    inside = sorted(f"{a} -> {b}" for a in component for b in edges[a] if b in component)
    return f"{sorted(component)}: " + ", ".join(inside)


def test_the_graph_sees_the_imports_it_must() -> None:
    """The reader itself: relative, package-level and function-level imports are all found."""
    edges = graph()
    assert "batchdispatch._spool_protocol" in edges["batchdispatch._validate"]
    assert "batchdispatch.spool._connection" in edges["batchdispatch.spool._wal"]
    assert "batchdispatch._json" in edges["batchdispatch.spool._encoding"]
    # batchdispatch.spool's modules run their package when imported from outside it.
    assert "batchdispatch.spool" in edges["batchdispatch.contrib._options"]


def test_there_are_no_new_import_cycles() -> None:
    edges = graph()
    new = [component for component in cycles(edges) if component not in KNOWN_CYCLES]
    assert not new, "import cycles:\n" + "\n".join(describe(component, edges) for component in new)


def test_known_cycles_are_still_there() -> None:
    found = set(cycles(graph()))
    gone = [sorted(component) for component in KNOWN_CYCLES if component not in found]
    assert not gone, f"these cycles are gone: remove them from KNOWN_CYCLES: {gone}"


def test_validate_imports_only_leaves() -> None:
    """_validate checks every public constructor's options: it must import nothing that imports back."""
    edges = graph()
    for module in edges["batchdispatch._validate"]:
        if module == "batchdispatch":
            continue
        assert not edges[module] - {"batchdispatch"}, f"{module} imports {sorted(edges[module])}"
