"""Every Python snippet of the README and the docs is run by a test, and calls only names it defines.

A Python block in ``docs/*.rst`` is a ``literalinclude`` of a file that a
test runs: a snippet under ``docs/snippets/`` (each run below as its own
program, its output compared with ``<name>.out`` where there is one), or
an example under ``examples/`` (run by ``tests/test_examples.py``). A
``code-block:: python`` is allowed only in :data:`NOT_RUN`, with the reason.
The README cannot include files, so each of its Python blocks must be, word
for word, a region of a snippet (between ``# [start NAME]`` and
``# [end NAME]``).

The docstring examples of the modules the API pages render are not run (most
need a server), but each must stand alone: every name it uses is imported
or defined in it.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Set, Tuple

import pytest

from .conftest import ROOT
from .services import REQUIRE_ENV, START_COMMANDS

DOCS = os.path.join(ROOT, "docs")
SNIPPETS = os.path.join(DOCS, "snippets")
README = os.path.join(ROOT, "README.md")

#: ``code-block:: python`` blocks that no test runs, by page and first line, with the reason.
NOT_RUN: Dict[Tuple[str, str], str] = {  # keyed by first line: two blocks may share one
    ("kafka.rst", "# kafka_events.py"):
        "needs confluent-kafka and a Kafka broker; neither is on the test machines",
    ("kafka.rst", "# gunicorn.conf.py"):
        "a gunicorn hook that imports the Kafka recipe above",
    ("sqlalchemy.rst", "from flask import Flask, current_app"):
        "needs Flask-SQLAlchemy, which no extra of batchdispatch installs; the test machines lack it",
}


#: Snippets whose output is compared on one Python only: argparse lays out help differently by version.
OUTPUT_ON_ONE_PYTHON = {"cli_help": (3, 11)}


@dataclass
class Block:
    """A Python block as a reader sees it."""

    page: str  # relative to the checkout
    line: int
    text: str
    source: Optional[str]  # the file included, relative to the checkout; None for a code-block


def _directive_body(lines: List[str], start: int) -> Tuple[Dict[str, str], List[str], int]:
    """The options and the indented body of the directive on line *start*; and the line after it."""
    indent = len(lines[start]) - len(lines[start].lstrip())
    options: Dict[str, str] = {}
    i = start + 1
    while i < len(lines):
        match = re.match(r"\s+:([\w-]+):\s*(.*)$", lines[i])
        if not match or len(lines[i]) - len(lines[i].lstrip()) <= indent:
            break
        options[match[1]] = match[2]
        i += 1
    body: List[str] = []
    while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
        body.append(lines[i])
        i += 1
    return options, body, i


def _include(path: str, options: Dict[str, str]) -> str:
    """What Sphinx's literalinclude shows of *path*, for the options the docs use."""
    with open(path, encoding="utf-8") as file:
        lines = file.read().splitlines()
    if "pyobject" in options:
        tree = ast.parse("\n".join(lines))
        (node,) = [n for n in tree.body if getattr(n, "name", None) == options["pyobject"]]
        lines = lines[node.lineno - 1:node.end_lineno]
    if "lines" in options:
        first, _, last = options["lines"].partition("-")
        lines = lines[int(first) - 1:int(last) if last else None]
    for option, after in (("start-after", True), ("start-at", False)):
        if option in options:
            (index,) = [i for i, line in enumerate(lines) if options[option] in line][:1]
            lines = lines[index + 1 if after else index:]
    for option, before in (("end-before", True), ("end-at", False)):
        if option in options:
            (index,) = [i for i, line in enumerate(lines) if options[option] in line][:1]
            lines = lines[:index if before else index + 1]
    return textwrap.dedent("\n".join(lines))


def doc_blocks() -> Iterator[Block]:
    for name in sorted(os.listdir(DOCS)):
        if not name.endswith(".rst"):
            continue
        page = os.path.join(DOCS, name)
        with open(page, encoding="utf-8") as file:
            lines = file.read().splitlines()
        i = 0
        while i < len(lines):
            match = re.match(r"\s*\.\. (code-block|code|sourcecode|literalinclude)::\s*(\S*)\s*$", lines[i])
            if not match:
                i += 1
                continue
            options, body, after = _directive_body(lines, i)
            kind, argument = match[1], match[2]
            if kind == "literalinclude":
                source = os.path.normpath(os.path.join(DOCS, argument))
                language = options.get("language", "python" if source.endswith(".py") else "text")
                if language == "python":
                    yield Block(os.path.relpath(page, ROOT), i + 1, _include(source, options),
                                os.path.relpath(source, ROOT))
            elif argument in ("python", "python3", "py"):
                text = textwrap.dedent("\n".join(body)).strip()
                yield Block(os.path.relpath(page, ROOT), i + 1, text, None)
            i = after


def readme_blocks() -> Iterator[Block]:
    with open(README, encoding="utf-8") as file:
        text = file.read()
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        if match[1] in ("python", "py", "python3"):
            yield Block("README.md", text[:match.start()].count("\n") + 1, match[2].rstrip("\n"), None)


def regions() -> Dict[str, str]:
    """Every ``# [start NAME]`` ... ``# [end NAME]`` region of the snippets, by NAME."""
    found: Dict[str, str] = {}
    for name in sorted(os.listdir(SNIPPETS)):
        if name.endswith(".py"):
            with open(os.path.join(SNIPPETS, name), encoding="utf-8") as file:
                text = file.read()
            pattern = r"^[ \t]*# \[start ([\w-]+)\]\n(.*?)^[ \t]*# \[end \1\]"
            for match in re.finditer(pattern, text, re.S | re.M):
                assert match[1] not in found, f"region {match[1]} is in two snippets"
                found[match[1]] = textwrap.dedent(match[2]).rstrip("\n")
    return found


def snippets() -> List[str]:
    return sorted(name[:-3] for name in os.listdir(SNIPPETS) if name.endswith(".py"))


def examples_run() -> str:
    with open(os.path.join(ROOT, "tests", "test_examples.py"), encoding="utf-8") as file:
        return file.read()


def test_every_python_block_of_the_docs_is_run_by_a_test() -> None:
    tested = examples_run()
    problems = []
    for block in doc_blocks():
        where = f"{block.page}:{block.line}"
        if block.source is None:
            first = block.text.splitlines()[0]
            if (os.path.basename(block.page), first) not in NOT_RUN:
                problems.append(f"{where}: a code-block:: python that no test runs ({first!r}); "
                                "make it a literalinclude of docs/snippets/ or examples/")
        elif block.source.startswith("examples" + os.sep):
            if os.path.basename(block.source) not in tested and \
                    os.path.dirname(block.source).split(os.sep)[-1] not in tested:
                problems.append(f"{where}: {block.source} is not run by tests/test_examples.py")
        elif not block.source.startswith(os.path.join("docs", "snippets")):
            problems.append(f"{where}: {block.source} is neither a snippet nor an example")
    assert not problems, "\n".join(problems)


def test_not_run_lists_only_blocks_that_exist() -> None:
    present = {(os.path.basename(b.page), b.text.splitlines()[0]) for b in doc_blocks() if b.source is None}
    assert set(NOT_RUN) <= present, set(NOT_RUN) - present


def test_every_python_block_of_the_readme_is_a_snippet_region() -> None:
    known = regions()
    for block in readme_blocks():
        assert block.text in known.values(), (
            f"README.md:{block.line}: this block is no region of docs/snippets/*.py, word for word:\n"
            f"{block.text}")


def _bound_and_used(text: str) -> Tuple[Set[str], Set[str]]:
    tree = ast.parse(text)
    bound: Set[str] = set()
    used: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (used if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
    return bound, used


def test_no_snippet_calls_a_name_it_does_not_define() -> None:
    """Each name a block uses is defined in it, or in an earlier block of the same page."""
    known_builtins = set(dir(builtins)) | {"__name__", "__file__"}
    problems = []
    defined: Dict[str, Set[str]] = {}
    for block in [*readme_blocks(), *doc_blocks()]:
        if block.source is None and (os.path.basename(block.page), block.text.splitlines()[0]) in NOT_RUN:
            continue
        try:
            bound, used = _bound_and_used(block.text)
        except SyntaxError as exc:
            problems.append(f"{block.page}:{block.line}: not Python: {exc}")
            continue
        page = defined.setdefault(block.page, set())
        missing = used - bound - page - known_builtins
        if missing:
            problems.append(f"{block.page}:{block.line}: uses {sorted(missing)}, defined nowhere before")
        page |= bound
    assert not problems, "\n".join(problems)


#: Docstring examples in the rendered modules that the name check skips, by file and object, with the reason.
DOCSTRINGS_NOT_CHECKED: Dict[Tuple[str, str], str] = {}

#: The directives that set the module an autodoc name is looked up in, and those that render one.
AUTODOC = r"\s*\.\. (currentmodule|py:currentmodule|module|py:module|auto\w+)::\s*(\S+)\s*$"


def _defined_in(dotted: str) -> str:
    """The source file, relative to the checkout, of what the dotted name names."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as exc:
            if exc.name is None or not ".".join(parts[:cut]).startswith(exc.name):
                raise
            continue
        found = module
        for attribute in parts[cut:]:
            found = getattr(found, attribute)
        if inspect.isclass(found) or inspect.isroutine(found):
            module = inspect.getmodule(found) or module  # where it is defined, not re-exported
        # The checkout's file of that module, by its name: under tox the module
        # imported is the installed copy, whose path is not the checkout's.
        stem = os.path.join(*module.__name__.split("."))
        for path in (stem + ".py", os.path.join(stem, "__init__.py")):
            if os.path.exists(os.path.join(ROOT, path)):
                return path
        raise AssertionError(f"{dotted}: {module.__name__} is not a module of the checkout")
    raise AssertionError(f"no module for {dotted}")


def rendered_modules() -> List[str]:
    """Every source file holding something that a page of the docs renders with autodoc."""
    files: Set[str] = set()
    for name in sorted(os.listdir(DOCS)):
        if not name.endswith(".rst"):
            continue
        current = ""
        for line in _read("docs", name).splitlines():
            match = re.match(AUTODOC, line)
            if not match:
                continue
            directive, target = match[1], match[2]
            if directive in ("currentmodule", "py:currentmodule", "module", "py:module", "automodule"):
                current = target
            if directive.startswith("auto"):
                absolute = directive == "automodule" or "." in target
                files.add(_defined_in(target if absolute else f"{current}.{target}"))
    return sorted(files)


def _documented(tree: ast.Module) -> Iterator[Tuple[str, ast.AST]]:
    """The module and every class and function in it, nested ones too, by qualified name."""
    yield "", tree
    stack: List[Tuple[str, ast.AST]] = [("", tree)]
    while stack:
        prefix, parent = stack.pop()
        for node in ast.iter_child_nodes(parent):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + node.name
                yield name, node
                stack.append((name + ".", node))


def docstring_blocks(path: str) -> Iterator[Tuple[str, Block]]:
    """Each ``code-block:: python`` of a docstring in *path*, with the qualified name of its owner."""
    tree = ast.parse(_read(path))
    for name, node in _documented(tree):
        assert isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        docstring = ast.get_docstring(node)
        if not docstring:
            continue
        first = node.body[0].lineno  # the docstring's opening line
        lines = docstring.splitlines()
        i = 0
        while i < len(lines):
            match = re.match(r"\s*\.\. (code-block|code|sourcecode)::\s*(\S*)\s*$", lines[i])
            if not match:
                i += 1
                continue
            _, body, after = _directive_body(lines, i)
            if match[2] in ("python", "python3", "py"):
                yield name, Block(path, first + i, textwrap.dedent("\n".join(body)).strip(), None)
            i = after


def test_every_docstring_example_the_api_docs_render_defines_or_imports_each_name_it_uses() -> None:
    """Each docstring example stands alone: a reader copies it from the API page without the module."""
    known_builtins = set(dir(builtins))
    problems = []
    skipped = set()
    modules = rendered_modules()
    assert "batchdispatch/_dispatcher.py" in modules, modules  # the directives were read
    for path in modules:
        for owner, block in docstring_blocks(path):
            if (path, owner) in DOCSTRINGS_NOT_CHECKED:
                skipped.add((path, owner))
                continue
            try:
                bound, used = _bound_and_used(block.text)
            except SyntaxError as exc:
                problems.append(f"{block.page}:{block.line} ({owner or 'module'}): not Python: {exc}")
                continue
            missing = used - bound - known_builtins
            if missing:
                problems.append(f"{block.page}:{block.line} ({owner or 'module'}): uses {sorted(missing)}, "
                                "which it neither imports nor defines")
    assert not problems, "\n".join(problems)
    assert skipped == set(DOCSTRINGS_NOT_CHECKED), set(DOCSTRINGS_NOT_CHECKED) - skipped


def _run(name: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHDISPATCH_", "FLASK_"))}
    environ.update(PYTHONPATH=ROOT, PYTHONWARNINGS="error::ResourceWarning")
    return subprocess.run(
        [sys.executable, os.path.join("docs", "snippets", name + ".py")], cwd=ROOT, env=environ,
        capture_output=True, text=True, timeout=90, check=False,
    )


def _needs(name: str) -> List[str]:
    with open(os.path.join(SNIPPETS, name + ".py"), encoding="utf-8") as file:
        match = re.search(r"^# needs: (.*)$", file.read(), re.M)
    return match[1].replace(",", " ").split() if match else []


@pytest.mark.parametrize("name", snippets())
def test_snippet_runs_and_prints_what_the_docs_show(name: str, request: pytest.FixtureRequest) -> None:
    for service in _needs(name):  # the shared servers' fixtures skip, or fail in CI, when one is down
        request.getfixturevalue({"postgres": "postgres_conninfo", "redis": "redis_url",
                                 "rabbitmq": "rabbitmq_url"}[service])
    result = _run(name)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = os.path.join(SNIPPETS, name + ".out")
    if sys.version_info[:2] != OUTPUT_ON_ONE_PYTHON.get(name, sys.version_info[:2]):
        return  # it ran; its output is compared on the one Python that made it
    if os.path.exists(expected):
        with open(expected, encoding="utf-8") as file:
            assert result.stdout == file.read()


def _read(*parts: str) -> str:
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as file:
        return file.read()


def test_the_lifecycle_diagram_has_every_state_of_the_code() -> None:
    from batchdispatch._lifecycle import State

    drawn = set(re.findall(r"^\s+([A-Z_]+) \[label=", _read("docs", "diagrams", "lifecycle.dot"), re.M))
    assert drawn == {state.name for state in State}


def test_the_configuration_page_lists_every_option_of_the_integrations() -> None:
    from batchdispatch.contrib._options import DEFAULTS

    page = _read("docs", "configuration.rst")
    listed = set(re.findall(r"^   \* - ``BATCHDISPATCH_([A-Z_]+)``$", page, re.M))
    assert listed == set(DEFAULTS)
    assert set(re.findall(r"^     - ``([A-Z_]+)``$", page, re.M)) == set(DEFAULTS)  # the Django column


def test_the_phone_layout_of_the_guarantees_table_labels_its_columns_as_the_header_does() -> None:
    page = _read("docs", "guarantees.rst")
    table = page[page.index(":class: guarantees"):]
    header = table[:table.index("\n   * -", table.index("   * -") + 1)]  # up to the second row
    cells = re.findall(r"^   [* ] - (.*)$", header, re.M)[1:]  # every column after "Case"
    css = _read("docs", "_static", "tables.css")
    labels = re.findall(r'nth-child\(\d\)::before \{ content: "(.*)"; \}', css)
    assert labels == [cell.strip("`") for cell in cells]


def test_nothing_outside_the_package_imports_its_private_receiver() -> None:
    offenders = []
    for folder in ("docs", "examples", "tests"):
        for directory, _, files in os.walk(os.path.join(ROOT, folder)):
            for name in files:
                if name.endswith((".py", ".rst", ".md")) and name != "test_docs.py":
                    text = _read(directory, name)
                    if re.search(r"batchdispatch\._receiver|from batchdispatch import _receiver", text):
                        offenders.append(os.path.relpath(os.path.join(directory, name), ROOT))
    assert not offenders, f"use batchdispatch.testing instead: {offenders}"


def test_the_output_the_readme_shows_is_what_its_example_prints() -> None:
    shown = _read("docs", "snippets", "first_example.out")
    assert f"```text\n{shown}```" in _read("README.md")


#: A ratio as the docs write one: "185 times", "25.77x" (not "2 workers x 4").
RATIO = r"(?<![\w.,])(\d[\d,]*(?:\.\d+)?)(?:x|\s+times)\b"


def _readme_section(title: str) -> str:
    text = _read("README.md")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def test_every_ratio_the_readme_quotes_from_the_benchmark_is_on_the_benchmark_page() -> None:
    quoted = re.findall(RATIO, _readme_section("Benchmark"))
    assert quoted, "the README's benchmark section quotes no ratio: is this test reading the right section?"
    shown = set(re.findall(RATIO, _read("docs", "benchmark.rst")))
    missing = [ratio for ratio in quoted if ratio not in shown]
    assert not missing, f"the README's benchmark section quotes {missing}, not on docs/benchmark.rst"


def test_the_app_chart_is_drawn_from_the_tables_the_benchmark_page_quotes() -> None:
    """docs/charts/make_charts.py draws bench-app.svg from bench-app.txt: each of its tables must be
    on the page as it is, so that the chart and the page give the same figures."""
    page = _read("docs", "benchmark.rst")
    tables = _read("docs", "charts", "bench-app.txt").strip().split("\n\n")
    assert len(tables) == 2
    for table in tables:
        assert "\n".join("    " + line for line in table.splitlines()) in page, table.splitlines()[0]


def test_developers_md_gives_the_start_command_of_each_server_the_tests_quote() -> None:
    """DEVELOPERS.md and tests/services.py say the same: a test that finds a server
    down quotes START_COMMANDS, and a reader of DEVELOPERS.md must find those."""
    text = _read("DEVELOPERS.md")
    for name, command in START_COMMANDS.items():
        assert f"# {name}\n{command}\n" in text, name
    assert REQUIRE_ENV in text


def test_the_readme_links_developers_md() -> None:
    assert "(DEVELOPERS.md)" in _read("README.md")
