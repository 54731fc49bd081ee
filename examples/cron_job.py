"""A cron job that ships its events and says whether they arrived: run ``python examples/cron_job.py``.

That one command starts a receiver on 127.0.0.1
(:class:`batchdispatch.testing.Receiver`) and ships there. From cron, point it
at the real collector::

    */15 * * * * BATCHDISPATCH_URL=https://events.example.com/ingest python /srv/app/examples/cron_job.py

The job enqueues its events inside ``flush_after``, so they are delivered
when the job's work ends, not whenever the interpreter's exit hook gets to
them, and the flush waits ``--timeout`` seconds at most. The exit status
tells cron (and its monitoring) what happened: 0 when every event was
delivered, 1 when some were not (the collector refused them, or did not
answer in time). However the collector behaves (refusing connections,
answering 4xx or 5xx, or not answering at all), the job ends within about
``--timeout`` plus two seconds: the flush waits ``--timeout`` at most, the
shutdown and the exit hook one second each (``GRACE``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, List, Optional, Sequence

from batchdispatch import BackgroundDispatcher, flush_after
from batchdispatch.http import HttpSink
from batchdispatch.testing import Receiver

#: Events the job ships.
EVENTS = 5
#: Seconds a request still in flight after a timed-out flush may take, at shutdown and at exit.
GRACE = 1.0


def run_job(events: BackgroundDispatcher[Any], timeout: float) -> None:
    """The job's work: whatever it enqueues is delivered before it returns, or *timeout* passes."""
    with flush_after(events, timeout=timeout):
        started = time.time()
        for n in range(EVENTS):
            events.enqueue({"event": "report_row", "job": "nightly", "row": n, "started": started})


def ship(url: str, timeout: float) -> bool:
    """Run the job against *url*; True if every event it enqueued was delivered within *timeout*."""
    sink = HttpSink(url, timeout=(3.05, timeout))
    # A long delay: delivery relies on flush_after, not on the delay running out.
    # exit_timeout bounds the exit hook, should a request still be stuck when the job ends.
    events: BackgroundDispatcher[Any] = BackgroundDispatcher(
        sink, delay=60, max_batch_size=500, name="cron", exit_timeout=GRACE)
    run_job(events, timeout)
    stats = events.stats()
    print(f"enqueued {stats.enqueued}, delivered {stats.dispatched}, failed {stats.failed}, "
          f"pending {stats.pending}" + (f"; last error: {stats.last_error}" if stats.last_error else ""))
    delivered = stats.dispatched == stats.enqueued
    if not delivered:  # cron mails what a job writes to stderr
        print(f"cron_job: {stats.enqueued - stats.dispatched} events were not delivered", file=sys.stderr)
    # Stop the worker, giving a request still in flight GRACE seconds more; close
    # the HTTP session only if nothing uses it any more.
    if events.shutdown(timeout=timeout if delivered else GRACE):
        sink.close()
    return delivered


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("BATCHDISPATCH_URL"),
                        help="where to POST the events (default: $BATCHDISPATCH_URL, "
                             "or a receiver started on 127.0.0.1 for the demo)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds the flush waits at most")
    args = parser.parse_args(argv)
    if args.url:
        return 0 if ship(args.url, args.timeout) else 1
    with Receiver() as receiver:
        ok = ship(receiver.url, args.timeout)
        rows: List[Any] = [item["row"] for item in receiver.items]
        print(f"the receiver got rows {rows} in {receiver.request_count} request(s)")
        return 0 if ok and rows == list(range(EVENTS)) else 1


if __name__ == "__main__":
    sys.exit(main())
