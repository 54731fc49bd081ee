"""``python -m batchdispatch``, run as a real subprocess.

Nothing here asserts on speed: the figures belong to the bench's output,
not to a pass/fail verdict on a shared machine.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple, Type

import pytest

import batchdispatch
from batchdispatch import _console, _demo, _send

from .conftest import run_on_terminal
from .services import POSTGRES_PORT, REDIS_PORT, need

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
        (["bench", "--only", "keyed"], "argument --only: invalid choice: 'keyed'"),
        (["send"], "the following arguments are required: URL"),
        (["send", "http://127.0.0.1:9/", "--header", "api-key"], "argument --header: expected NAME:VALUE"),
        (["send", "http://127.0.0.1:9/", "--header", ":value"], "argument --header: expected NAME:VALUE"),
        (["send", "http://127.0.0.1:9/", "--header", "a b:c"], "argument --header: expected NAME:VALUE"),
        (["send", "http://127.0.0.1:9/", "--retries", "-1"], "argument --retries: must be at least 0"),
        (["send", "http://127.0.0.1:9/", "--max-batch-size", "0"], "must be at least 1"),
        (["send", "http://127.0.0.1:9/", "--timeout", "inf"], "positive, finite number of seconds"),
        (["send", "http://127.0.0.1:9/", "--secret-env", "A=B"], "expected the name of an environment"),
    ],
)
def test_bad_arguments_are_rejected(args: List[str], message: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_a_malformed_header_is_not_echoed() -> None:
    # A header value is often a credential: the usage error must not print it.
    result = run_cli("send", "http://127.0.0.1:9/", "--header", "Authorization Bearer tok-123")
    assert result.returncode == 2
    assert "--header" in result.stderr
    assert "tok-123" not in result.stderr


@pytest.mark.parametrize("command", [["demo", "--url"], ["send"]])
def test_a_url_the_sink_cannot_use_is_a_usage_error(command: List[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "batchdispatch", *command, "ftp://example.com/"],
        cwd=ROOT, input="{}\n", capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )
    assert result.returncode == 2
    assert "error: url must be an http:// or https:// URL" in result.stderr


def test_send_help_lists_the_exit_statuses() -> None:
    result = run_cli("send", "--help")
    assert result.returncode == 0
    statuses = re.findall(r"^  (\d+) +(\S.*)$", result.stdout, flags=re.MULTILINE)
    assert [code for code, _ in statuses] == ["0", "1", "2", "3", "130"]
    assert "blank lines are skipped" in result.stdout
    for option in ("--delay", "--max-batch-size", "--header", "--secret-env", "--timeout", "--retries",
                   "--shutdown-timeout"):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("line", "first", "value"),
    [
        (b'{"a": 1}\n', False, {"a": 1}),
        (b'{"a": 1}\r\n', False, {"a": 1}),
        (b'  [1, "\xc3\xa9"]  \n', False, [1, "\u00e9"]),
        (b"\xef\xbb\xbf{}\n", True, {}),
        (b"null", False, None),
    ],
)
def test_parse_line_reads_one_json_value(line: bytes, first: bool, value: object) -> None:
    assert _send.parse_line(line, first=first) == value


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"a": 1\n', "not valid JSON: Expecting ',' delimiter (column 8)"),
        (b"{} []\n", "not valid JSON: Extra data (column 4)"),
        (b"Infinity\n", "Infinity is not valid JSON"),
        (b'{"a": -Infinity}', "-Infinity is not valid JSON"),
        (b"\xef\xbb\xbf{}\n", "not valid JSON: Unexpected UTF-8 BOM (decode using utf-8-sig) (column 1)"),
        (b'"\xe9"\n', "not UTF-8 (byte 2)"),
        (b"[" * 100_000, "not valid JSON: nested too deeply"),
    ],
)
def test_parse_line_explains_what_is_wrong(line: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        _send.parse_line(line)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://collector.example/ingest", "https://collector.example/ingest"),
        ("https://user:pw@collector.example:8443/i?key=abc#x", "https://***@collector.example:8443/i?…"),
        ("http://[::1]:8080/", "http://[::1]:8080/"),
        ("http://host:99999999/", "<unparsable URL>"),
    ],
)
def test_display_url_hides_credentials(url: str, shown: str) -> None:
    assert _console.display_url(url) == shown


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
    # Without --url it ships over real HTTP to a receiver of its own, and checks it.
    assert re.search(r"^  to http://127\.0\.0\.1:\d+/ \(an embedded receiver\)$", result.stdout, re.MULTILINE)
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


def test_demo_draws_progress_on_a_terminal() -> None:
    returncode, stdout, drawn = run_on_terminal(
        [sys.executable, "-m", "batchdispatch", "demo", "--items", "2000"]
    )
    assert returncode == 0
    assert "\rdemo: " in drawn
    assert "items/s" in drawn
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
    # (p): (d) while another thread scrapes its Prometheus collector (in the test extra).
    assert re.search(r"^prometheus: \(p\) is \(d\) with DispatcherCollector registered", out, re.MULTILINE)
    scraped = re.findall(r"^  [\d,.]+ ns/enq vs [\d,.]+ for \(d\) with (\d) thr, [\d.]+x$", out, re.MULTILINE)
    assert scraped == ["1", "4"]
    assert re.search(r"^keyed: 1,000 keys in turn; \(e\) with delay=5", out, re.MULTILINE)
    assert re.search(r"^\| \(b\) per key: lock \+ dict of lists +\|", out, re.MULTILINE)
    assert re.search(r"^\| \(e\) KeyedDispatcher +\|", out, re.MULTILINE)
    assert re.search(r"^  speed-up: [\d.]+x$", out, re.MULTILINE)
    http_rows = re.findall(r"^\| (\([fgh]\) .*?) +\| +([\d,]+) \| +([\d,]+) \| +[\d,]+ \|", out, re.MULTILINE)
    assert [label for label, _, _ in http_rows] == [
        "(f) requests.post per item (no session)",
        "(g) requests.Session().post per item",
        "(h) BackgroundDispatcher + HttpSink, batches of 100",
    ]
    # --quick: 100 posts each for (f) and (g), 5,000 items in 50 requests for (h).
    assert [(items, requests) for _, items, requests in http_rows] == [
        ("100", "100"), ("100", "100"), ("5,000", "50"),
    ]
    assert re.search(r"^HTTP batched \(h\)/\(f\): [\d.]+x, \(h\)/\(g\): [\d.]+x$", out, re.MULTILINE)
    assert "App: a Flask app under gunicorn" not in out  # app runs only when asked for


def test_bench_only_spool_measures_every_spool_in_both_modes() -> None:
    need("PostgreSQL", POSTGRES_PORT)  # the server spools' rows, on the shared servers
    need("Redis", REDIS_PORT)
    result = run_cli("bench", "--quick", "--only", "spool")
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\| (\([d-x]\) .*?) +\|", result.stdout, re.MULTILINE)
    assert rows == [
        "(d) BackgroundDispatcher, no spool",
        "(s) spool=SqliteSpool(path)",
        "(t) spool=SqliteSpool(path, durable=True)",
        "(u) spool=PostgresSpool(conninfo)",
        "(v) spool=PostgresSpool(conninfo, durable=True)",
        "(w) spool=RedisSpool(url, name)",
        "(x) spool=RedisSpool(url, name, durable=True)",
    ]
    summary = r"^durable enqueue with 4 producer threads: [\d.,]+ us per item$"
    assert re.search(summary, result.stdout, re.MULTILINE)
    for spool in ("PostgresSpool", "RedisSpool"):  # the us per item with 1 and with 4 threads
        each = rf"^{spool} durable: [\d.,]+ us per item with 1 thread \([\d,]+ items/s\), [\d.,]+ us per item"
        assert re.search(each, result.stdout, re.MULTILINE), spool
    # Each server's floor, a bare durable write per round trip through its client, beside it.
    floor = r"^  its floor, one {} per round trip \(.*\): [\d,]+ items/s with 1 thread \(durable: [\d.]+x"
    for write in ("INSERT and its commit", "XADD"):
        assert re.search(floor.format(write), result.stdout, re.MULTILINE), write
    assert "(a) deque.append" not in result.stdout
    assert "(h) BackgroundDispatcher + HttpSink" not in result.stdout


def test_bench_only_http_runs_that_section_alone() -> None:
    result = run_cli("bench", "--quick", "--only", "http")
    assert result.returncode == 0, result.stderr
    assert "(h) BackgroundDispatcher + HttpSink" in result.stdout
    # The worker's CPU per event, batches of 100 and 1,000, with each serializer installed.
    assert re.search(r"^\| serializer +\| us/event, batches of 100 \| us/event, batches of 1,000 \|$",
                     result.stdout, re.MULTILINE)
    names = re.findall(r"^\| (\w+_serializer) +\| +[\d.]+ \| +[\d.]+ \|$", result.stdout, re.MULTILINE)
    assert names[0] == "json_serializer"
    assert ("orjson_serializer" in names) == (importlib.util.find_spec("orjson") is not None)
    # The HttpSink options of issue 15, every batch under the limit: each variant's row, with ratios.
    figure = r" +[\d.]+ \| +[\d.]+x \|"  # us/event, then its ratio to the defaults
    row = rf"^\| ([\w =()+.]+?) +\| +[\d,]+ \| +[\d.]+x \|{figure}{figure}$"
    variants = re.findall(row, result.stdout, re.MULTILINE)
    assert variants == ["defaults", "max_body_bytes=1 MiB", "secret (Standard Webhooks)",
                        "secret + max_body_bytes=1 MiB"]
    # The same variants before the POST, with no network: us per batch of 100 and of 1,000.
    before = re.findall(r"^\| ([\w =()+.]+?) +\| +[\d.]+ \| +[\d.]+x \| +[\d.]+ \| +[\d.]+x \|$",
                        result.stdout, re.MULTILINE)
    assert before == variants
    assert re.search(r"^Signing \(Standard Webhooks\) before the POST: [+-][\d.]+ us per batch of 100 ",
                     result.stdout, re.MULTILINE)
    # The same batches POSTed through HttpSink and through urllib3's urlopen: us per batch and per
    # event, and the ratio to HttpSink, for batches of 100 and 1,000.
    per_size = r"us/batch of {} \| us/event \| vs HttpSink \|"
    assert re.search(rf"^\| POST through +\| {per_size.format(100)} {per_size.format('1,000')}$",
                     result.stdout, re.MULTILINE)
    figure = r" +[\d,]+ \| +[\d.]+ \| +[\d.]+x \|"
    ways = re.findall(rf"^\| ([\w ,'()]+?) +\|{figure}{figure}$", result.stdout, re.MULTILINE)
    assert ways == ["HttpSink (requests, its adapter)", "urlopen, the sink's pool", "urlopen, a plain pool"]
    saved = r"[+-][\d,]+ us per batch of {} \([+-][\d.]+ us per event\)"
    summary = rf"^HttpSink less urlopen on the sink's pool: {saved.format(100)}; {saved.format('1,000')}\.$"
    assert re.search(summary, result.stdout, re.MULTILINE)
    assert "(a) deque.append" not in result.stdout
    assert "idle wake-ups" not in result.stdout


def bench_json(tmp_path: Any, section: str) -> Tuple[subprocess.CompletedProcess[str], Dict[str, Any]]:
    """``bench --quick --only SECTION --json PATH``: what it printed, and the JSON it wrote."""
    path = tmp_path / "bench.json"
    result = run_cli("bench", "--quick", "--only", section, "--json", str(path))
    assert result.returncode == 0, result.stderr
    with open(path, encoding="utf-8") as file:
        return result, json.load(file)


def test_bench_json_writes_the_figures_the_table_prints(tmp_path: Any) -> None:
    result, figures = bench_json(tmp_path, "enqueue")
    assert figures["python"].startswith(f"{sys.version_info[0]}.{sys.version_info[1]}.")
    assert "http" not in figures  # that section did not run
    designs = figures["enqueue"]["designs"]
    assert [design["key"] for design in designs] == ["a", "b", "c", "d"]
    for design in designs:
        row = rf"^\| {re.escape(design['label'])} +\| +([\d,.]+) \|"
        printed = re.search(row, result.stdout, re.MULTILINE)
        assert printed, design["label"]
        assert printed[1] == f"{design['ns_per_enqueue']['1']:,.1f}"  # the table's figure, unrounded
    assert set(designs[3]["items_per_s"]) == {"1", "4"}
    assert designs[0]["items_per_s"] == {}  # (a) has no consumer


def test_bench_json_writes_the_http_options_beside_the_http_runs(tmp_path: Any) -> None:
    result, figures = bench_json(tmp_path, "http")
    # The keys docs/charts/make_charts.py reads are as they were: (f), (g) and (h), in that order.
    assert [run["label"][:3] for run in figures["http"]] == ["(f)", "(g)", "(h)"]
    variants = figures["http_options"]["variants"]
    assert [(v["secret"], v["max_body_bytes"]) for v in variants] == [
        (False, None), (False, 1024 * 1024), (True, None), (True, 1024 * 1024)]
    for variant in variants:
        row = rf"^\| {re.escape(variant['label'])} +\| +([\d,]+) \|"
        printed = re.search(row, result.stdout, re.MULTILINE)
        assert printed, variant["label"]
        assert printed[1] == f"{variant['items_per_s']:,.0f}"
        assert set(variant["us_per_event"]) == set(variant["us_per_event_vs_defaults"]) == {"100", "1000"}
        assert set(variant["us_per_batch_before_post"]) == {"100", "1000"}
    assert variants[0]["items_per_s_vs_defaults"] == 1.0
    ways = figures["http_transport"]["ways"]
    assert [way["label"] for way in ways] == [
        "HttpSink (requests, its adapter)", "urlopen, the sink's pool", "urlopen, a plain pool"]
    for way in ways:
        assert set(way["us_per_batch"]) == set(way["us_per_event"]) == {"100", "1000"}


class _ClosedPipe(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        raise BrokenPipeError(32, "Broken pipe")


def test_output_keeps_the_first_error_and_stops_writing() -> None:
    stream = _ClosedPipe()
    out = _console.Output(stream, "stdout")
    assert out.failure() is None
    out.write("summary\n")
    out.write("more\n")
    out.flush()
    assert stream.writes == 1  # once failed, it is not written to again
    assert isinstance(out.error, BrokenPipeError)
    assert out.failure() == "stdout: Broken pipe"
