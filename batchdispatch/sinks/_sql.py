"""What the SQL sinks share: the flow of one batch, its errors, and which failures are worth retrying.

:class:`SqlSink` writes a batch the same way whatever the engine
(:mod:`.postgres`, :mod:`.sqlalchemy`, :mod:`.django`):

1. each item becomes a row with ``row(item)``; an item for which that
   raises is rejected on its own, without a database call;
2. the rows go in with one statement (or one ``COPY``) in one transaction;
3. when that fails on the data (a bad value, a constraint), the rows are
   tried again in one new transaction, split in halves, each half in a
   savepoint, and a half that fails is split again, down to single rows:
   the good rows are committed once, together, and the bad ones are raised
   as a :class:`~batchdispatch.PartialFailure` whose cause is
   :class:`RowsRejected` (not retryable), with the database's message for
   each;
4. any other failure fails the whole batch, with nothing committed: a
   :class:`WriteError` that is retryable for a lost connection, a
   serialization failure, a deadlock and the like (:func:`kind_of_sqlstate`),
   and final for a missing table or column or a permission refused.

An engine says how to get a connection (``_session``), open a transaction
and a savepoint, insert rows, turn an item into a row, and what kind of
error it got (``_kind``).

**Messages.** A rejected row carries the database's primary message and
its SQLSTATE, never its DETAIL or CONTEXT lines, where PostgreSQL quotes
the row's values ("Key (email)=(...) already exists", the COPY line). The
primary message itself quotes a value in a few cases (``invalid input
syntax for type integer: "abc"``). An error about the data is raised
without its driver exception as ``__cause__`` for the same reason; other
errors (a lost connection) keep it. Passwords never appear: libpq does not
quote them, and a sink that knows one removes it from every message.

**Fork.** One process-wide fork hook (and, where a server forks past
Python's hooks, as uWSGI does, a check of the process id on each call)
gives every sink a fresh lock and has it drop, never close, what it
inherited: closing a connection in the child would end the parent's
session, since libpq says goodbye to the server on close. What is dropped
stays referenced in :data:`INHERITED`, so that no finalizer runs on it.

**Logging.** psycopg logs a warning ("error ignored terminating
<Pipeline>") each time a pipelined ``executemany`` fails; while a sink
writes, a filter on the ``psycopg`` logger drops that one line on that
thread, since the failure is what the sink reports (and a split would log
it dozens of times). Every other psycopg record goes through.

**Locks.** Each sink has one ``_lock``, which guards its pool (or its
process id and closed flag); no user code (``row``) and no database call
runs under it. ``_registry_lock`` guards the registry of live sinks; it is
never held while a sink's lock is taken.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import enum
import logging
import os
import threading
import time
import weakref
from typing import Any, Callable, Dict, Generic, Hashable, List, Optional, Sequence, Tuple, TypeVar

from .. import PartialFailure, current_deadline
from ..exceptions import BatchDispatchError

R = TypeVar("R")  # a row, as the engine inserts it
S = TypeVar("S")  # what the engine works through: a connection, or nothing

#: How many rejected rows the text of :class:`RowsRejected` lists (all are in ``rejected``).
SHOWN = 5


@dataclasses.dataclass(frozen=True)
class RejectedRow:
    """One item of a batch whose row the database (or ``row()``) refused.

    :ivar index: the item's index in the batch the sink was given.
    :ivar item: the item itself (not shown in the repr).
    :ivar message: the database's primary message (no DETAIL or CONTEXT),
        or what ``row(item)`` raised.
    :ivar sqlstate: the SQLSTATE code (``"23505"``, say), or None when the
        row never reached the database or the driver gives none.
    """

    index: int
    item: Any = dataclasses.field(repr=False)
    message: str
    sqlstate: Optional[str] = None

    def __str__(self) -> str:
        code = f" [{self.sqlstate}]" if self.sqlstate else ""
        return f"item {self.index}: {self.message}{code}"


class WriteError(BatchDispatchError):
    """A batch could not be written by a sink of :mod:`batchdispatch.sinks` (PostgreSQL, SQLAlchemy, Django).

    Nothing of the batch was committed. The dispatcher's ``on_error``, its
    ``batch_failed`` event and its :class:`~batchdispatch.RetryPolicy` see
    it like any other failure; a policy gives the items up at once when
    :attr:`retryable` is False.

    :ivar table: the table (or model) written to.
    :ivar retryable: whether trying again later may help (a lost
        connection, a serialization failure or a deadlock: yes; a missing
        table or a permission refused: no).
    :ivar sqlstate: the SQLSTATE code of the database's error, or None.
    """

    def __init__(self, message: str, *, table: str, retryable: bool, sqlstate: Optional[str] = None) -> None:
        super().__init__(message)
        self.table = table
        self.retryable = retryable
        self.sqlstate = sqlstate


class RowsRejected(WriteError):
    """The rows the database refused: the cause of the sink's :class:`~batchdispatch.PartialFailure`.

    Never retryable: the same row would be refused again. Every other row
    of the batch was committed. The text lists the first :data:`SHOWN`
    rows, each with the database's message and SQLSTATE, for example
    ``3 of 1000 rows rejected by "events": item 17: new row for relation
    "events" violates check constraint "events_n_check" [23514]; ...``.

    :ivar rejected: a :class:`RejectedRow` for each, in batch order.
    """

    def __init__(self, rejected: Sequence[RejectedRow], *, table: str, batch_size: int) -> None:
        listed = "; ".join(str(row) for row in rejected[:SHOWN])
        more = f"; and {len(rejected) - SHOWN} more" if len(rejected) > SHOWN else ""
        super().__init__(
            f"{len(rejected)} of {batch_size} rows rejected by {table}: {listed}{more}",
            table=table, retryable=False,
        )
        self.rejected: Tuple[RejectedRow, ...] = tuple(rejected)


class BadItem(ValueError):
    """Raised by a sink's default ``row`` for an item it cannot turn into a row; the text is the reason."""


class Kind(enum.Enum):
    """What a failure of an insert means."""

    #: The data: a value or a constraint. The rows are split to find the bad ones.
    DATA = "data"
    #: Worth trying again later: the connection, a conflict with another transaction, the server.
    RETRY = "retry"
    #: Will fail again: a missing table or column, a permission, a syntax error.
    FINAL = "final"


#: SQLSTATE classes (the first two characters) and codes, and what they mean here.
_SQLSTATE_KINDS: Dict[str, Kind] = {
    "22": Kind.DATA,   # data exception: a bad value
    "23": Kind.DATA,   # integrity constraint violation
    "44": Kind.DATA,   # with check option violation
    "P0": Kind.DATA,   # raised by PL/pgSQL: a trigger refusing a row
    "42804": Kind.DATA,  # datatype mismatch: a row's value of the wrong type
    "08": Kind.RETRY,  # connection exception
    "25": Kind.RETRY,  # invalid transaction state (a read-only standby, say)
    "40": Kind.RETRY,  # transaction rollback: serialization failure, deadlock
    "53": Kind.RETRY,  # insufficient resources: disk full, too many connections
    "55": Kind.RETRY,  # object not in prerequisite state: a lock not available
    "57": Kind.RETRY,  # operator intervention: shutdown, statement timeout
    "58": Kind.RETRY,  # system error
    "XX": Kind.RETRY,  # internal error
    "0A": Kind.FINAL,  # feature not supported
    "28": Kind.FINAL,  # invalid authorization
    "3D": Kind.FINAL,  # invalid catalog name: no such database
    "3F": Kind.FINAL,  # invalid schema name
    "42": Kind.FINAL,  # syntax error or access rule violation: no such table or column, permission
}


def kind_of_sqlstate(code: Optional[str]) -> Optional[Kind]:
    """What an error with SQLSTATE *code* means, or None when its code does not say."""
    if not code:
        return None
    return _SQLSTATE_KINDS.get(code) or _SQLSTATE_KINDS.get(code[:2])


def sqlstate_of(error: object) -> Optional[str]:
    """A driver error's SQLSTATE: psycopg's ``sqlstate`` or psycopg2's ``pgcode``; None for others."""
    code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return code if isinstance(code, str) else None


def database_message(error: BaseException, secrets: Sequence[str] = ()) -> Tuple[str, Optional[str]]:
    """The message and SQLSTATE of a driver's *error*, without the lines that quote row values.

    PostgreSQL's primary message where the driver gives it
    (``diag.message_primary``), else the first line of the error's text,
    after its type's name when there is no SQLSTATE (a client-side error
    such as psycopg's ``cannot adapt type``). Any of *secrets* is masked.
    """
    code = sqlstate_of(error)
    primary = getattr(getattr(error, "diag", None), "message_primary", None)
    text = primary if isinstance(primary, str) and primary else _first_line(error)
    if code is None:
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return mask(text, secrets), code


def _first_line(error: BaseException) -> str:
    try:
        text = str(error)
    except Exception:  # noqa: BLE001 - a driver's __str__ that fails still gives us its type
        return ""
    return text.strip().splitlines()[0].strip() if text.strip() else ""


def mask(text: str, secrets: Sequence[str]) -> str:
    """*text* with each non-empty secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def check_name(value: object, what: str) -> str:
    """A table or column name: a non-empty str without NUL (quoted by the engine, never formatted in)."""
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a str, got {type(value).__name__}")
    if not value or "\x00" in value:
        raise ValueError(f"{what} must be a non-empty name without NUL characters, got {value!r}")
    return value


def check_row(row: object) -> Optional[Callable[[Any], Any]]:
    if row is not None and not callable(row):
        raise TypeError(f"row must be callable or None, got {type(row).__name__}")
    return row


def check_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a bool, got {type(value).__name__}")
    return value


def seconds_left() -> Optional[float]:
    """Seconds left until :func:`~batchdispatch.current_deadline` for this call, or None."""
    deadline = current_deadline()
    return None if deadline is None else deadline - time.monotonic()


# -- psycopg's pipeline warning --------------------------------------------------------------

_writing = threading.local()


class _QuietPipelineExit(logging.Filter):
    """Drops psycopg's warning "error ignored terminating <Pipeline>" on a thread that a sink is writing on.

    psycopg runs ``executemany`` in a pipeline, and logs that warning
    whenever a statement of it fails: the failure itself is what the sink
    reports (and splitting a batch to find its bad rows would log it
    many times over).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        quiet = getattr(_writing, "on", False)
        return not (quiet and str(record.msg).startswith("error ignored terminating"))


logging.getLogger("psycopg").addFilter(_QuietPipelineExit())


# -- fork ----------------------------------------------------------------------------------

#: What forked children inherited from their parent (pools, connections): kept
#: referenced and never closed, so that no close and no finalizer talks to
#: the server on the parent's sockets.
INHERITED: List[object] = []

_registry: weakref.WeakSet[SqlSink[Any, Any]] = weakref.WeakSet()
_registry_lock = threading.Lock()


def _after_fork_in_child() -> None:
    global _registry_lock
    _registry_lock = threading.Lock()  # may have been held by a thread the child does not have
    for sink in list(_registry):
        sink._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- the flow of a batch -------------------------------------------------------------------


class SqlSink(abc.ABC, Generic[R, S]):
    """The flow of a batch (see the module's notes); the engines fill in the abstract methods."""

    def __init__(self, row: object) -> None:
        self._row = check_row(row)
        self._lock = threading.Lock()
        self._pid = os.getpid()
        with _registry_lock:
            _registry.add(self)

    # -- what the engines provide

    @property
    @abc.abstractmethod
    def target(self) -> str:
        """The table (or model) written to, as messages name it."""

    @abc.abstractmethod
    def _convert(self, item: Any) -> R:
        """The row for *item* (with ``row`` if given); raise to reject the item."""

    @abc.abstractmethod
    def _session(self) -> contextlib.AbstractContextManager[S]:
        """A connection for one batch (held for its transactions), given back at the end."""

    @abc.abstractmethod
    def _transaction(self, session: S) -> contextlib.AbstractContextManager[Any]:
        """One transaction: committed at the end of the block, rolled back on an exception."""

    @abc.abstractmethod
    def _savepoint(self, session: S) -> contextlib.AbstractContextManager[Any]:
        """A savepoint within the transaction: released, or rolled back to on an exception."""

    @abc.abstractmethod
    def _insert(self, session: S, rows: List[R]) -> None:
        """Insert *rows*, in order, with one statement (or COPY)."""

    @abc.abstractmethod
    def _kind(self, error: BaseException) -> Optional[Kind]:
        """What *error* means, or None when it is not a database error at all."""

    @abc.abstractmethod
    def _driver_error(self, error: BaseException) -> BaseException:
        """The driver's own exception behind *error* (for its message and SQLSTATE)."""

    def _secrets(self) -> Sequence[str]:
        """Strings never to show in a message (a password)."""
        return ()

    def _drop_inherited(self, forking_thread: int) -> None:
        """In a forked child: forget (never close) the parent's connections. Lock held.

        *forking_thread* is the ident of the thread that forked: the only
        one of the child's threads whose thread-local state is the parent's.
        """

    # -- the calls

    def __call__(self, batch: List[Any]) -> None:
        """Write *batch*; raise :class:`WriteError`, or a :class:`~batchdispatch.PartialFailure`
        of :class:`RowsRejected`, if not every row was committed."""
        self._check_process()
        rows: List[Tuple[int, R]] = []
        rejected: List[RejectedRow] = []
        for index, item in enumerate(batch):
            try:
                rows.append((index, self._convert(item)))
            except BadItem as exc:
                rejected.append(RejectedRow(index, item, str(exc)))
            except Exception as exc:  # noqa: BLE001 - the user's row() refusing one item
                rejected.append(RejectedRow(index, item, f"row() raised {type(exc).__name__}: {exc}"))
        failure: Optional[Tuple[BaseException, Optional[WriteError]]] = None
        if rows:
            _writing.on = True
            try:
                rejected += self._write(batch, rows)
            except Exception as exc:  # noqa: BLE001 - judged below, outside this clause
                failure = (exc, self._write_error(exc))
            finally:
                _writing.on = False
        if failure is not None:
            # Raised here, outside the except clause: an error about the data
            # must not carry the driver's exception, whose text quotes values.
            original, error = failure
            if error is None:
                raise original
            raise error from (None if self._kind(original) is Kind.DATA else original)
        if rejected:
            rejected.sort(key=lambda row: row.index)
            raise PartialFailure(
                [row.item for row in rejected],
                RowsRejected(rejected, table=self.target, batch_size=len(batch)),
            )

    def deliver(self, key: Hashable, batch: List[Any]) -> None:
        """Write *batch*, for a :class:`~batchdispatch.KeyedDispatcher`: the key only grouped the items.

        .. code-block:: python

            from batchdispatch import KeyedDispatcher
            from batchdispatch.sinks.postgres import PostgresSink

            sink = PostgresSink("host=db.internal dbname=app user=app", "events", ["tenant", "kind"])
            KeyedDispatcher(sink.deliver, delay=1.0)   # one batch per key at a time, in order
        """
        self(batch)

    # -- the steps

    def _write(self, batch: List[Any], rows: List[Tuple[int, R]]) -> List[RejectedRow]:
        """Insert *rows* in one transaction; on a data error, split them (see the module's notes)."""
        with self._session() as session:
            try:
                with self._transaction(session):
                    self._insert(session, [row for _, row in rows])
                return []
            except Exception as exc:
                if self._kind(exc) is not Kind.DATA:
                    raise
                if len(rows) == 1:
                    return [self._rejected(batch, rows[0][0], exc)]
            rejected: List[RejectedRow] = []
            with self._transaction(session):
                half = len(rows) // 2
                self._isolate(session, batch, rows[:half], rejected)
                self._isolate(session, batch, rows[half:], rejected)
            return rejected

    def _isolate(
        self, session: S, batch: List[Any], rows: List[Tuple[int, R]], rejected: List[RejectedRow],
    ) -> None:
        """Insert *rows* in a savepoint; if the data is refused, each half in turn, down to single rows."""
        try:
            with self._savepoint(session):
                self._insert(session, [row for _, row in rows])
            return
        except Exception as exc:
            if self._kind(exc) is not Kind.DATA:
                raise
            if len(rows) == 1:
                rejected.append(self._rejected(batch, rows[0][0], exc))
                return
        half = len(rows) // 2
        self._isolate(session, batch, rows[:half], rejected)
        self._isolate(session, batch, rows[half:], rejected)

    def _rejected(self, batch: List[Any], index: int, error: BaseException) -> RejectedRow:
        message, code = database_message(self._driver_error(error), self._secrets())
        return RejectedRow(index, batch[index], message, code)

    def _write_error(self, error: BaseException) -> Optional[WriteError]:
        """The WriteError that stands for *error*, or None if it is not a database error."""
        kind = self._kind(error)
        if kind is None:
            return None
        message, code = database_message(self._driver_error(error), self._secrets())
        if kind is Kind.DATA:
            # Only a check deferred to COMMIT gets here: every row went in, the commit did not.
            message = f"the commit was refused, so no row can be told apart: {message}"
        return WriteError(
            f"batch not written to {self.target}: {message}", table=self.target,
            retryable=kind is Kind.RETRY, sqlstate=code,
        )

    def _check_process(self) -> None:
        """In a child forked past Python's fork hooks (uWSGI), do what the hook would have done."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._pid = os.getpid()
                    main = threading.main_thread().ident  # where servers such as uWSGI fork
                    self._drop_inherited(threading.get_ident() if main is None else main)

    def _forked(self) -> None:
        """Python's fork hook, in the child: a fresh lock, and the parent's connections dropped."""
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._drop_inherited(threading.get_ident())
