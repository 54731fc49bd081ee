"""The examples run as documented, against their own receiver on 127.0.0.1."""

from __future__ import annotations

import os
import re
from typing import Dict

from .conftest import ROOT, run_python


def test_webhooks_per_endpoint_retries_the_flaky_endpoint_and_gives_up_rejections() -> None:
    path = os.path.join(ROOT, "examples", "webhooks_per_endpoint.py")
    result = run_python(f"import runpy; runpy.run_path({path!r}, run_name='__main__')")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    delivered: Dict[str, int] = {}
    for line in lines:
        match = re.fullmatch(r"(ep-\w+): (\d+) delivered \(attempt (\d)\)", line)
        if match:
            delivered[match[1]] = delivered.get(match[1], 0) + int(match[2])
    assert delivered == {"ep-ok": 31, "ep-flaky": 30}  # ep-strict: partly delivered, partly failed
    assert "ep-flaky: attempt 1 failed: HTTP Error 503: Service Unavailable" in lines
    assert "ep-strict: gave up 3 items" in lines
    assert lines[-1].startswith("shutdown complete: True; enqueued 91, dispatched 88, failed 3")
