"""The package's shape: parts a newcomer can hold.

Every module says in its docstring what it owns; no module passes 800
lines and no class 600, so that a concern that grows gets a module of its
own instead of a corner of a bigger one; and the engine's parts never
import sqlite3 or requests (they talk to a Spool, and to the user's code).
"""

from __future__ import annotations

import ast
import os
from typing import Dict, List

import pytest

import batchdispatch

PACKAGE = os.path.dirname(os.path.abspath(batchdispatch.__file__))
MAX_MODULE_LINES = 800
MAX_CLASS_LINES = 600
#: The engine and its parts (see the engine's module docstring).
ENGINE_PARTS = (
    "_engine", "_single_lane", "_keyed_engine", "_budget", "_lanes", "_scheduler", "_workers",
    "_delivery", "_spool_bridge", "_breaker", "_events", "_drain", "_stats", "_lifecycle", "_process",
    "_threadless", "_gil", "_context", "_deadlines",
)


def sources() -> Dict[str, str]:
    found = {}
    for directory, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                found[os.path.relpath(path, PACKAGE)] = path
    return found


@pytest.mark.parametrize("module", sorted(sources()))
def test_each_module_says_what_it_owns_and_stays_small(module: str) -> None:
    with open(sources()[module], encoding="utf-8") as file:
        text = file.read()
    tree = ast.parse(text)
    assert ast.get_docstring(tree), f"{module} has no docstring saying what it owns"
    assert text.count("\n") <= MAX_MODULE_LINES, f"{module}: {text.count(chr(10))} lines"
    big: List[str] = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES
    ]
    assert not big, f"{module}: classes over {MAX_CLASS_LINES} lines: {big}"


@pytest.mark.parametrize("part", ENGINE_PARTS)
def test_the_engine_talks_to_no_backend(part: str) -> None:
    with open(os.path.join(PACKAGE, part + ".py"), encoding="utf-8") as file:
        tree = ast.parse(file.read())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and not node.level
    }
    assert not imported & {"sqlite3", "requests", "urllib3"}, f"{part} imports {sorted(imported)}"
    relative = {
        node.module for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.level and node.module
    }
    assert not {module for module in relative if module.split(".")[0] in ("spool", "http")}, relative
