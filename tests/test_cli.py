"""``python -m batchdispatch``, run as a real subprocess.

Nothing here asserts on speed: the figures belong to the bench's output,
not to a pass/fail verdict on a shared machine.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Type

import pytest

import batchdispatch
from batchdispatch import _demo

ROOT = Path(__file__).resolve().parent.parent

#: Seconds any one command may take before the test fails instead of hanging.
TIMEOUT = 60


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    # From the checkout's root, so `-m` finds this batchdispatch even when
    # the package is not installed.
    return subprocess.run(
        [sys.executable, "-m", "batchdispatch", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"batchdispatch {batchdispatch.__version__}"


def test_no_command_is_a_usage_error() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "usage:" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--threads", "0"], "must be at least 1"),
        (["demo", "--delay", "nan"], "positive, finite number of seconds"),
        (["demo", "--items", "many"], "expected a whole number"),
        (["bench", "--repeat", "-1"], "must be at least 1"),
    ],
)
def test_bad_arguments_are_rejected(args: List[str], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_demo_prints_its_summary() -> None:
    result = run_cli(
        "demo", "--items", "3000", "--threads", "3", "--delay", "0.005", "--max-batch-size", "200"
    )
    assert result.returncode == 0, result.stderr
    # stderr is a pipe, not a terminal: no progress line, and nothing went wrong.
    assert result.stderr == ""
    fields = dict(re.findall(r"^  (\S.*?\S)  +(\S.*)$", result.stdout, flags=re.MULTILINE))
    for field in ("items", "batches", "mean batch size", "drops", "items/s", "ns per enqueue"):
        assert field in fields, result.stdout
    assert "3 producer threads, 3,000 events" in result.stdout
    # Far below the default queue bound: every event is accepted and arrives.
    assert fields["items"] == "3,000"
    assert fields["drops"] == "0"


class _LossySink(_demo.MemorySink):
    """Silently loses the events of producer thread 1."""

    def __call__(self, batch: List[_demo.Event]) -> None:
        super().__call__([event for event in batch if event["thread"] != 1])


class _BrokenSink(_demo.MemorySink):
    def __call__(self, batch: List[_demo.Event]) -> None:
        raise ConnectionError("collector unreachable")


@pytest.mark.parametrize(
    ("sink_type", "errors"),
    [
        (_LossySink, ["error: the sink received 200 of the 400 accepted items"]),
        (
            _BrokenSink,
            [
                "error: the sink raised for 400 items (last error: ConnectionError('collector unreachable'))",
                "error: the sink received 0 of the 400 accepted items",
            ],
        ),
    ],
)
def test_demo_fails_when_the_sink_misses_items(sink_type: Type[_demo.MemorySink], errors: List[str]) -> None:
    # In-process, because the pluggable sink is the point and no flag selects one.
    out, err = io.StringIO(), io.StringIO()
    options = _demo.DemoOptions(threads=2, items=400, delay=0.001, max_batch_size=50)
    assert _demo.run(options, out, err, sink=sink_type()) == 1
    assert "mean batch size" in out.getvalue()  # the summary is printed all the same
    assert err.getvalue().splitlines() == errors


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_demo_draws_progress_on_a_terminal() -> None:
    import pty

    primary, secondary = pty.openpty()
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "batchdispatch", "demo", "--items", "2000"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=secondary,
            text=True,
        ) as proc:
            os.close(secondary)
            secondary = -1
            stdout, _ = proc.communicate(timeout=TIMEOUT)
        drawn = b""
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(primary)
        if secondary != -1:
            os.close(secondary)
    assert proc.returncode == 0
    assert "\rdemo: " in drawn.decode()
    assert "items/s" in drawn.decode()
    assert "ns per enqueue" in stdout  # the summary still goes to stdout


def test_bench_quick_prints_the_table() -> None:
    result = run_cli("bench", "--quick")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"Python {sys.version_info[0]}.{sys.version_info[1]}" in out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = list(itertools.takewhile(lambda line: line.startswith("|"), lines[start:]))
    header, rule, *rows = table
    assert [cell.strip() for cell in header.strip("|").split("|")] == [
        "design",
        "ns/enq 1 thr", "vs (b)",
        "ns/enq 4 thr", "vs (b)",
        "e2e/s 1 thr", "vs (c)",
        "e2e/s 4 thr", "vs (c)",
    ]
    assert re.fullmatch(r"\|-+(\|-+:)+\|", rule)
    labels = [row.split("|")[1].strip() for row in rows]
    assert [label[:3] for label in labels] == ["(a)", "(b)", "(c)", "(d)"]
    assert "BackgroundDispatcher" in labels[3]
    assert "queue.Queue" in labels[2]
    # Every row has as many cells as the header, and (b) is its own yardstick.
    assert {row.count("|") for row in table} == {header.count("|")}
    assert rows[1].split("|")[3].strip() == "1.00x"
    assert re.search(r"^end-to-end \(d\)/\(c\): [\d.]+x with 1 producer thread", out, re.MULTILINE)
    assert re.search(r"^idle wake-ups in [\d.]+ s: \d+ \(waits with a timeout: \d+\)$", out, re.MULTILINE)
    assert re.search(r"^keyed: 1,000 keys in turn; \(e\) with delay=5", out, re.MULTILINE)
    assert re.search(r"^\| \(b\) per key: lock \+ dict of lists +\|", out, re.MULTILINE)
    assert re.search(r"^\| \(e\) KeyedDispatcher +\|", out, re.MULTILINE)
    assert re.search(r"^  speed-up: [\d.]+x$", out, re.MULTILINE)
