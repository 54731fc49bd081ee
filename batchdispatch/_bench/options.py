"""What ``python -m batchdispatch bench`` can be asked to do: its sections and sizes."""

from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

#: The sections of the bench, in the order they run: the enqueue designs
#: (plain, keyed, parallel delivery, idle wake-ups), the spool, growth with
#: the number of keys, HTTP delivery, the sinks of batchdispatch.sinks, then
#: the cost to a Flask app under gunicorn.
SECTIONS: Tuple[str, ...] = ("enqueue", "spool", "scale", "http", "sinks", "app")
#: The sections a run without ``--only`` runs: all but ``app``, which takes
#: about ten minutes and needs Flask and gunicorn.
DEFAULT_SECTIONS: Tuple[str, ...] = tuple(s for s in SECTIONS if s != "app")


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    """What ``python -m batchdispatch bench`` was asked to do."""

    #: Items enqueued per run, shared out between the producer threads.
    items: int = 1_000_000
    #: Runs per design and thread count; the best one is reported.
    repeat: int = 5
    #: Seconds of idleness over which the dispatcher's wake-ups are counted.
    idle: float = 1.0
    #: Requests of the per-item HTTP runs, (f) and (g).
    http_posts: int = 2_000
    #: Items of the batched HTTP run, (h), and of each run of the HttpSink options.
    http_items: int = 100_000
    #: Items per run of the spool section.
    spool_items: int = 20_000
    #: Keys (or priorities) waiting in each run of the scale section.
    scale_keys: Tuple[int, ...] = (1_000, 10_000, 100_000)
    #: Items written one at a time, per engine, in the sinks section.
    sink_per_item: int = 3_000
    #: Items written through each sink, in batches, in the sinks section.
    sink_items: int = 50_000
    #: Rounds of the app section: each loads every variant once, in turn.
    app_rounds: int = 10
    #: Seconds of each load in the app section.
    app_seconds: float = 4.0
    #: The sections to run, from :data:`SECTIONS`.
    sections: Tuple[str, ...] = DEFAULT_SECTIONS
    #: Also write the figures of the enqueue and http sections to this file, as JSON.
    json_path: Optional[str] = None


#: Settings of ``--quick``: seconds, not minutes; the figures are rough.
QUICK = BenchOptions(
    items=4_000, repeat=1, idle=0.2, http_posts=100, http_items=5_000, spool_items=1_000,
    scale_keys=(1_000, 10_000), sink_per_item=200, sink_items=5_000, app_rounds=1, app_seconds=1.0,
)
