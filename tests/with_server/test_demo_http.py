"""``python -m batchdispatch demo --url`` end to end, against a Receiver started by the test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any, Dict

from batchdispatch.testing import Response

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Seconds any one command may take before the test fails instead of hanging.
TIMEOUT = 60


def demo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchdispatch", "demo", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, check=False,
        env=dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="error::ResourceWarning"),
    )


def summary(stdout: str) -> Dict[str, str]:
    return dict(re.findall(r"^  (\S.*?\S)  +(\S.*)$", stdout, flags=re.MULTILINE))


def test_demo_ships_every_event_to_the_url(receiver: Any) -> None:
    url = receiver.url + "ingest"
    result = demo("--url", url, "--items", "3000", "--threads", "3", "--max-batch-size", "200")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert f"\n  to {url}\n" in result.stdout
    # Every event arrived exactly once, in batches of at most 200, at the path given.
    events = receiver.items
    assert sorted((e["thread"], e["seq"]) for e in events) == sorted(
        (thread, seq) for thread, count in enumerate((1000, 1000, 1000)) for seq in range(count)
    )
    assert {r.path for r in receiver.requests} == {"/ingest"}
    assert all(len(r.items) <= 200 for r in receiver.requests)
    fields = summary(result.stdout)
    assert fields["items"] == "3,000"
    assert fields["batches"] == f"{receiver.request_count:,}"
    assert fields["drops"] == "0"


def test_demo_fails_when_the_url_refuses_the_events(receiver: Any) -> None:
    receiver.respond(*[Response(400, body=b"unknown event type")] * 1000)
    result = demo("--url", receiver.url, "--items", "400", "--threads", "2", "--max-batch-size", "100")
    assert result.returncode == 1
    errors = result.stderr.splitlines()
    assert errors[0].startswith("error: the sink raised for 400 items (last error: DeliveryError(")
    assert "answered 400 Bad Request: unknown event type" in errors[0]
    assert errors[1:] == ["error: the sink received 0 of the 400 accepted items"]
    assert summary(result.stdout)["items"] == "0"  # the summary is printed all the same
    assert receiver.items == []
