"""``python -m batchdispatch bench``: what an enqueue costs, next to the alternatives.

:func:`run` is the command (``_cli`` calls it with a :class:`BenchOptions`);
it runs the sections asked for, in this order, each in a module of its own:

``enqueue`` (:mod:`.enqueue`)
    Four buffers measured in one run, on the same machine, by the same
    producer loop (:mod:`.designs`): (a) a bare ``deque.append``, (b) a lock
    around ``list.append``, (c) a ``queue.Queue`` with a ``get()`` per item,
    (d) BackgroundDispatcher, and (d) again while another thread scrapes
    its Prometheus collector, (p); the keyed buffers over 1,000 keys and
    parallel delivery (:mod:`.keyed`); and whether an idle dispatcher wakes
    up (:mod:`.idle`).
``spool`` (:mod:`.spool`)
    What ``spool=`` costs an enqueue, without a spool and in each mode.
``scale`` (:mod:`.scale`)
    How KeyedDispatcher's costs grow with the number of keys.
``http`` (:mod:`.http`, :mod:`.http_options`, :mod:`.http_transport`)
    Items per second to a receiver on 127.0.0.1, per item and batched;
    then HttpSink with *max_body_bytes*, with a *secret* and with both,
    against its defaults, every batch under the limit; then the worker's
    CPU per POST through HttpSink against urllib3's pool directly.
``sinks`` (:mod:`.sinks`)
    Each sink of :mod:`batchdispatch.sinks` against the per-item way, on
    the servers of the machine (a part whose server does not answer says so).
``app`` (:mod:`.app`, only with ``--only app``)
    What shipping one event per request costs a Flask app under gunicorn,
    with HttpSink and with the PostHog and Segment clients, and what each
    loses to a slow receiver.

``--json PATH`` also writes the figures of the enqueue and http sections
to *PATH*, as JSON; the report printed is the same.

Each figure is the best of several repetitions (HTTP: one run). The shared
pieces are in :mod:`.harness` (the payload, the counting sink, the producer
race), :mod:`.options` and :mod:`.output` (tables, ratios, status line).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any, Dict, List, TextIO

from .. import __version__
from . import app, enqueue, http, http_options, http_transport, scale, sinks, spool
from .harness import DELAY, MAX_BATCH_SIZE, BenchError
from .options import DEFAULT_SECTIONS, QUICK, SECTIONS, BenchOptions
from .output import status

__all__ = ["DEFAULT_SECTIONS", "QUICK", "SECTIONS", "BenchError", "BenchOptions", "run"]


def run(options: BenchOptions, out: TextIO, err: TextIO) -> int:
    """Run the bench, print the report on *out* and return the exit status.

    While it runs, a status line is drawn on *err* if that is a terminal.
    """
    out.write(
        f"batchdispatch {__version__} bench\n"
        f"Python {platform.python_version()} ({platform.python_implementation()})"
        f" on {platform.platform()}, {os.cpu_count() or 1} CPUs,"
        f" switch interval {sys.getswitchinterval() * 1000:g} ms\n"
    )
    if "enqueue" in options.sections:
        out.write(
            f"{options.items:,} items per run, best of {options.repeat};"
            f" batches of up to {MAX_BATCH_SIZE}, delay {DELAY:g} s for (c) and (d),"
            f" (d) with max_queue_size=None\n"
        )
    out.write("\n")
    out.flush()
    report: List[str] = []
    figures: Dict[str, Any] = {
        "version": __version__,
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "platform": platform.platform(),
        "cpus": os.cpu_count() or 1,
        "items": options.items,
        "repeat": options.repeat,
    }
    try:
        if "enqueue" in options.sections:
            measured = enqueue.measure(options, err)
            figures["enqueue"] = enqueue.figures(measured)
            report += enqueue.report(options, measured)
        if "spool" in options.sections:
            spooled = spool.measure(options, err)
            report += ([""] if report else []) + spool.report(options, spooled)
        if "scale" in options.sections:
            scaled = scale.measure(options, err)
            report += ([""] if report else []) + scale.report(options, scaled)
        if "http" in options.sections:
            sent = http.measure(options, err)
            figures["http"] = http.figures(sent)
            figures["http_worker_cpu"] = http.cpu_figures(sent)
            report += ([""] if report else []) + http.report(sent)
            optioned = http_options.measure(options, err)
            figures["http_options"] = http_options.figures(optioned)
            report += ["", *http_options.report(optioned)]
            transported = http_transport.measure(options, err)
            figures["http_transport"] = http_transport.figures(transported)
            report += ["", *http_transport.report(transported)]
        if "sinks" in options.sections:
            report += ([""] if report else []) + sinks.report(options, sinks.measure(options, err))
        if "app" in options.sections:
            report += ([""] if report else []) + app.report(app.measure(options, err))
    except BenchError as exc:
        status(err, "")
        err.write(f"error: {exc}\n")
        return 1
    status(err, "")
    out.write("\n".join(report) + "\n")
    out.flush()
    if options.json_path is not None:
        # The same figures as the report, for docs/charts/make_charts.py and the like.
        with open(options.json_path, "w", encoding="utf-8") as file:
            json.dump(figures, file, indent=2)
            file.write("\n")
    return 0
