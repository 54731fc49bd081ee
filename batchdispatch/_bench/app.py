"""The ``app`` section: what shipping one event per request costs a Flask app under gunicorn.

Every variant (:data:`VARIANTS`) is served at once, each by a gunicorn of
its own (:class:`.app_gunicorn.Served`: gthread, 2 workers x 4 threads, on
the app of :mod:`.app_server`), all shipping to one receiver
(:mod:`.app_receiver`), which tells their events apart by the sending
process. After a warm-up, the variants are loaded in turn, for a few
seconds each, round after round, each round starting with the next one
(:mod:`.app_load`: 16 keep-alive connections, wrk or Python), so that a
busy moment of this shared machine weighs on all of them. Each load gives
the requests per second and the CPU the two worker processes spent per
request. The cost of a variant in a round is ``1 - req/s(variant) /
req/s(bare)`` of that round; the report gives medians and their spread.
A variant idle between its loads costs the others next to nothing: its
worker threads sleep.

Then every gunicorn gets SIGTERM at once, and the unique events received
(or left in the spool file) are compared with the requests served, which
each worker writes at exit with the CPU of the shipper's threads; the
requests each worker served are compared too (gunicorn may hand most
connections to one).

Last, each variant but the bare app is served alone against a slow
receiver (200 ms per POST), to show what each loses when the endpoint
cannot keep up.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import statistics
from typing import Dict, List, Optional, Sequence, TextIO, Tuple

from .app_gunicorn import CONNECTIONS, THREADS, WORKERS, Outcome, Served, Window
from .app_load import generator
from .app_receiver import Counter
from .options import BenchOptions
from .output import status, table

#: (key, label, the module it needs or None): :mod:`.app_server` knows them by key.
VARIANTS: Tuple[Tuple[str, str, Optional[str]], ...] = (
    ("bare", "bare app (no events)", None),
    ("sink", "HttpSink, defaults (delay 0.1 s, no batch limit)", None),
    ("sink100", "HttpSink, batches of 100, delay 0.5 s", None),
    ("orjson", "HttpSink, batches of 100, orjson_serializer", "orjson"),
    ("spill", "HttpSink, batches of 100, spill to SqliteSpool", None),
    ("posthog", "PostHog", "posthog"),
    ("segment", "Segment analytics-python", "segment.analytics"),
)
#: The distributions whose versions the report names.
DISTRIBUTIONS = {"posthog": "posthog", "segment": "segment-analytics-python"}
#: Seconds of the slow receiver's wait before it answers each POST.
SLOW_POST = 0.2


@dataclasses.dataclass(frozen=True)
class Shipped:
    """One variant's loads, what its workers reported at exit, and what the receiver got from them."""

    windows: List[Window]
    outcome: Outcome
    received: int  # unique events received
    events: int  # events received in all, duplicates included
    posts: int
    kept: int  # events in the spool file that were not received

    @property
    def lost(self) -> int:
        return self.outcome.total - self.received - self.kept


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


def _finish(served: Served, counter: Counter) -> Tuple[Outcome, int, int, int, int]:
    outcome = served.wait()
    received, events, posts = counter.tally(outcome.pids)
    return outcome, received, events, posts, counter.unseen(outcome.spooled)


@dataclasses.dataclass(frozen=True)
class Measured:
    """What :func:`measure` found: each variant's loads and outcome, the slow receiver's, the notes."""

    shipped: Dict[str, Shipped]
    slow: Dict[str, Shipped]
    labels: Dict[str, str]
    notes: List[str]
    seconds: float
    rounds: int
    generator: str


def measure(options: BenchOptions, err: TextIO) -> Measured:
    rounds, seconds = options.app_rounds, options.app_seconds
    lacking = missing()
    if lacking:
        note = (f"app: not measured: needs {' and '.join(lacking)}"
                " (the extra bench: pip install '.[bench]' from a checkout)")
        return Measured({}, {}, {}, [note], seconds, rounds, generator())
    labels: Dict[str, str] = {}
    notes: List[str] = []
    keys: List[str] = []
    for key, label, module in VARIANTS:
        if _available(module):
            keys.append(key)
            labels[key] = _label(key, label)
        else:
            notes.append(f"app: {label}: not measured, {module} is not installed"
                         " (the extra bench: pip install '.[bench]' from a checkout)")
    warmup = max(1.0, seconds / 2)
    shipped: Dict[str, Shipped] = {}
    with Counter() as counter:
        apps = {key: Served(key, counter.url) for key in keys}
        try:
            for key, served in apps.items():
                status(err, f"bench: app, starting {key}")
                served.start()
                served.load(warmup)
            windows: Dict[str, List[Window]] = {key: [] for key in keys}
            for number in range(rounds):
                for key in keys[number % len(keys):] + keys[:number % len(keys)]:
                    status(err, f"bench: app, round {number + 1} of {rounds}, {key}")
                    windows[key].append(apps[key].load(seconds))
            status(err, "bench: app, SIGTERM")
            for served in apps.values():
                served.stop()
            for key, served in apps.items():
                shipped[key] = Shipped(windows[key], *_finish(served, counter))
        finally:
            for served in apps.values():
                served.close()
    slow: Dict[str, Shipped] = {}
    with Counter(delay=SLOW_POST) as counter:
        for key in keys:
            if key == "bare":
                continue
            status(err, f"bench: app, slow receiver, {key}")
            served = Served(key, counter.url)
            try:
                served.start()
                window = served.load(seconds + warmup)
                served.stop()
                slow[key] = Shipped([window], *_finish(served, counter))
            finally:
                served.close()
    return Measured(shipped, slow, labels, notes, seconds, rounds, generator())


def _spread(values: Sequence[float], scale: float, digits: int) -> str:
    if len(values) < 2:
        return "-"
    return f"{min(values) * scale:,.{digits}f} to {max(values) * scale:,.{digits}f}"


def _per_request(outcome: Outcome, value: float) -> float:
    return value / outcome.total if outcome.total else 0.0


def _least_share(outcome: Outcome) -> str:
    """The share of the requests the worker that served fewest served: 50% is an even split."""
    return f"{min(outcome.served) / outcome.total * 100:.0f}%" if outcome.total else "-"


def report(measured: Measured) -> List[str]:
    lines = [
        f"App: a Flask app under gunicorn (gthread, {WORKERS} workers x {THREADS} threads), GET /view"
        " enqueues one event;",
        f"every variant served at once, loaded in turn from {CONNECTIONS} keep-alive connections"
        f" ({measured.generator}), {measured.seconds:g} s each,",
        f"{measured.rounds} round{'' if measured.rounds == 1 else 's'}. Medians, and the lowest to highest"
        " of the rounds. cost: 1 - req/s / req/s(bare) in each round;",
        "CPU: the workers' utime + stime per request; CPU cost: 1 - CPU(bare) / CPU(variant), the capacity"
        " lost where the",
        "CPU is the limit, which other load on the machine moves less than req/s.",
    ]
    shipped = measured.shipped
    if not shipped:
        return lines + measured.notes
    bare = shipped.get("bare")
    bare_cpu = statistics.median(w.cpu_per_request for w in bare.windows) if bare else None
    bare_handover = _per_request(bare.outcome, bare.outcome.handover_ns / 1e9) if bare else None
    rows = []
    for key, run in shipped.items():
        rates = [w.load.per_second for w in run.windows]
        cpu = statistics.median(w.cpu_per_request for w in run.windows)
        cost = cost_spread = cpu_cost = extra = handover = "-"
        if bare is not None and key != "bare" and bare_cpu and bare_handover is not None:
            costs = [1 - w.load.per_second / b.load.per_second for w, b in zip(run.windows, bare.windows)]
            cost, cost_spread = f"{statistics.median(costs) * 100:.1f}%", _spread(costs, 100, 1)
            cpu_cost = f"{(1 - bare_cpu / cpu) * 100:.1f}%"
            extra = f"{(cpu - bare_cpu) * 1e6:+,.0f}"
            spent = _per_request(run.outcome, run.outcome.handover_ns / 1e9)
            handover = f"{(spent - bare_handover) * 1e6:+,.1f}"
        rows.append([
            measured.labels[key], f"{statistics.median(rates):,.0f}", _spread(rates, 1, 0), cost, cost_spread,
            f"{cpu * 1e6:,.0f}", extra, cpu_cost, handover,
            f"{_per_request(run.outcome, run.outcome.shipper_cpu) * 1e6:,.1f}" if key != "bare" else "-",
            f"{run.outcome.total:,}", f"{run.received + run.kept:,}" if key != "bare" else "-",
            f"{run.lost:,}" if key != "bare" else "-", _least_share(run.outcome),
        ])
    header = ["variant", "req/s", "req/s spread", "cost", "cost spread", "CPU us/req", "vs bare", "CPU cost",
              "hand-over us", "shipper us/event", "served", "received", "lost", "least worker"]
    lines += ["", *table(header, rows)]
    lines += [
        "",
        "hand-over us: the request thread's CPU per enqueue (or capture, track), over the bare app's empty",
        "call. shipper us/event: the CPU of the shipper's own threads (batchdispatch's worker, the clients'",
        "consumers) per event. served: requests to /view, warm-up included; received: unique events at the",
        "receiver, or in the spool file, once gunicorn had exited after SIGTERM; lost: served - received.",
        "least worker: the share of the requests the worker that served fewer served (50%: an even split).",
    ]
    duplicates = sum(run.events - run.received for run in shipped.values())
    if duplicates:
        lines.append(f"events received more than once: {duplicates:,}")
    if measured.slow:
        slow_rows = []
        for key, run in measured.slow.items():
            total = run.outcome.total
            slow_rows.append([
                measured.labels[key], f"{run.windows[0].load.per_second:,.0f}", f"{total:,}",
                f"{run.received:,}", f"{run.kept:,}", f"{run.lost:,}",
                f"{run.lost / total * 100:.1f}%" if total else "-", f"{run.posts:,}",
                f"{run.outcome.exit_seconds:.1f}",
            ])
        lines += [
            "",
            f"Slow receiver: {SLOW_POST * 1000:g} ms per POST, each variant alone, {measured.seconds:g} s"
            " of load and a warm-up, then SIGTERM;",
            "kept: in the spool file, for the next start; lost = served - received - kept; exit s: from"
            " SIGTERM until gunicorn exited.",
            "",
            *table(["variant", "req/s", "served", "received", "kept", "lost", "lost %", "POSTs", "exit s"],
                   slow_rows),
        ]
    return lines + measured.notes
