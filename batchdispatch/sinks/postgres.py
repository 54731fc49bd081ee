"""PostgreSQL with psycopg 3: :class:`PostgresSink`, one ``COPY`` (or ``executemany``) per batch.

Importing this module imports psycopg and psycopg_pool (the extra
``postgres``); ``import batchdispatch`` does not. The flow of a batch, the
split of one with bad rows and the errors are those of every SQL sink
(:mod:`batchdispatch.sinks._sql`); this module owns the connection pool,
the statements, and what psycopg's errors mean.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool, PoolTimeout

from ._sql import (
    INHERITED,
    BadItem,
    Kind,
    RejectedRow,
    RowsRejected,
    SqlSink,
    WriteError,
    check_bool,
    check_name,
    kind_of_sqlstate,
    seconds_left,
)

__all__ = ["PostgresSink", "RejectedRow", "RowsRejected", "WriteError"]

#: The ways a batch goes in.
METHODS = ("copy", "executemany")

#: Connection options never shown (in the repr or anywhere else).
_SECRET_KEYS = ("password", "sslpassword")

Row = Tuple[Any, ...]

#: Seconds the sink's own connection waits, when the pool timed out, to learn why.
_PROBE_TIMEOUT = 2


class PostgresSink(SqlSink[Row, "psycopg.Connection[Any]"]):
    """A dispatch callable that writes each batch into a PostgreSQL table, in one transaction.

    .. code-block:: python

        from datetime import datetime, timezone
        from psycopg.types.json import Jsonb
        from batchdispatch import BackgroundDispatcher, RetryPolicy
        from batchdispatch.sinks.postgres import PostgresSink

        sink = PostgresSink("host=db.internal dbname=app user=app password=...", "events",
                            ["at", "kind", "payload"])
        events = BackgroundDispatcher(sink, delay=0.5, max_batch_size=1000,
                                      retry=RetryPolicy(max_attempts=10, max_backoff=30))
        now = datetime.now(timezone.utc)
        events.enqueue({"at": now, "kind": "signup", "payload": Jsonb({"user": 42})})
        ...
        events.shutdown(timeout=10)
        sink.close()

    Each batch is one ``COPY table (columns) FROM STDIN`` (*method*
    ``"copy"``, the fastest) or one ``executemany`` of an ``INSERT``
    (``"executemany"``, sent in one pipeline), inside one transaction. Rows
    go in the order of the batch.

    **Bad rows.** When the batch fails on the data (a value of the wrong
    type, a constraint, a trigger refusing a row: SQLSTATE classes 22, 23,
    44 and P0, and psycopg's own ``cannot adapt`` errors), the sink tries
    again in one new transaction, splitting the rows in halves, each half
    in a savepoint, down to the rows that fail. It commits every other row,
    once, and raises :class:`~batchdispatch.PartialFailure` with the bad
    items, whose cause, :class:`RowsRejected`, is not retryable and gives
    the database's message and SQLSTATE for each. Its text is the primary
    message only: the DETAIL and CONTEXT lines, which quote the row's
    values, are left out (``invalid input syntax`` messages still quote the
    one bad value). A check deferred to COMMIT cannot be pinned on a row:
    the whole batch then fails, not retryable.

    **Retries.** A lost connection, the server shutting down or starting
    up, a serialization failure, a deadlock, a statement timeout, no
    connection free within *timeout*: :class:`WriteError` with
    ``retryable=True``, and nothing of the batch committed. A missing table
    or column, a permission refused: ``retryable=False``. A connection the
    server refuses (a bad password, no such database) is retryable, as libpq
    gives it no SQLSTATE; the message says why.
    Delivery is at least once: when the connection is lost after the COMMIT
    was sent and before the server answered, the batch may have been
    committed and is written again by the retry. With ``method=
    "executemany"`` and ``ignore_conflicts=True`` (``ON CONFLICT DO
    NOTHING``), a unique key that each item carries (an event id made when
    it is enqueued) makes that retry harmless: exactly once.

    **Connections.** A ``psycopg_pool.ConnectionPool`` of at most
    *max_connections*, created on the first batch (not in the constructor:
    safe with ``gunicorn --preload``), with autocommit connections checked
    before each use, so that a server restart costs no attempt. Each batch
    holds one connection. During a dispatcher's shutdown or exit flush,
    the wait for a connection and the statements are bounded by the time
    left (:func:`~batchdispatch.current_deadline`, as ``statement_timeout``).

    **Fork.** A forked child never uses its parent's pool: its first batch
    creates a pool of its own, and the parent's is neither used nor closed
    there (closing it would end the parent's sessions).

    **Names** are quoted as identifiers (``psycopg.sql.Identifier``), never
    formatted into the SQL, so any table or column name is safe.

    The password (``password=`` or in a ``postgresql://`` URL) never
    appears in the repr, in messages or in this library's logs.

    :param conninfo: a libpq connection string or ``postgresql://`` URL.
    :param table: the table's name, or ``(schema, table)``.
    :param columns: the columns each row fills, in order.
    :param row: ``row(item) -> tuple`` of values in *columns* order. By
        default, an item must be a mapping, and its values are taken in
        *columns* order (other keys are ignored). An item for which
        ``row`` raises is rejected on its own, like a bad row.
    :param method: ``"copy"`` (default) or ``"executemany"``.
    :param ignore_conflicts: add ``ON CONFLICT DO NOTHING`` (only with
        ``method="executemany"``; ``COPY`` has no such clause).
    :param max_connections: the pool's size: at most this many batches
        written at once (a :class:`~batchdispatch.KeyedDispatcher` with
        several workers).
    :param timeout: seconds to wait for a connection of the pool before the
        attempt fails (retryable).

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        conninfo: str,
        table: Union[str, Tuple[str, str]],
        columns: Sequence[str],
        *,
        row: Optional[Callable[[Any], Sequence[Any]]] = None,
        method: str = "copy",
        ignore_conflicts: bool = False,
        max_connections: int = 4,
        timeout: float = 30.0,
    ) -> None:
        self._conninfo, self._shown, self._password = _check_conninfo(conninfo)
        self._table = _check_table(table)
        self._columns = _check_columns(columns)
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, got {method!r}")
        self._method = method
        self._ignore_conflicts = check_bool(ignore_conflicts, "ignore_conflicts")
        if ignore_conflicts and method == "copy":
            raise ValueError('ignore_conflicts=True needs method="executemany": COPY has no ON CONFLICT')
        if isinstance(max_connections, bool) or not isinstance(max_connections, int):
            raise TypeError(f"max_connections must be an int, got {type(max_connections).__name__}")
        if max_connections < 1:
            raise ValueError(f"max_connections must be at least 1, got {max_connections!r}")
        self._max_connections = max_connections
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number, got {type(timeout).__name__}")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive finite number, got {timeout!r}")
        self._timeout = float(timeout)
        target = sql.Identifier(*self._table)
        names = sql.SQL(", ").join(sql.Identifier(column) for column in self._columns)
        self._copy = sql.SQL("COPY {} ({}) FROM STDIN").format(target, names)
        self._insert_many = sql.SQL("INSERT INTO {} ({}) VALUES ({}){}").format(
            target, names, sql.SQL(", ").join(sql.Placeholder() for _ in self._columns),
            sql.SQL(" ON CONFLICT DO NOTHING" if ignore_conflicts else ""),
        )
        self._pool: Optional[ConnectionPool[Any]] = None
        self._closed = False
        super().__init__(row)

    # -- what the flow asks

    @property
    def target(self) -> str:
        return ".".join(_quote(part) for part in self._table)

    def _convert(self, item: Any) -> Row:
        if self._row is None:
            if not isinstance(item, Mapping):
                raise BadItem(f"item is a {type(item).__name__}, not a mapping: pass row= to make a tuple")
            missing = [column for column in self._columns if column not in item]
            if missing:
                raise BadItem(f"item has no key {missing[0]!r} (columns: {', '.join(self._columns)})")
            return tuple(item[column] for column in self._columns)
        values = self._row(item)
        if not isinstance(values, (tuple, list)):
            raise BadItem(f"row() must return a tuple, got {type(values).__name__}")
        if len(values) != len(self._columns):
            raise BadItem(f"row() returned {len(values)} values for {len(self._columns)} columns")
        return tuple(values)

    @contextlib.contextmanager
    def _session(self) -> Iterator[psycopg.Connection[Any]]:
        left = seconds_left()
        if left is not None and left <= 0:
            raise WriteError(f"batch not written to {self.target}: the dispatcher's deadline has passed",
                             table=self.target, retryable=True)
        pool = self._current_pool()
        if pool is None:
            # No thread can start for a pool (Python 3.12+ at interpreter
            # exit): this batch goes through a connection of its own.
            wait = self._timeout if left is None else min(self._timeout, left)
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=max(1, math.ceil(wait)))
            try:
                yield conn
            finally:
                conn.close()
            return
        try:
            conn = pool.getconn(timeout=self._timeout if left is None else min(self._timeout, left))
        except PoolTimeout:
            cause = self._why_no_connection()
            if cause is None:
                raise  # the server answers: every connection was busy
            raise cause from None
        try:
            yield conn
        finally:
            pool.putconn(conn)

    @contextlib.contextmanager
    def _transaction(self, session: psycopg.Connection[Any]) -> Iterator[None]:
        with session.transaction():
            left = seconds_left()
            if left is not None:
                milliseconds = max(1, int(left * 1000))
                session.execute("SELECT set_config('statement_timeout', %s, true)", (str(milliseconds),))
            yield

    def _why_no_connection(self) -> Optional[psycopg.Error]:
        """Why the pool could not connect, learnt from one connection of our own (None: it connects).

        The pool connects in the background and only says that it timed
        out; this connection's error says why (refused, a bad password, no
        such database), for the WriteError's message.
        """
        left = seconds_left()
        if left is not None and left < _PROBE_TIMEOUT:
            return None
        try:
            psycopg.connect(self._conninfo, connect_timeout=_PROBE_TIMEOUT, autocommit=True).close()
        except psycopg.Error as exc:
            return exc
        return None

    def _savepoint(self, session: psycopg.Connection[Any]) -> contextlib.AbstractContextManager[Any]:
        return session.transaction()

    def _insert(self, session: psycopg.Connection[Any], rows: List[Row]) -> None:
        with session.cursor() as cursor:
            if self._method == "copy":
                with cursor.copy(self._copy) as copy:
                    for values in rows:
                        copy.write_row(values)
            else:
                cursor.executemany(self._insert_many, rows)

    def _kind(self, error: BaseException) -> Optional[Kind]:
        if not isinstance(error, psycopg.Error):
            return None
        found = kind_of_sqlstate(error.sqlstate)
        if found is not None:
            return found
        if error.sqlstate is None and isinstance(error, (psycopg.DataError, psycopg.ProgrammingError)):
            return Kind.DATA  # raised by psycopg itself, about one value: "cannot adapt", a NUL in text
        if isinstance(error, (psycopg.ProgrammingError, psycopg.NotSupportedError)):
            return Kind.FINAL
        return Kind.RETRY  # OperationalError (a lost connection, the pool's timeout), InterfaceError, ...

    def _driver_error(self, error: BaseException) -> BaseException:
        return error

    def _secrets(self) -> Sequence[str]:
        return (self._password,) if self._password else ()

    # -- the pool

    def _current_pool(self) -> Optional[ConnectionPool[Any]]:
        """The sink's pool, made and opened on first use; None where its threads
        cannot start (at interpreter exit on Python 3.12 and later)."""
        with self._lock:
            if self._closed:
                raise WriteError(f"the PostgresSink of {self.target} is closed", table=self.target,
                                 retryable=False)
            if self._pool is None:
                pool: ConnectionPool[Any] = ConnectionPool(
                    self._conninfo, min_size=1, max_size=self._max_connections, open=False,
                    kwargs={"autocommit": True}, check=ConnectionPool.check_connection,
                    timeout=self._timeout, name=f"batchdispatch:{self.target}", num_workers=1,
                )
                try:
                    pool.open(wait=False)
                except RuntimeError:  # "can't create new thread at interpreter shutdown"
                    return None
                self._pool = pool
            return self._pool

    def _drop_inherited(self, forking_thread: int) -> None:
        if self._pool is not None:
            INHERITED.append(self._pool)  # the parent's: never closed here
            self._pool = None

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool, waiting up to *timeout* seconds for its threads. Idempotent.

        Shut the dispatcher down first: a batch written after this fails
        with a WriteError that is not retryable. In a forked child, the
        parent's pool is left alone.
        """
        with self._lock:
            pool, self._pool = self._pool, None
            self._closed = True
        if pool is not None:
            pool.close(timeout=timeout)

    def __enter__(self) -> PostgresSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        extras = [self._method]
        if self._ignore_conflicts:
            extras.append("ignore_conflicts")
        if self._closed:
            extras.append("closed")
        return (f"<PostgresSink {self._shown} {self.target} ({', '.join(self._columns)})"
                f" {' '.join(extras)}>")


def _check_conninfo(conninfo: object) -> Tuple[str, str, Optional[str]]:
    """(conninfo, how it is shown, its password) for a valid conninfo string or URL."""
    if not isinstance(conninfo, str):
        raise TypeError(f"conninfo must be a str, got {type(conninfo).__name__}")
    try:
        options = conninfo_to_dict(conninfo)
    except psycopg.Error:
        # psycopg's message quotes the string, password included.
        raise ValueError("conninfo is not a valid libpq connection string or postgresql:// URL") from None
    password = options.get("password")
    user, host = options.get("user"), options.get("host")
    port, dbname = options.get("port"), options.get("dbname")
    shown = f"{user}@" if user else ""
    shown += str(host or "localhost") + (f":{port}" if port else "")
    shown += f"/{dbname}" if dbname else ""
    for key in _SECRET_KEYS:
        value = options.get(key)
        if value:
            shown = shown.replace(str(value), "***")
    return conninfo, shown, str(password) if password else None


def _check_table(table: object) -> Tuple[str, ...]:
    if isinstance(table, tuple):
        if len(table) != 2:
            raise ValueError(f"table must be a name or a (schema, table) pair, got {len(table)} parts")
        return (check_name(table[0], "table's schema"), check_name(table[1], "table"))
    return (check_name(table, "table"),)


def _check_columns(columns: object) -> Tuple[str, ...]:
    if isinstance(columns, (str, bytes)) or not isinstance(columns, Sequence):
        raise TypeError(f"columns must be a sequence of names, got {type(columns).__name__}")
    names = tuple(check_name(column, f"columns[{index}]") for index, column in enumerate(columns))
    if not names:
        raise ValueError("columns must name at least one column")
    if len(set(names)) != len(names):
        raise ValueError(f"columns must not repeat a name, got {list(names)}")
    return names


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
