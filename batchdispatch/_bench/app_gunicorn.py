"""One variant of the ``app`` section served by a real gunicorn: :class:`Served`.

:meth:`Served.start` runs gunicorn (gthread, 2 workers x 4 threads, a
listening socket per worker) on :mod:`.app_server` with the variant's
environment, in a directory of its own, and waits until both workers
answer. :meth:`Served.load` loads ``GET /view`` for a while and reads the
CPU time the two worker processes spent meanwhile (``utime + stime`` of
``/proc/<pid>/stat``, which psutil would read too). :meth:`Served.stop`
sends SIGTERM and :meth:`Served.wait` collects what each worker wrote at
exit (requests served, the hand-over's CPU, the shipper threads' CPU) and
the ids of the events left in the spool file, if any.
"""

from __future__ import annotations

import dataclasses
import glob
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .app_load import Load, run_load
from .harness import BenchError

#: gunicorn's shape, as in the issue: gthread, 2 workers x 4 threads; and the load's connections.
WORKERS, THREADS, CONNECTIONS = 2, 4, 16
#: Seconds gunicorn gives its workers to exit (their exit flushes) before it kills them.
GRACEFUL = 30
#: Seconds gunicorn may take to serve with both workers.
BOOT_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class Window:
    """One load of one variant: what the load generator saw, and the workers' CPU seconds meanwhile."""

    load: Load
    cpu: float

    @property
    def cpu_per_request(self) -> float:
        return self.cpu / self.load.requests if self.load.requests else 0.0


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a variant's workers reported at exit, over all its loads (warm-up included)."""

    pids: Tuple[int, ...]
    served: Tuple[int, ...]  # requests to /view, per worker
    handover_ns: int  # the request threads' CPU handing events over, all workers
    shipper_cpu: float  # seconds of CPU of the shipper's threads, all workers
    exit_seconds: float  # from SIGTERM until gunicorn had exited
    spooled: List[object]  # ids of the events left in the spool file

    @property
    def total(self) -> int:
        return sum(self.served)


def _stat_fields(path: str) -> Optional[List[str]]:
    """The fields of a ``/proc/.../stat`` file after the command's name (field 3 on); None if gone."""
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def children(pid: int) -> List[int]:
    """The processes whose parent is *pid*."""
    found = []
    for path in glob.glob("/proc/[0-9]*/stat"):
        fields = _stat_fields(path)
        if fields is not None and int(fields[1]) == pid:
            found.append(int(path.split("/")[2]))
    return sorted(found)


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of *pids* (fields 14 and 15 of proc(5)); a process that is gone counts 0."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(f"/proc/{pid}/stat")
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gunicorn_command(port: int) -> List[str]:
    import gunicorn

    control = ["--no-control-socket"] if tuple(gunicorn.version_info) >= (25, 1) else []
    return [
        sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", str(WORKERS),
        "--worker-class", "gthread", "--threads", str(THREADS), "--graceful-timeout", str(GRACEFUL),
        # A listening socket per worker: the kernel spreads the connections between
        # them, where a shared one lets whichever worker accepts first take most.
        "--reuse-port",
        "--timeout", "120", "--log-level", "warning", *control, "batchdispatch._bench.app_server:app",
    ]


class Served:
    """gunicorn serving one variant, its events shipped to *receiver* (a base URL)."""

    def __init__(self, variant: str, receiver: str) -> None:
        self.variant = variant
        self.receiver = receiver
        self.directory = tempfile.mkdtemp(prefix=f"batchdispatch-bench-app-{variant}-")
        self.log = os.path.join(self.directory, "gunicorn.log")
        self.port = 0
        self.workers: List[int] = []
        self._server: Optional[subprocess.Popen[bytes]] = None
        self._stopping = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/view"

    def start(self) -> None:
        package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(
            os.environ, BATCHDISPATCH_BENCH_VARIANT=self.variant, BATCHDISPATCH_BENCH_RECEIVER=self.receiver,
            BATCHDISPATCH_BENCH_DIR=self.directory,
            PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p),
        )
        self.port = free_port()
        with open(self.log, "wb") as output:
            self._server = subprocess.Popen(gunicorn_command(self.port), env=env, cwd=self.directory,
                                            stdout=output, stderr=subprocess.STDOUT)
        self.workers = self._wait_until_serving(self._server)

    def _wait_until_serving(self, server: subprocess.Popen[bytes]) -> List[int]:
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            workers = children(server.pid)
            if len(workers) >= WORKERS and self._answers():
                return workers
            if server.poll() is not None or time.monotonic() > deadline:
                exited = server.poll() is not None
                state = f"exited with {server.returncode}" if exited else "did not serve in time"
                raise BenchError(f"app: gunicorn ({self.variant}) {state}:\n{self._log_tail()}")
            time.sleep(0.05)

    def _answers(self) -> bool:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", "/health")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def _log_tail(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as file:
            return file.read()[-2000:]

    def load(self, seconds: float) -> Window:
        """Load /view from CONNECTIONS connections for *seconds*; the workers' CPU meanwhile."""
        before = cpu_seconds(self.workers)
        load = run_load(self.url, CONNECTIONS, seconds)
        cpu = cpu_seconds(self.workers) - before
        if load.errors:
            raise BenchError(f"app: {load.errors} requests failed ({self.variant}):\n{self._log_tail()}")
        return Window(load, cpu)

    def stop(self) -> None:
        """SIGTERM: gunicorn stops its workers gracefully, and each delivers what it holds."""
        if self._server is not None and self._server.poll() is None:
            self._stopping = time.monotonic()
            self._server.send_signal(signal.SIGTERM)

    def wait(self) -> Outcome:
        """Wait for gunicorn to exit (after :meth:`stop`); what the workers reported."""
        assert self._server is not None, "start() first"
        returncode = self._server.wait(timeout=GRACEFUL + 30)
        exit_seconds = time.monotonic() - self._stopping
        if returncode != 0:
            raise BenchError(f"app: gunicorn ({self.variant}) exited with {returncode}:\n{self._log_tail()}")
        reports: List[Dict[str, Any]] = []
        for path in sorted(glob.glob(os.path.join(self.directory, "worker-*.json"))):
            with open(path, encoding="utf-8") as file:
                reports.append(json.load(file))
        if len(reports) != WORKERS:
            raise BenchError(f"app: {len(reports)} of {WORKERS} workers ({self.variant}) reported at exit")
        return Outcome(
            pids=tuple(r["pid"] for r in reports), served=tuple(r["served"] for r in reports),
            handover_ns=sum(r["handover_ns"] for r in reports),
            shipper_cpu=sum(r.get("shipper_cpu", 0.0) for r in reports), exit_seconds=exit_seconds,
            spooled=spooled(os.path.join(self.directory, "spool.db")),
        )

    def close(self) -> None:
        """Kill gunicorn if it still runs, and remove the directory. Idempotent."""
        if self._server is not None and self._server.poll() is None:
            self._server.kill()
            self._server.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def spooled(path: str) -> List[object]:
    """The ids of the events left in the spool file at *path*, for the next start; read only."""
    from ..spool._inspect import Inspector

    if not os.path.exists(path):
        return []
    inspector = Inspector(path)
    ids: List[object] = []
    for row in [*inspector.rows(), *inspector.rows(dead=True)]:
        try:
            ids.append(json.loads(row.data)["properties"]["id"])
        except (TypeError, ValueError, KeyError):
            ids.append(("undecodable", row.id))
    return ids
