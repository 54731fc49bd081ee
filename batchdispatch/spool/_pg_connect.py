"""Connecting to PostgreSQL by a deadline on the calling thread, for interpreter exit.

A PostgresSpool connects on a thread of its own, waited for until the
caller's deadline (:func:`._cutoff.connect_by`), because psycopg's
``connect_timeout`` counts whole seconds, 2 at least. From Python 3.12 no
thread starts once the interpreter is exiting, and the exit hook's spill
has 1 s of the default 5 s budget: a spool that had not connected yet
(a script that enqueues and ends at once) could not connect then, and
its spill was lost. :func:`connect_until` connects on the calling thread
instead, through libpq's non-blocking connect (``PQconnectStart`` and
``PQconnectPoll``, which psycopg exposes in :mod:`psycopg.pq`), waiting
on the socket until the deadline at most.
"""

from __future__ import annotations

import selectors
import time
from typing import Any

import psycopg
from psycopg import pq


def connect_until(conninfo: str, deadline: float) -> psycopg.Connection[Any]:
    """A connection in autocommit made by *deadline* (time.monotonic()), or TimeoutError.

    :raises psycopg.OperationalError: the server refused it.
    """
    pgconn = pq.PGconn.connect_start(conninfo.encode())
    try:
        with selectors.DefaultSelector() as selector:
            while True:
                if pgconn.status == pq.ConnStatus.BAD:
                    raise psycopg.OperationalError(_message(pgconn))
                status = pgconn.connect_poll()
                if status == pq.PollingStatus.OK:
                    break
                if status == pq.PollingStatus.FAILED:
                    raise psycopg.OperationalError(_message(pgconn))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("the connection was not made by the deadline")
                events = selectors.EVENT_READ if status == pq.PollingStatus.READING else selectors.EVENT_WRITE
                # The socket may change between polls (libpq tries each address in turn).
                key = selector.register(pgconn.socket, events)
                try:
                    selector.select(left)
                finally:
                    selector.unregister(key.fileobj)
    except BaseException:
        pgconn.finish()
        raise
    pgconn.nonblocking = 1  # as psycopg's own connect leaves it
    conn = psycopg.Connection(pgconn)
    conn.autocommit = True
    return conn


def _message(pgconn: Any) -> str:
    """libpq's message (it names the host and the user, never a password)."""
    if hasattr(pgconn, "get_error_message"):  # psycopg 3.2+
        return str(pgconn.get_error_message())
    return bytes(pgconn.error_message).decode("utf-8", "replace")
