"""The bench's app section: a real gunicorn, a real load, its report; and its load generators.

Nothing here asserts on speed: the figures belong to the bench's output.
What is checked is that each variant ran, and that the graceful stop lost
no event of the batchdispatch variants.
"""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Dict, List

import pytest

from batchdispatch._bench import app, app_load
from batchdispatch.testing import Receiver

from ..conftest import ROOT

#: The quick app section runs 6 variants, then 5 against the slow receiver, a few seconds each.
TIMEOUT = 600

WRK_OUTPUT = """\
Running 10s test @ http://127.0.0.1:8000/view
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.89ms    1.20ms  30.12ms   89.10%
    Req/Sec     2.07k   150.33     2.40k    71.00%
  41260 requests in 10.01s, 6.85MB read
  Non-2xx or 3xx responses: 12
  Socket errors: connect 0, read 3, write 0, timeout 1
Requests/sec:   4121.88
Transfer/sec:    700.62KB
"""


def test_wrk_output_is_read() -> None:
    load = app_load.parse_wrk(WRK_OUTPUT)
    assert (load.requests, load.errors, load.seconds) == (41248, 16, 10.01)
    assert load.per_second == pytest.approx(41248 / 10.01)
    with pytest.raises(ValueError, match="no total"):
        app_load.parse_wrk("unable to connect to 127.0.0.1:8000 Connection refused")


def test_the_python_load_keeps_its_connections_alive(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app_load.shutil, "which", lambda name: None)
    assert app_load.generator() == "python"
    load = app_load.run_load(receiver.url + "view", 4, 0.5)
    assert load.errors == 0
    assert load.requests == receiver.request_count > 0
    assert {r.path for r in receiver.requests} == {"/view"}


def rows(text: str) -> Dict[str, List[str]]:
    found = {}
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| ") and not line.startswith("| variant"):
            found.setdefault(cells[0], cells[1:])
    return found


@pytest.mark.timeout(TIMEOUT + 60)
def test_bench_only_app_serves_each_variant_and_loses_nothing_at_a_graceful_stop() -> None:
    pytest.importorskip("flask")
    pytest.importorskip("gunicorn")
    result = subprocess.run(
        [sys.executable, "-m", "batchdispatch", "bench", "--quick", "--only", "app"],
        cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    out = result.stdout
    loader = r"loaded in turn from 16 keep-alive connections \((wrk|python)\), 1 s each,$"
    assert re.search(loader, out, re.MULTILINE)
    fast, _, slow = out.partition("Slow receiver: 200 ms per POST")
    measured = rows(fast)
    slowed = rows(slow)
    for key, label, module in app.VARIANTS:
        name = next((row for row in measured if row.startswith(label)), None)
        if name is None:  # a peer client that is not installed says so
            assert module is not None, out
            assert f"app: {label}: not measured, {module} is not installed" in out
            continue
        rate, served, received, lost = (measured[name][i] for i in (0, 9, 10, 11))
        assert int(rate.replace(",", "")) > 0
        if key in ("sink", "sink100", "orjson", "spill"):
            # SIGTERM: every worker delivered what it held
            assert (received, lost) == (served, "0"), out
        if key != "bare":
            assert name in slowed, out
    # With a spool, nothing is lost to the slow receiver either: the rest waits in the file.
    spill = next(row for name, row in slowed.items() if name.startswith("HttpSink, batches of 100, spill"))
    assert spill[4] == "0", out
    assert "(a) deque.append" not in out
