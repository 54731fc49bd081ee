"""The ``app`` section's load: wrk when the machine has it, else keep-alive connections in Python.

:func:`run_load` sends ``GET`` requests on *connections* keep-alive
connections for *seconds* and returns a :class:`Load`: requests answered,
errors, and requests per second. With ``wrk`` on the PATH it runs ``wrk
-t2 -c<connections> -d<seconds>s``, whose figures are read from its
output. Without it, two Python processes (running :func:`main`) each hold half
the connections, one thread and one
:class:`http.client.HTTPConnection` per connection; Python is slower at
this than wrk, so its rate is lower and the report says which was used.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
from typing import List, Optional, Sequence

#: Processes the Python load generator shares the connections between.
PROCESSES = 2


@dataclasses.dataclass(frozen=True)
class Load:
    """What one load run did: *requests* answered 2xx in *seconds*, and *errors* (other answers, failures)."""

    requests: int
    errors: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def generator() -> str:
    """What :func:`run_load` uses here: ``"wrk"`` or ``"python"``."""
    return "wrk" if shutil.which("wrk") else "python"


_WRK_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m),", re.MULTILINE)
_WRK_ERRORS = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def parse_wrk(output: str) -> Load:
    """The figures of wrk's report; a ValueError if it has none."""
    total = _WRK_TOTAL.search(output)
    if total is None:
        raise ValueError(f"wrk printed no total: {output.strip()[-300:]!r}")
    answered = int(total.group(1))  # every answer, 2xx or not
    non_2xx = sum(int(n) for n in _WRK_ERRORS.findall(output))
    socket = _WRK_SOCKET.search(output)
    failed = sum(int(n) for n in socket.groups()) if socket is not None else 0
    return Load(answered - min(answered, non_2xx), non_2xx + failed,
                float(total.group(2)) * _UNITS[total.group(3)])


def run_load(url: str, connections: int, seconds: float) -> Load:
    """Load *url* from *connections* keep-alive connections for *seconds*."""
    wrk = shutil.which("wrk")
    if wrk is not None:
        threads = max(1, min(2, connections))
        duration = max(1, round(seconds))
        done = subprocess.run(
            [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", url],
            capture_output=True, text=True, timeout=duration + 60, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr.strip()[-300:]}")
        return parse_wrk(done.stdout)
    shares = [connections // PROCESSES + (1 if k < connections % PROCESSES else 0) for k in range(PROCESSES)]
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=path)
    started = time.perf_counter()
    # -c, not -m: running this module as __main__ would import it twice (the package imports it).
    children = [
        subprocess.Popen(
            [sys.executable, "-c", f"import sys; from {__name__} import main; sys.exit(main(sys.argv[1:]))",
             url, str(share), repr(seconds)],
            stdout=subprocess.PIPE, text=True, env=env,
        )
        for share in shares if share
    ]
    loads = []
    for child in children:
        out, _ = child.communicate(timeout=seconds + 60)
        loads.append(json.loads(out))
    elapsed = time.perf_counter() - started
    return Load(sum(n["requests"] for n in loads), sum(n["errors"] for n in loads),
                max([n["seconds"] for n in loads] or [elapsed]))


def _connection_loop(url: str, deadline: float, counts: List[int], index: int) -> None:
    parts = urllib.parse.urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    connection: Optional[http.client.HTTPConnection] = None
    answered = errors = 0
    while time.monotonic() < deadline:
        try:
            if connection is None:
                connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)
            connection.request("GET", target)
            response = connection.getresponse()
            response.read()
            if 200 <= response.status < 300:
                answered += 1
            else:
                errors += 1
            if response.will_close:
                connection.close()
                connection = None
        except (OSError, http.client.HTTPException):
            errors += 1
            if connection is not None:
                connection.close()
            connection = None
    if connection is not None:
        connection.close()
    counts[2 * index], counts[2 * index + 1] = answered, errors


def main(argv: Sequence[str]) -> int:
    """One load process: ``main([URL, CONNECTIONS, SECONDS])`` prints a JSON Load."""
    url, connections, seconds = argv[0], int(argv[1]), float(argv[2])
    counts = [0] * (2 * connections)
    started = time.perf_counter()
    deadline = time.monotonic() + seconds
    threads = [threading.Thread(target=_connection_loop, args=(url, deadline, counts, k), daemon=True)
               for k in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    elapsed = time.perf_counter() - started
    print(json.dumps({"requests": sum(counts[0::2]), "errors": sum(counts[1::2]), "seconds": elapsed}))
    return 0

