"""The ``scale`` section: how KeyedDispatcher's costs grow with the number of keys.

One enqueue of a new key and of an existing key, one enqueue under
``overflow="drop_oldest"`` with the queue full (each one evicts), one call
to ``stats()``, each with 1,000, 10,000 and 100,000 keys waiting, and one
enqueue of a new priority on a key holding that many distinct priorities.
None should grow with the keys.
"""

from __future__ import annotations

import gc
import itertools
import threading
import time
from typing import Dict, List, TextIO, Tuple

from .._keyed import KeyedDispatcher
from .harness import DRAIN_TIMEOUT, PAYLOAD
from .options import BenchOptions
from .output import ratio, status, table

# -- growth with the number of keys ---------------------------------------------------
#
# Each run fills a KeyedDispatcher whose deliver never returns before the
# end (delay=3600 s, so nothing is taken meanwhile but full batches) with
# one item for each of N keys, then times a number of the same operation,
# one after the other on one thread. The filling is not timed.

#: (key, label, operations timed per run).
SCALE_OPS: Tuple[Tuple[str, str, int], ...] = (
    ("new", "enqueue, new key", 2_000),
    ("existing", "enqueue, existing key", 20_000),
    ("drop_oldest", 'enqueue, full queue, overflow="drop_oldest"', 2_000),
    ("stats", "stats()", 20),
    ("priority", "enqueue, new priority (N priorities on one key)", 2_000),
)


def _scale_once(op: str, keys: int, count: int) -> float:
    """Time *count* operations *op* with *keys* keys waiting; return seconds per operation."""
    gate = threading.Event()

    def deliver(key: object, batch: List[object]) -> None:
        gate.wait(DRAIN_TIMEOUT)

    # Bounded, as by default, so that the queue's grants are in play; with
    # room to spare but for "drop_oldest", where each timed enqueue evicts.
    bound = keys if op == "drop_oldest" else 2 * keys
    dispatcher: KeyedDispatcher[object] = KeyedDispatcher(
        deliver, delay=3600.0, max_batch_size=100, max_queue_size=bound,
        overflow="drop_oldest" if op == "drop_oldest" else "drop_newest", name="bench-scale",
    )
    try:
        enqueue = dispatcher.enqueue
        if op == "priority":
            for priority in range(1, keys + 1):
                enqueue("k", PAYLOAD, priority)
        else:
            for key in range(keys):
                enqueue(key, PAYLOAD)
        gc.collect()
        started = time.perf_counter()
        if op == "stats":
            for _ in range(count):
                dispatcher.stats()
        elif op == "existing":
            for key in itertools.islice(itertools.cycle(range(keys)), count):
                enqueue(key, PAYLOAD)
        elif op == "priority":
            for priority in range(keys + 1, keys + 1 + count):
                enqueue("k", PAYLOAD, priority)
        else:  # a new key each time; with "drop_oldest", each evicts
            for key in range(keys, keys + count):
                enqueue(key, PAYLOAD)
        elapsed = time.perf_counter() - started
    finally:
        gate.set()
        dispatcher.shutdown(timeout=DRAIN_TIMEOUT)
    return elapsed / count


def measure(options: BenchOptions, err: TextIO) -> Dict[Tuple[str, int], float]:
    """Best seconds per operation, by (operation, keys)."""
    best: Dict[Tuple[str, int], float] = {}
    for round_no in range(1, min(options.repeat, 3) + 1):
        for op, label, count in SCALE_OPS:
            for keys in options.scale_keys:
                status(err, f"bench: scale, round {round_no}, {label}, {keys:,} keys")
                seconds = _scale_once(op, keys, count)
                best[op, keys] = min(seconds, best.get((op, keys), seconds))
    return best


def report(options: BenchOptions, best: Dict[Tuple[str, int], float]) -> List[str]:
    sizes = options.scale_keys
    header = ["KeyedDispatcher, N keys waiting", *(f"us/op N={n:,}" for n in sizes)]
    header.append(f"{sizes[-1]:,} vs {sizes[0]:,}")
    rows = []
    for op, label, _ in SCALE_OPS:
        cells = [label, *(f"{best[op, n] * 1e6:,.2f}" for n in sizes)]
        rows.append([*cells, ratio(best[op, sizes[-1]], best[op, sizes[0]])])
    return [
        *table(header, rows),
        "",
        "us/op: one thread, best of up to 3 runs; each run first enqueues one item for each",
        "       of N keys (or N priorities on one key), untimed, with delay=3600 and",
        "       max_queue_size=2N (N under drop_oldest, so that every timed enqueue evicts).",
    ]
