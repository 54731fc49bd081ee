"""The ``spool`` section: what ``spool=`` costs an enqueue, in each mode.

The same BackgroundDispatcher without a spool, with a spool in its default
mode (nothing is written while delivery keeps up), and with ``durable=True``
(every item is written before ``enqueue`` returns): SqliteSpool on a fresh
file in a temporary directory for each run, and PostgresSpool on a fresh
table of the server at ``BATCHDISPATCH_BENCH_POSTGRES`` (a libpq string;
default the local server's database ``test``), whose rows are left out,
with a note, when it does not answer; RedisSpool likewise on the server at
``BATCHDISPATCH_BENCH_REDIS``. Beside each server spool's durable rows, its
floor (:mod:`.spool_floor`): a bare durable write per round trip through
the same client, with as many threads.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, TextIO, Tuple

from .._dispatcher import BackgroundDispatcher
from . import spool_floor
from .harness import (
    DELAY,
    DRAIN_TIMEOUT,
    MAX_BATCH_SIZE,
    PAYLOAD,
    THREAD_COUNTS,
    BenchError,
    CountingSink,
    produce_items,
    race,
)
from .options import BenchOptions
from .output import ratio, status, table

# -- the spool ----------------------------------------------------------------------
#
# BackgroundDispatcher, (d) above, without a spool and with one in each mode.
# Each run gets a fresh spool file; it is timed like the enqueue designs
# (barrier release to the last producer's join, per item), and end to end
# until flush() returns, which for the durable mode includes acking the
# delivered items. A run is checked: the sink got every item and nothing
# is left in the spool.

#: (key, label, durable: None for no spool).
SPOOL_MODES: Tuple[Tuple[str, str, Optional[bool]], ...] = (
    ("memory", "(d) BackgroundDispatcher, no spool", None),
    ("spill", "(s) spool=SqliteSpool(path)", False),
    ("durable", "(t) spool=SqliteSpool(path, durable=True)", True),
    ("pg-spill", "(u) spool=PostgresSpool(conninfo)", False),
    ("pg-durable", "(v) spool=PostgresSpool(conninfo, durable=True)", True),
    ("redis-spill", "(w) spool=RedisSpool(url, name)", False),
    ("redis-durable", "(x) spool=RedisSpool(url, name, durable=True)", True),
)
POSTGRES_ENV = "BATCHDISPATCH_BENCH_POSTGRES"
REDIS_ENV = "BATCHDISPATCH_BENCH_REDIS"


def _redis() -> Optional[str]:
    """The Redis server's URL, or None if it (or redis-py) is not there."""
    url = os.environ.get(REDIS_ENV, "redis://127.0.0.1:6379/0")
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        client.ping()
        client.close()
    except Exception:  # noqa: BLE001 - any failure: the rows are left out
        return None
    return url


def _postgres() -> Optional[str]:
    """The PostgreSQL server's conninfo, or None if it (or psycopg) is not there."""
    conninfo = os.environ.get(POSTGRES_ENV, "host=127.0.0.1 port=5432 dbname=test user=postgres")
    try:
        import psycopg

        psycopg.connect(conninfo, connect_timeout=3).close()
    except Exception:  # noqa: BLE001 - any failure: the rows are left out
        return None
    return conninfo


def _make_spool(key: str, durable: Optional[bool], directory: str) -> Tuple[Any, Callable[[], None]]:
    """The spool of a run, and how to remove what it left."""
    if durable is None:
        return None, lambda: None
    if key.startswith("redis-"):
        import redis

        from ..spool import RedisSpool

        url = _redis()
        assert url is not None
        name = f"bench_{secrets.token_hex(6)}"

        def delete() -> None:
            client = redis.Redis.from_url(url)
            keys = list(client.scan_iter(match=f"{{{name}}}:*"))
            if keys:
                client.delete(*keys)
            client.close()

        return RedisSpool(url, name, durable=durable), delete
    if not key.startswith("pg-"):
        from ..spool import SqliteSpool

        return SqliteSpool(os.path.join(directory, "bench.db"), durable=durable), lambda: None
    import psycopg

    from ..spool import PostgresSpool

    conninfo = _postgres()
    assert conninfo is not None
    table = f"bench_{secrets.token_hex(6)}"

    def drop() -> None:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for suffix in ("", "_owners", "_dead"):
                conn.execute(f"DROP TABLE IF EXISTS {table}{suffix}")

    return PostgresSpool(conninfo, table=table, durable=durable), drop


def _run_spooled(
    key: str, durable: Optional[bool], label: str, threads: int, items: int
) -> Tuple[float, float]:
    """Time one run; return (seconds per enqueue, end-to-end items/s)."""
    directory = tempfile.mkdtemp(prefix="batchdispatch-bench-")
    spool, drop = _make_spool(key, durable, directory)
    sink = CountingSink()
    dispatcher: BackgroundDispatcher[object] = BackgroundDispatcher(
        sink, delay=DELAY, max_batch_size=MAX_BATCH_SIZE, max_queue_size=None, name="bench-spool",
        spool=spool,
    )
    try:
        sink.expect(1)
        dispatcher.enqueue(PAYLOAD)  # warm-up: the worker runs and the file exists
        if not dispatcher.flush(timeout=DRAIN_TIMEOUT) or sink.received != 1:
            raise BenchError(f"{label}: the warm-up item was not delivered")
        sink.expect(items)
        enqueue = dispatcher.enqueue
        released, finished = race(
            threads, items, lambda barrier, count: produce_items(barrier, enqueue, count)
        )
        if not dispatcher.flush(timeout=DRAIN_TIMEOUT):
            raise BenchError(f"{label}: delivery took more than {DRAIN_TIMEOUT:g} s")
        drained = time.perf_counter()
        left = 0 if spool is None else spool.count()
        stats = dispatcher.stats()
    finally:
        dispatcher.shutdown(timeout=DRAIN_TIMEOUT)
        if spool is not None:
            spool.close()
        drop()
        shutil.rmtree(directory, ignore_errors=True)
    if sink.received != items or left or stats.dropped or stats.spool_faults:
        raise BenchError(
            f"{label}: the sink received {sink.received:,} of {items:,} items, {left:,} rows left,"
            f" faults: {dict(stats.spool_faults)}"
        )
    return (finished - released) / items, items / (drained - released)


def measure(options: BenchOptions, err: TextIO) -> Dict[Tuple[str, int], Tuple[float, float]]:
    """Best (seconds per enqueue, items/s) per (mode, producer threads), interleaved rounds."""
    best: Dict[Tuple[str, int], Tuple[float, float]] = {}
    available = {"pg": _postgres() is not None, "redis": _redis() is not None}
    for round_no in range(1, options.repeat + 1):
        for threads in THREAD_COUNTS:
            for key, label, durable in SPOOL_MODES:
                server = key.partition("-")[0]
                if not available.get(server, True):
                    continue
                status(err, f"bench: spool, round {round_no} of {options.repeat}, {label}, {threads} thr")
                # The durable mode costs microseconds per item: fewer items.
                items = options.spool_items if durable else options.items
                per, rate = _run_spooled(key, durable, label, threads, items)
                _keep(best, (key, threads), per, rate)
                floor = spool_floor.FLOORS.get(key)
                if floor is not None:
                    status(err, f"bench: spool, round {round_no} of {options.repeat}, {floor}, {threads} thr")
                    target = _postgres() if server == "pg" else _redis()
                    assert target is not None
                    per = spool_floor.measure(floor, target, threads, items)
                    _keep(best, (floor, threads), per, 1 / per)
    return best


def _keep(
    best: Dict[Tuple[str, int], Tuple[float, float]], at: Tuple[str, int], per: float, rate: float,
) -> None:
    """Keep the best of the rounds: the least time per item, the most items/s."""
    old_per, old_rate = best.get(at, (per, rate))
    best[at] = (min(per, old_per), max(rate, old_rate))


def report(options: BenchOptions, best: Dict[Tuple[str, int], Tuple[float, float]]) -> List[str]:
    header = ["spool mode"]
    for threads in THREAD_COUNTS:
        header += [f"us/enq {threads} thr", "vs (d)"]
    for threads in THREAD_COUNTS:
        header += [f"e2e/s {threads} thr"]
    rows = []
    for key, label, _ in SPOOL_MODES:
        if (key, THREAD_COUNTS[0]) not in best:
            continue
        cells = [label]
        for threads in THREAD_COUNTS:
            per = best[key, threads][0] * 1e6
            cells += [f"{per:,.2f}", ratio(per, best["memory", threads][0] * 1e6)]
        for threads in THREAD_COUNTS:
            cells += [f"{best[key, threads][1]:,.0f}"]
        rows.append(cells)
    durable = best["durable", THREAD_COUNTS[-1]][0] * 1e6
    notes = []
    for key, what, variable in (("pg-durable", "PostgresSpool", POSTGRES_ENV),
                                ("redis-durable", "RedisSpool", REDIS_ENV)):
        if (key, THREAD_COUNTS[-1]) not in best:
            notes.append(f"{what}: not measured, nothing answers at {variable} (or its client is missing)")
            continue
        costs = [best[key, threads][0] * 1e6 for threads in THREAD_COUNTS]
        notes.append(
            f"{what} durable: " + ", ".join(
                f"{us:,.1f} us per item with {t} thread{'s' if t > 1 else ''} ({1e6 / us:,.0f} items/s)"
                for us, t in zip(costs, THREAD_COUNTS)
            )
        )
        floor = spool_floor.FLOORS[key]
        floors = [best[floor, threads][0] * 1e6 for threads in THREAD_COUNTS]
        notes.append(
            f"  its floor, {spool_floor.WHAT[floor]}: " + ", ".join(
                f"{1e6 / us:,.0f} items/s with {t} thread{'s' if t > 1 else ''}"
                f" (durable: {ratio(cost, us)} its time per item)"
                for us, cost, t in zip(floors, costs, THREAD_COUNTS)
            )
        )
    return [
        f"spool: {options.items:,} items per run ({options.spool_items:,} for (t)), best of {options.repeat},"
        " a fresh file each run;",
        "e2e/s until flush() returned, which for (t) includes acking the delivered items.",
        "",
        *table(header, rows),
        "",
        f"durable enqueue with {THREAD_COUNTS[-1]} producer threads: {durable:,.1f} us per item",
        *notes,
    ]
