"""The Flask app the ``app`` section serves under gunicorn: one event per request, shipped by one variant.

gunicorn imports this module in each worker (``batchdispatch._bench.app_server:app``),
never in the bench's own process. The environment chooses what ships the
events (:data:`VARIANTS`):

``BATCHDISPATCH_BENCH_VARIANT``
    ``bare`` (nothing is shipped), ``sink`` (:class:`~batchdispatch.contrib.flask.BatchDispatch`
    with its defaults), ``sink100`` (batches of 100, delay 0.5 s), ``orjson``
    (as ``sink100``, a BackgroundDispatcher over an HttpSink with
    :func:`~batchdispatch.http.orjson_serializer`, which the Flask extension
    does not set), ``spill`` (as ``sink100``, with ``overflow="spill"`` and
    a spool), ``posthog`` or ``segment`` (their clients, batches of 100
    every 0.5 s).
``BATCHDISPATCH_BENCH_RECEIVER``
    The base URL of the bench's receiver.
``BATCHDISPATCH_BENCH_DIR``
    Where each worker writes, at exit, what it served
    (``worker-<pid>.json``) and where the spool file goes.

``GET /view`` builds the event, hands it over, and answers 200 with a short
JSON body. The CPU the request thread spends handing it over is measured
with :func:`time.thread_time_ns` and added up per worker, for every
variant alike (``bare`` measures an empty call). At exit, before the
shipper's own exit hooks stop its threads, the CPU of every thread that is
neither the main thread nor one of gunicorn's request threads (the
shipper's worker or consumer threads) is read from
``/proc/self/task/<id>/stat``.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import threading
import time
from typing import Any, Callable, Dict

from flask import Flask

#: What may ship the events, by the name the bench gives it.
VARIANTS = ("bare", "sink", "sink100", "orjson", "spill", "posthog", "segment")
#: The table's settings: at most 100 events per batch, a batch at least every half second.
BATCH, DELAY = 100, 0.5

_variant = os.environ.get("BATCHDISPATCH_BENCH_VARIANT", "bare")
_receiver = os.environ.get("BATCHDISPATCH_BENCH_RECEIVER", "http://127.0.0.1:9/").rstrip("/")
_directory = os.environ.get("BATCHDISPATCH_BENCH_DIR", ".")

# The request count and the hand-over CPU, per worker; next() on a count is atomic in CPython.
_served = itertools.count()
_cpu_lock = threading.Lock()  # guards _cpu_ns: a += from four request threads is not atomic
_cpu_ns = [0]
_report: Dict[str, Any] = {}
_hooked = threading.Event()  # set once the exit hook that reads the shipper's threads is registered


def _shipper_cpu() -> None:
    """The CPU seconds of the shipper's threads so far: all but the main one and gunicorn's request threads.

    Registered with atexit after the shipper's first hand-over, so it runs
    before the shipper's exit hooks (atexit runs the last registered first)
    join its threads.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    names = []
    for thread in threading.enumerate():
        if thread is threading.main_thread() or thread.name.startswith("ThreadPoolExecutor"):
            continue
        try:
            with open(f"/proc/self/task/{thread.native_id}/stat", encoding="ascii", errors="replace") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
        names.append(thread.name)
    _report.update(shipper_cpu=total / ticks, shipper_threads=names)


def _batchdispatch(app: Flask) -> Callable[[Dict[str, Any]], object]:
    from ..contrib.flask import BatchDispatch

    config: Dict[str, Any] = {"BATCHDISPATCH_URL": f"{_receiver}/batchdispatch"}
    if _variant in ("sink100", "spill"):
        config.update(BATCHDISPATCH_MAX_BATCH_SIZE=BATCH, BATCHDISPATCH_DELAY=DELAY)
    if _variant == "spill":
        config.update(BATCHDISPATCH_OVERFLOW="spill",
                      BATCHDISPATCH_SPOOL=os.path.join(_directory, "spool.db"))
    app.config.update(config)
    events = BatchDispatch(app)

    def report() -> None:
        with app.app_context():
            stats = events.stats()
        _report.update(dropped=stats.dropped, spilled=stats.spilled, failed=stats.failed)

    _report["stats"] = report
    return events.enqueue


def _orjson() -> Callable[[Dict[str, Any]], object]:
    from .._dispatcher import BackgroundDispatcher
    from ..http import HttpSink, orjson_serializer

    sink = HttpSink(f"{_receiver}/batchdispatch", serializer=orjson_serializer)
    dispatcher: BackgroundDispatcher[Any] = BackgroundDispatcher(
        sink, max_batch_size=BATCH, delay=DELAY, name="bench-orjson",
    )

    def report() -> None:
        stats = dispatcher.stats()
        _report.update(dropped=stats.dropped, spilled=stats.spilled, failed=stats.failed)

    _report["stats"] = report
    return dispatcher.enqueue


def _posthog() -> Callable[[Dict[str, Any]], object]:
    from posthog import Posthog

    client = Posthog("phc_bench", host=_receiver, flush_at=BATCH, flush_interval=DELAY)

    def capture(event: Dict[str, Any]) -> object:
        return client.capture(event["event"], distinct_id=event["user"], properties=event["properties"])

    return capture


def _segment() -> Callable[[Dict[str, Any]], object]:
    from segment.analytics import Client

    client = Client("bench-write-key", host=_receiver, upload_size=BATCH, upload_interval=DELAY)

    def track(event: Dict[str, Any]) -> object:
        return client.track(user_id=event["user"], event=event["event"], properties=event["properties"])

    return track


def _bare(event: Dict[str, Any]) -> object:
    return None


def _write_report() -> None:
    """At exit, after the shippers' own exit hooks (registered later, run earlier)."""
    stats = _report.pop("stats", None)
    if stats is not None:
        stats()
    served = next(_served)
    _report.update(pid=os.getpid(), variant=_variant, served=served, handover_ns=_cpu_ns[0])
    path = os.path.join(_directory, f"worker-{os.getpid()}.json")
    with open(path + ".tmp", "w", encoding="utf-8") as file:
        json.dump(_report, file)
    os.replace(path + ".tmp", path)


def create_app() -> Flask:
    app = Flask(__name__)
    atexit.register(_write_report)
    if _variant in ("sink", "sink100", "spill"):
        send = _batchdispatch(app)
    elif _variant == "orjson":
        send = _orjson()
    elif _variant == "posthog":
        send = _posthog()
    elif _variant == "segment":
        send = _segment()
    else:
        send = _bare
    pid = os.getpid()
    clock = time.thread_time_ns

    @app.get("/view")
    def view() -> Any:
        n = next(_served)
        event = {
            "event": "page_view",
            "user": f"user-{n % 1000}",
            "properties": {"id": f"{pid}-{n}", "path": "/view", "at": time.time()},
        }
        started = clock()
        send(event)
        spent = clock() - started
        with _cpu_lock:
            _cpu_ns[0] += spent
            if not _hooked.is_set():
                _hooked.set()
                atexit.register(_shipper_cpu)
        return {"ok": True}

    @app.get("/health")
    def health() -> Any:
        return {"pid": pid}

    return app


app = create_app()
