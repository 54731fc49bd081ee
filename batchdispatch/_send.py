"""``python -m batchdispatch send URL``: deliver JSON lines from stdin in batches.

Each non-blank line of the input is one JSON value (an object, usually).
The lines are enqueued, in order, on a
:class:`~batchdispatch.BackgroundDispatcher` whose dispatch callable is an
:class:`~batchdispatch.http.HttpSink`, so they reach the endpoint as JSON
arrays of up to ``--max-batch-size`` items (and, with ``--max-body-bytes``,
of bodies within that size), signed per Standard Webhooks when a secret is
given (``--signature x-webhook``: the headers of batchdispatch 0.1).

What it promises, and how:

* **Nothing accepted is lost silently.** The queue is bounded and its
  overflow policy is ``"block"``: when the endpoint is slower than the input,
  reading stdin waits instead of dropping. At the end every item read is
  counted as delivered or not, and anything not delivered gives a non-zero
  exit status.
* **Nothing past a bad line is sent.** Reading stops at the first line that
  is not valid JSON (or not UTF-8); the lines before it are delivered, the
  line number is reported and the status is :data:`EXIT_BAD_INPUT`.
* **A failing endpoint stops the run early.** Failed batches are retried
  (by urllib3 inside the sink, then by the dispatcher's
  :data:`RETRY_POLICY`); once a batch is given up, reading stops, so a dead
  endpoint does not keep a backfill running for hours. Items already read
  still get their attempts.
* **Every wait is bounded**: the final shutdown waits at most
  ``--shutdown-timeout`` seconds, and what is still undelivered then counts
  as failed.
* **The exit status tells what was delivered, and nothing else.** A summary
  that cannot be written (``| head -0``, ``> /dev/full``) is reported in one
  line on stderr, not as a traceback, and does not change the status; an
  unwritable stderr is not reported at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
import time
from typing import TYPE_CHECKING, Any, BinaryIO, Dict, List, Mapping, Optional, TextIO, Tuple

from ._console import Output, ProgressLine, display_url, write_summary
from ._dispatcher import BackgroundDispatcher
from ._retry import RetryPolicy

if TYPE_CHECKING:
    from .events import ItemsExhausted
    from .http import HttpSink

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNDELIVERED",
    "EXIT_USAGE",
    "RETRY_POLICY",
    "SendOptions",
    "run",
]

#: Every item read was delivered.
EXIT_OK = 0
#: Some items read were not delivered (given up, dropped, or still pending
#: when the shutdown timeout ran out). Takes precedence over EXIT_BAD_INPUT.
EXIT_UNDELIVERED = 1
#: A usage error: a bad option, a malformed ``--header``, a missing secret.
EXIT_USAGE = 2
#: A line was not valid JSON: reading stopped there. The lines before it
#: were delivered (or the status would be EXIT_UNDELIVERED).
EXIT_BAD_INPUT = 3
#: Interrupted (SIGINT): stopped at once; the summary counts what was delivered.
EXIT_INTERRUPTED = 130

#: The dispatcher's retries of a failed batch, on top of urllib3's retries
#: of each request inside the sink: a few attempts, seconds apart, to ride
#: out an outage longer than urllib3's backoff. A permanent failure (a 4xx
#: other than 408 and 429) is given up at once.
RETRY_POLICY = RetryPolicy(max_attempts=3, backoff=1.0, multiplier=2.0, max_backoff=10.0)

#: Batches the queue holds at most before reading stdin waits for room.
QUEUED_BATCHES = 8


@dataclasses.dataclass(frozen=True)
class SendOptions:
    """What ``python -m batchdispatch send`` was asked to do."""

    #: The endpoint every batch is POSTed to.
    url: str
    #: The dispatcher's ``delay``: seconds an item waits for company when the
    #: input is slower than the batches fill (a ``tail -f``, say).
    delay: float = 0.5
    #: Items per request at most.
    max_batch_size: int = 500
    #: Extra request headers, as (name, value) pairs, in order.
    headers: Tuple[Tuple[str, str], ...] = ()
    #: The environment variable holding the signing secret (None: unsigned).
    secret_env: Optional[str] = None
    #: The signature scheme: ``"standard"`` (Standard Webhooks) or ``"x-webhook"`` (0.1's headers).
    signature: str = "standard"
    #: The largest request body in bytes, before gzip (None: no limit).
    max_body_bytes: Optional[int] = None
    #: Seconds the sink waits to connect and for each read (None: HttpSink's default).
    timeout: Optional[float] = None
    #: urllib3 retries of each request (None: HttpSink's default; 0: none).
    retries: Optional[int] = None
    #: Seconds the final shutdown waits at most for the last deliveries.
    shutdown_timeout: float = 60.0


class _BadLine(ValueError):
    """A line of the input that is not one JSON value."""


def _reject_constant(name: str) -> Any:
    # JSON has no NaN or Infinity, though Python's json module reads them; a
    # strict receiver would refuse the whole batch, so refuse the line here.
    raise _BadLine(f"{name} is not valid JSON")


def parse_line(raw: bytes, first: bool = False) -> Any:
    """Decode one input line (UTF-8, one JSON value).

    :param first: the line is the input's first, which may start with a
        UTF-8 byte order mark.
    :raises ValueError: with a short reason, if the line is not UTF-8 or
        not exactly one JSON value.
    """
    # Without its line break, an error at the end of the line points there
    # rather than at "line 2, column 1" of a one-line document.
    raw = raw.rstrip(b"\r\n")
    try:
        text = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as exc:
        raise _BadLine(f"not UTF-8 (byte {exc.start + 1})") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except _BadLine:
        raise
    except json.JSONDecodeError as exc:
        raise _BadLine(f"not valid JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise _BadLine("not valid JSON: nested too deeply") from None


class _Counting:
    """Wraps the sink to count the batches it delivered (attempts that failed are not)."""

    def __init__(self, sink: HttpSink) -> None:
        self.sink = sink
        self.batches = 0

    def __call__(self, batch: List[Any]) -> None:
        self.sink(batch)
        self.batches += 1  # only the worker thread writes it


class _Reader:
    """Reads the input and enqueues its items; remembers where and why it stopped."""

    def __init__(self, dispatcher: BackgroundDispatcher[Any], gave_up: threading.Event) -> None:
        self.dispatcher = dispatcher
        self.gave_up = gave_up
        #: Items read and enqueued.
        self.items = 0
        #: Lines read, blank ones included.
        self.lines = 0
        #: (line number, reason) of the line that was not valid JSON.
        self.bad_line: Optional[Tuple[int, str]] = None
        #: The last line read before delivery failed and reading stopped.
        self.stopped_after: Optional[int] = None

    def read(self, stream: BinaryIO) -> None:
        for lineno, raw in enumerate(stream, 1):
            if self.gave_up.is_set():
                # This line was read but is not sent: report the one before.
                self.stopped_after = lineno - 1
                return
            self.lines = lineno
            if not raw.strip():
                continue
            try:
                item = parse_line(raw, first=lineno == 1)
            except ValueError as exc:
                self.bad_line = (lineno, str(exc))
                return
            # Blocks while the queue is full: stdin waits, nothing is dropped.
            self.dispatcher.enqueue(item)
            self.items += 1


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def run(
    options: SendOptions,
    stdin: BinaryIO,
    out: TextIO,
    err: TextIO,
    environ: Optional[Mapping[str, str]] = None,
) -> int:
    """Deliver the JSON lines of *stdin*, print a summary on *out*, return the exit status.

    Errors go to *err*, and a progress line too when *err* is a terminal.
    Failing to write *out* or *err* (a closed pipe, a full disk) changes
    nothing but the output: a failure on *out* is reported on *err*.

    :returns: :data:`EXIT_OK`, :data:`EXIT_UNDELIVERED`, :data:`EXIT_USAGE`,
        :data:`EXIT_BAD_INPUT`, or :data:`EXIT_INTERRUPTED`: interrupted,
        it stops at once, prints the summary and counts what was not
        delivered yet as failed.
    """
    return _run(options, stdin, Output(out, "stdout"), Output(err, "stderr"), environ)


def _run(
    options: SendOptions, stdin: BinaryIO, out: Output, err: Output, environ: Optional[Mapping[str, str]]
) -> int:
    env = os.environ if environ is None else environ
    secret: Optional[str] = None
    if options.secret_env is not None:
        secret = env.get(options.secret_env)
        if not secret:
            state = "is empty" if secret == "" else "is not set"
            err.write(f"error: --secret-env: the environment variable {options.secret_env} {state}\n")
            return EXIT_USAGE

    from .http import HttpSink  # here: requests is imported only by the commands that use it

    sink_options: Dict[str, Any] = {
        "headers": dict(options.headers) or None, "secret": secret, "signature": options.signature,
        "max_body_bytes": options.max_body_bytes,
    }
    if options.timeout is not None:
        sink_options["timeout"] = options.timeout
    if options.retries is not None:
        sink_options["retries"] = options.retries
    try:
        http = HttpSink(options.url, **sink_options)
    except ValueError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    try:
        return _deliver(options, http, stdin, out, err)
    finally:
        http.close()


def _deliver(options: SendOptions, http: HttpSink, stdin: BinaryIO, out: Output, err: Output) -> int:
    sink = _Counting(http)
    dispatcher: BackgroundDispatcher[Any] = BackgroundDispatcher(
        sink,
        delay=options.delay,
        max_batch_size=options.max_batch_size,
        max_queue_size=options.max_batch_size * QUEUED_BATCHES,
        overflow="block",
        retry=RETRY_POLICY,
        name="send",
        # The command's own shutdown has already waited --shutdown-timeout;
        # a batch still in flight must not hold the exit up for longer.
        exit_timeout=0.0,
    )
    gave_up = threading.Event()

    def on_exhausted(event: ItemsExhausted) -> None:
        gave_up.set()

    dispatcher.on("items_exhausted", on_exhausted)
    reader = _Reader(dispatcher, gave_up)
    started = time.perf_counter()

    def progress_text() -> str:
        stats = dispatcher.stats()
        elapsed = time.perf_counter() - started
        rate = stats.dispatched / elapsed if elapsed > 0 else 0.0
        return (
            f"send: {reader.items:,} read, {stats.dispatched:,} delivered, {stats.failed:,} failed,"
            f" {rate:,.0f} items/s"
        )

    progress = ProgressLine(progress_text, err) if err.isatty() else None
    if progress is not None:
        progress.start()
    if stdin.isatty() and progress is None:
        err.write("reading JSON lines from the terminal; end with Ctrl-D\n")
    completed = interrupted = False
    try:
        reader.read(stdin)
        completed = dispatcher.shutdown(timeout=options.shutdown_timeout)
    except KeyboardInterrupt:
        # Ctrl-C means stop now, even while waiting for a slow endpoint. (It
        # often lands only once stdin has ended: the signal may reach another
        # thread, and the main thread sees it when its read returns.)
        interrupted = True
    finally:
        if not completed:
            dispatcher.shutdown(timeout=0)  # stop; what is left counts as failed
        if progress is not None:
            progress.stop()
    elapsed = time.perf_counter() - started

    stats = dispatcher.stats()
    delivered = stats.dispatched
    dropped = stats.dropped
    # Still pending after the deadline (in flight, queued or waiting for a
    # retry): it may yet arrive, but nothing here can confirm it.
    failed = stats.failed + stats.pending
    rows = [
        ("read", f"{_count(reader.items, 'item')} from {_count(reader.lines, 'line')}"),
        ("delivered", f"{delivered:,}"),
        ("failed", f"{failed:,}"),
        ("dropped", f"{dropped:,}"),
        ("batches", f"{sink.batches:,} delivered in {_count(stats.batches, 'attempt')}"),
        ("elapsed", f"{elapsed:.2f} s"),
        ("items/s", f"{delivered / elapsed:,.0f}" if elapsed > 0 else "-"),
    ]
    write_summary(
        out,
        f"batchdispatch send: {display_url(options.url)}, delay {options.delay:g} s,"
        f" max batch size {options.max_batch_size:,}\n",
        rows,
    )
    lost = out.failure()
    if lost is not None:
        err.write(f"error: the summary was not written: {lost}\n")

    status = EXIT_OK
    if reader.bad_line is not None:
        lineno, reason = reader.bad_line
        err.write(f"error: line {lineno}: {reason}; stopped reading there, nothing after it was sent\n")
        status = EXIT_BAD_INPUT
    missing = reader.items - delivered
    if missing > 0:
        parts = [f"{stats.failed:,} given up"]
        if stats.pending and interrupted:
            parts.append(f"{stats.pending:,} still pending when interrupted")
        elif stats.pending:
            parts.append(
                f"{stats.pending:,} still pending after the {options.shutdown_timeout:g} s shutdown timeout"
            )
        if dropped:
            parts.append(f"{dropped:,} dropped")
        error = stats.last_error
        reason = f"; last error: {type(error).__name__}: {error}" if error is not None else ""
        err.write(
            f"error: {missing:,} of {reader.items:,} items were not delivered ({', '.join(parts)}){reason}\n"
        )
        status = EXIT_UNDELIVERED
    if reader.stopped_after is not None:
        err.write(f"error: delivery failed, so reading stopped after line {reader.stopped_after:,}\n")
    if interrupted:
        err.write("interrupted\n")
        status = EXIT_INTERRUPTED
    err.flush()
    return status
