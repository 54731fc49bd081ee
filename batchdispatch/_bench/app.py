"""The ``app`` section: what shipping one event per request costs a Flask app under gunicorn.

Each run starts gunicorn (gthread, 2 workers x 4 threads) on the app of
:mod:`.app_server` with one variant shipping its events to the receiver of
:mod:`.app_receiver`, warms it up, loads ``GET /view`` from 16 keep-alive
connections (:mod:`.app_load`: wrk, or Python) and reads, over that window,
the requests per second and the CPU time of the two worker processes
(``utime + stime`` of ``/proc/<pid>/stat``). Then it sends SIGTERM to the
master and, once gunicorn has exited, compares the unique events received
with the requests served (each worker writes its count at exit), and
notes how the requests were shared between the workers (gunicorn may hand
most connections to one).

The variants (:data:`VARIANTS`) run in turn, round after round, each round
starting with a different one, so that a busy moment of a shared machine
weighs on all of them; the report gives medians and the spread. The cost
of a variant is ``1 - req/s(variant) / req/s(bare)``.

Then each variant but the bare app runs once against a slow receiver (200
ms per POST), to show what each one loses when the endpoint cannot keep up.
"""

from __future__ import annotations

import dataclasses
import glob
import http.client
import importlib.metadata
import importlib.util
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

from .app_load import Load, generator, run_load
from .app_receiver import Counter
from .harness import BenchError
from .options import BenchOptions
from .output import status, table

#: (key, label, the module it needs or None): :mod:`.app_server` knows them by key.
VARIANTS: Tuple[Tuple[str, str, Optional[str]], ...] = (
    ("bare", "bare app (no events)", None),
    ("sink", "HttpSink, defaults (delay 0.1 s, no batch limit)", None),
    ("sink100", "HttpSink, batches of 100, delay 0.5 s", None),
    ("spill", "HttpSink, batches of 100, spill to SqliteSpool", None),
    ("posthog", "PostHog", "posthog"),
    ("segment", "Segment analytics-python", "segment.analytics"),
)
#: The distributions whose versions the report names.
DISTRIBUTIONS = {"posthog": "posthog", "segment": "segment-analytics-python"}
#: gunicorn's shape, as in the issue: gthread, 2 workers x 4 threads; and the load's connections.
WORKERS, THREADS, CONNECTIONS = 2, 4, 16
#: Seconds of the slow receiver's wait before it answers each POST.
SLOW_POST = 0.2
#: Seconds gunicorn gives its workers to exit (their exit flushes) before it kills them.
GRACEFUL = 30
BOOT_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of one variant."""

    variant: str
    load: Load
    cpu: float  # seconds of CPU of the worker processes during the load
    served: Tuple[int, ...]  # requests to /view per worker, warm-up included
    handover_ns: int  # CPU of the request threads handing events over, all workers
    received: int  # unique events received
    events: int  # events received in all (duplicates included)
    posts: int
    exit_seconds: float
    kept: int = 0  # events left in the spool file (the spill variant), and not received
    shipper_cpu: float = 0.0  # seconds of CPU of the shipper's threads, all workers, the whole run

    @property
    def cpu_per_request(self) -> float:
        return self.cpu / self.load.requests if self.load.requests else 0.0

    @property
    def shipper_per_event(self) -> float:
        return self.shipper_cpu / sum(self.served) if sum(self.served) else 0.0

    @property
    def handover_per_request(self) -> float:
        return self.handover_ns / 1e9 / sum(self.served) if sum(self.served) else 0.0


def missing() -> List[str]:
    """What the section needs and this Python lacks (Flask, gunicorn); empty if nothing."""
    return [name for name in ("flask", "gunicorn") if importlib.util.find_spec(name) is None]


def _available(module: Optional[str]) -> bool:
    try:
        return module is None or importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # segment.analytics without segment
        return False


def _label(key: str, label: str) -> str:
    distribution = DISTRIBUTIONS.get(key)
    if distribution is None:
        return label
    try:
        return f"{label} {importlib.metadata.version(distribution)}"
    except importlib.metadata.PackageNotFoundError:
        return label


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _children(pid: int) -> List[int]:
    found = []
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(path, encoding="ascii", errors="replace") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(path.split("/")[2]))
    return sorted(found)


def _cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of *pids*, from ``/proc/<pid>/stat``; a process that is gone counts 0."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return total / ticks


def _gunicorn_command(port: int) -> List[str]:
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


def _wait_until_serving(server: subprocess.Popen[bytes], port: int, log: str) -> List[int]:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while True:
        workers = _children(server.pid)
        if len(workers) >= WORKERS:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    connection.close()
                    return workers
                connection.close()
            except OSError:
                pass
        if server.poll() is not None or time.monotonic() > deadline:
            with open(log, encoding="utf-8", errors="replace") as file:
                text = file.read()[-2000:]
            exited = server.poll() is not None
            state = f"exited with {server.returncode}" if exited else "did not serve in time"
            raise BenchError(f"app: gunicorn {state}:\n{text}")
        time.sleep(0.05)


def run_once(variant: str, counter: Counter, seconds: float, warmup: float) -> Run:
    """Serve *variant* under gunicorn, load it, stop it; what it served and what arrived."""
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with tempfile.TemporaryDirectory(prefix="batchdispatch-bench-app-") as directory:
        port = _free_port()
        env = dict(os.environ, BATCHDISPATCH_BENCH_VARIANT=variant, BATCHDISPATCH_BENCH_RECEIVER=counter.url,
                   BATCHDISPATCH_BENCH_DIR=directory,
                   PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
        log = os.path.join(directory, "gunicorn.log")
        counter.reset()
        with open(log, "wb") as output:
            server = subprocess.Popen(_gunicorn_command(port), env=env, cwd=directory,
                                      stdout=output, stderr=subprocess.STDOUT)
        try:
            workers = _wait_until_serving(server, port, log)
            url = f"http://127.0.0.1:{port}/view"
            run_load(url, CONNECTIONS, warmup)
            before = _cpu_seconds(workers)
            load = run_load(url, CONNECTIONS, seconds)
            cpu = _cpu_seconds(workers) - before
            stopping = time.monotonic()
            server.send_signal(signal.SIGTERM)
            returncode = server.wait(timeout=GRACEFUL + 30)
            exit_seconds = time.monotonic() - stopping
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        if returncode != 0:
            raise BenchError(f"app: gunicorn ({variant}) exited with {returncode}")
        reports = []
        for path in sorted(glob.glob(os.path.join(directory, "worker-*.json"))):
            with open(path, encoding="utf-8") as file:
                reports.append(json.load(file))
        if len(reports) != WORKERS:
            raise BenchError(f"app: {len(reports)} of {WORKERS} workers ({variant}) reported at exit")
        if load.errors:
            raise BenchError(f"app: {load.errors} requests failed ({variant})")
        kept = counter.unseen(_spooled(os.path.join(directory, "spool.db"))) if variant == "spill" else 0
        received, events, posts = counter.counts()
        served = tuple(r["served"] for r in reports)
        handover = sum(r["handover_ns"] for r in reports)
        shipper = sum(r.get("shipper_cpu", 0.0) for r in reports)
        return Run(variant, load, cpu, served, handover, received, events, posts, exit_seconds, kept, shipper)


def _spooled(path: str) -> List[object]:
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


@dataclasses.dataclass(frozen=True)
class Measured:
    """What :func:`measure` found: the runs by variant, the slow receiver's, and what was not measured."""

    rounds: Dict[str, List[Run]]
    slow: Dict[str, Run]
    labels: Dict[str, str]
    notes: List[str]
    seconds: float
    generator: str


def measure(options: BenchOptions, err: TextIO) -> Measured:
    lacking = missing()
    if lacking:
        note = f"app: not measured: needs {' and '.join(lacking)} (pip install 'batchdispatch[bench]')"
        return Measured({}, {}, {}, [note], options.app_seconds, generator())
    labels: Dict[str, str] = {}
    notes: List[str] = []
    keys: List[str] = []
    for key, label, module in VARIANTS:
        if _available(module):
            keys.append(key)
            labels[key] = _label(key, label)
        else:
            notes.append(f"app: {label}: not measured, {module} is not installed"
                         " (pip install 'batchdispatch[bench]')")
    rounds: Dict[str, List[Run]] = {key: [] for key in keys}
    warmup = max(1.0, options.app_seconds / 5)
    with Counter() as counter:
        for number in range(options.repeat):
            turn = keys[number % len(keys):] + keys[:number % len(keys)]
            for key in turn:
                status(err, f"bench: app, round {number + 1} of {options.repeat}, {key}")
                rounds[key].append(run_once(key, counter, options.app_seconds, warmup))
    slow: Dict[str, Run] = {}
    with Counter(delay=SLOW_POST) as counter:
        for key in keys:
            if key != "bare":
                status(err, f"bench: app, slow receiver, {key}")
                slow[key] = run_once(key, counter, options.app_seconds, warmup)
    return Measured(rounds, slow, labels, notes, options.app_seconds, generator())


def _spread(values: Sequence[float], scale: float, digits: int) -> str:
    return f"{min(values) * scale:,.{digits}f}-{max(values) * scale:,.{digits}f}"


def _shares(runs: Sequence[Run]) -> str:
    """The smallest share of requests one worker served, over the runs: 50% is an even split."""
    return f"{min(min(r.served) / sum(r.served) for r in runs if sum(r.served)) * 100:.0f}%"


def report(measured: Measured) -> List[str]:
    lines = [
        f"App: a Flask app under gunicorn (gthread, {WORKERS} workers x {THREADS} threads), GET /view"
        " enqueues one event;",
        f"load from {CONNECTIONS} keep-alive connections ({measured.generator}), {measured.seconds:g} s"
        " per run, variants in turn;",
        "medians over the rounds (spread: lowest-highest). cost = 1 - req/s / req/s(bare);"
        " CPU = the workers' utime + stime per request.",
    ]
    rounds = measured.rounds
    if not rounds:
        return lines + measured.notes
    bare = rounds.get("bare", [])
    bare_rate = statistics.median(r.load.per_second for r in bare) if bare else None
    bare_cpu = statistics.median(r.cpu_per_request for r in bare) if bare else None
    bare_handover = statistics.median(r.handover_per_request for r in bare) if bare else None
    rows = []
    for key, runs in rounds.items():
        rates = [r.load.per_second for r in runs]
        rate = statistics.median(rates)
        cpu = statistics.median(r.cpu_per_request for r in runs)
        handover = statistics.median(r.handover_per_request for r in runs)
        shipper = statistics.median(r.shipper_per_event for r in runs)
        cost = f"{(1 - rate / bare_rate) * 100:.1f}%" if bare_rate and key != "bare" else "-"
        served = sum(sum(r.served) for r in runs)
        received = sum(r.received + r.kept for r in runs) if key != "bare" else None
        versus = bare_cpu is not None and bare_handover is not None and key != "bare"
        rows.append([
            measured.labels[key], f"{len(runs)}", f"{rate:,.0f}", _spread(rates, 1, 0), cost,
            f"{cpu * 1e6:,.0f}", f"{(cpu - (bare_cpu or 0)) * 1e6:+,.0f}" if versus else "-",
            f"{(handover - (bare_handover or 0)) * 1e6:+,.1f}" if versus else "-",
            f"{shipper * 1e6:,.1f}" if key != "bare" else "-",
            f"{served:,}", "-" if received is None else f"{received:,}", _shares(runs),
        ])
    header = ["variant", "runs", "req/s", "spread", "cost", "CPU us/req", "vs bare", "hand-over us",
              "shipper us/event", "served", "received", "least worker"]
    lines += ["", *table(header, rows)]
    lines += [
        "",
        "hand-over us: the request thread's CPU for the enqueue (or capture, track), over the bare app's",
        "empty call. shipper us/event: CPU of the shipper's own threads (batchdispatch's worker, the",
        "clients' consumers) per event, the whole run. served: requests to /view in all the runs, warm-up",
        "included; received: unique events",
        "at the receiver (and in the spool file) once gunicorn had exited after SIGTERM. least worker: the",
        "smallest share of the requests one worker served in a run (50% is an even split).",
    ]
    duplicates = sum(r.events - r.received for runs in rounds.values() for r in runs)
    if duplicates:
        lines.append(f"events received more than once: {duplicates:,}")
    if measured.slow:
        slow_rows = [
            [measured.labels[key], f"{run.load.per_second:,.0f}", f"{sum(run.served):,}", f"{run.received:,}",
             f"{run.kept:,}", f"{sum(run.served) - run.received - run.kept:,}",
             f"{(sum(run.served) - run.received - run.kept) / sum(run.served) * 100:.1f}%",
             f"{run.posts:,}", f"{run.exit_seconds:.1f}"]
            for key, run in measured.slow.items()
        ]
        lines += [
            "",
            f"Slow receiver: {SLOW_POST * 1000:g} ms per POST, one run each; lost = served - received - kept",
            "(kept: in the spool file, for the next start).",
            "",
            *table(["variant", "req/s", "served", "received", "kept", "lost", "lost %", "POSTs", "exit s"],
                   slow_rows),
        ]
    return lines + measured.notes
