"""What the tests of the SQL sinks share: the table, its rows, a recorder of events, a private server."""

from __future__ import annotations

import threading
from typing import Any, Dict, Iterator, List, Tuple

from batchdispatch import RetryPolicy

from ..services import PostgresServer

#: Each row says which transaction (txid) and which server session (backend) wrote it.
TABLE = """
CREATE TABLE events (
    seq bigserial PRIMARY KEY,
    k text NOT NULL DEFAULT '',
    n int NOT NULL CHECK (n >= 0),
    s text UNIQUE,
    tx bigint NOT NULL DEFAULT txid_current(),
    backend int NOT NULL DEFAULT pg_backend_pid()
)
"""
COLUMNS = ["k", "n", "s"]
#: A password that must show nowhere (trust authentication accepts any).
SECRET = "s3cret-pw-Zq81"

#: A trigger that refuses the first insert as a serialization failure and
#: the second as a deadlock, as real conflicts would; a sequence counts
#: them, since it is not rolled back with the transaction.
REFUSE_TWICE = """
CREATE SEQUENCE faults;
CREATE FUNCTION refuse_twice() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE n bigint := nextval('faults');
BEGIN
    IF n = 1 THEN RAISE EXCEPTION 'conflict' USING ERRCODE = 'serialization_failure'; END IF;
    IF n = 2 THEN RAISE EXCEPTION 'deadlock' USING ERRCODE = 'deadlock_detected'; END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER refuse BEFORE INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION refuse_twice();
"""


def query(conninfo: str, statement: str, *params: Any) -> List[Tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as conn:
        cursor = conn.execute(statement, params or None)
        return cursor.fetchall() if cursor.description else []


def item(n: int, k: str = "") -> Dict[str, Any]:
    return {"k": k, "n": n, "s": f"{k}{n}"}


def three_bad(items: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Spoil items 17, 500 and 999 of 1000 (a CHECK, a type, a UNIQUE); return them."""
    items[17]["n"] = -17
    items[500]["n"] = "five hundred"
    items[999]["s"] = "3"  # the same as item 3, in the same batch
    return [items[17], items[500], items[999]]


#: What the database says about three_bad's rows: (index, SQLSTATE, primary message).
THREE_BAD = [
    (17, "23514", 'new row for relation "events" violates check constraint "events_n_check"'),
    (500, "22P02", 'invalid input syntax for type integer: "five hundred"'),
    (999, "23505", 'duplicate key value violates unique constraint "events_s_key"'),
]


def fast_retry(attempts: int = 5) -> RetryPolicy:
    return RetryPolicy(max_attempts=attempts, backoff=0.01, multiplier=2.0, max_backoff=0.2, jitter=False)


def patient_retry() -> RetryPolicy:
    """For a server that is down a few seconds."""
    return RetryPolicy(max_attempts=1000, backoff=0.05, multiplier=2.0, max_backoff=0.5, jitter=False)


class Events:
    """Records a dispatcher's events by name, and lets a test wait for one."""

    def __init__(self, dispatcher: Any, *names: str) -> None:
        self.seen: Dict[str, List[Any]] = {name: [] for name in names}
        self.cond = threading.Condition()
        for name in names:
            dispatcher.on(name, lambda payload, name=name: self._add(name, payload))

    def _add(self, name: str, payload: Any) -> None:
        with self.cond:
            self.seen[name].append(payload)
            self.cond.notify_all()

    def wait(self, name: str, count: int = 1, timeout: float = 30.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.seen[name]) >= count, timeout)


def private_server() -> Iterator[PostgresServer]:
    """A private PostgreSQL, the table ``events`` in its database ``postgres``: stop and start it at will.

    For a fixture: ``yield from private_server()``.
    """
    with PostgresServer() as private:
        query(private.conninfo, TABLE)
        yield private
