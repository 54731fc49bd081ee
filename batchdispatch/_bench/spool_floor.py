"""The spool section's floors: a bare durable write per round trip, through the same client.

What a durable server spool can reach is bounded by its client library and
the machine's loopback, not only by the spool's own code. Each floor is the
cheapest durable write a thread can make through the client the spool uses,
one item per round trip, with a connection per thread:

* PostgreSQL: ``INSERT`` of one row into a table of the run's own, in
  autocommit through psycopg, so each is a commit the server has flushed;
* Redis: ``XADD`` of one entry through redis-py, straight on a connection
  (``send_packed_command`` and ``read_response``, the path the spool's group
  commit takes), on the same server the spool uses.

Group commit is what lets a spool's durable appends go past its floor: one
round trip carries the items of every thread waiting. The report gives both.
"""

from __future__ import annotations

import secrets
import threading
from typing import Any, Callable, List

from .harness import race, shares

#: The floors' keys in the spool section's results, by the durable mode they bound.
FLOORS = {"pg-durable": "pg-floor", "redis-durable": "redis-floor"}
#: What each floor measures, for the report.
WHAT = {
    "pg-floor": "one INSERT and its commit per round trip (psycopg, autocommit, a connection per thread)",
    "redis-floor": "one XADD per round trip (redis-py, straight on a connection per thread)",
}


def measure(key: str, target: str, threads: int, items: int) -> float:
    """Seconds per write of *threads* threads sharing *items* writes, on the server at *target*."""
    if key == "pg-floor":
        return _postgres(target, threads, items)
    return _redis(target, threads, items)


def _timed(threads: int, items: int, write: Callable[[int], Callable[[], None]]) -> float:
    """Time *threads* threads each calling ``write(k)()`` for its share, from their release."""
    writers = [write(k) for k in range(threads)]  # connections made before the race
    counts = iter(range(threads))
    lock = threading.Lock()

    def produce(barrier: threading.Barrier, count: int) -> None:
        with lock:
            one = writers[next(counts)]
        barrier.wait()
        for _ in range(count):
            one()

    released, finished = race(threads, items, produce)
    return (finished - released) / sum(shares(items, threads))


def _postgres(conninfo: str, threads: int, items: int) -> float:
    import psycopg

    table = f"bench_floor_{secrets.token_hex(6)}"
    connections: List[Any] = []
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, item text NOT NULL)")
        try:
            def write(_: int) -> Callable[[], None]:
                conn = psycopg.connect(conninfo, autocommit=True)
                connections.append(conn)
                statement = f"INSERT INTO {table} (item) VALUES (%s)"

                def one() -> None:
                    conn.execute(statement, ('{"event": "page_view"}',))

                return one

            return _timed(threads, items, write)
        finally:
            for conn in connections:
                conn.close()
            admin.execute(f"DROP TABLE {table}")


def _redis(url: str, threads: int, items: int) -> float:
    import redis

    client = redis.Redis.from_url(url)
    stream = f"bench_floor_{secrets.token_hex(6)}"
    connections: List[Any] = []
    try:
        def write(_: int) -> Callable[[], None]:
            conn: Any = client.connection_pool.make_connection()
            connections.append(conn)

            def one() -> None:
                packed = conn.pack_command("XADD", stream, "*", "data", '{"event": "page_view"}')
                conn.send_packed_command(packed, check_health=False)
                conn.read_response()

            return one

        return _timed(threads, items, write)
    finally:
        for conn in connections:
            conn.disconnect()
        client.delete(stream)
        client.close()
