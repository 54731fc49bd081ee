"""SQLAlchemy Core: :class:`TableSink`, one ``insert()`` with a list of rows per batch, in one transaction.

Importing this module imports SQLAlchemy (the extra ``sqlalchemy``);
``import batchdispatch`` does not. The flow of a batch, the split of one
with bad rows and the errors are those of every SQL sink
(:mod:`batchdispatch.sinks._sql`); this module owns the statement, the
engine's fork handling, and what SQLAlchemy's errors mean.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Union

from sqlalchemy import Table, insert
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.dml import Insert

from ._sql import (
    INHERITED,
    BadItem,
    Kind,
    RejectedRow,
    RowsRejected,
    SqlSink,
    WriteError,
    kind_of_sqlstate,
    sqlstate_of,
)

__all__ = ["RejectedRow", "RowsRejected", "TableSink", "WriteError"]

Row = Dict[str, Any]


class TableSink(SqlSink[Row, Connection]):
    """A dispatch callable that inserts each batch into a SQLAlchemy ``Table``, in one transaction.

    .. code-block:: python

        from datetime import datetime, timezone
        from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, create_engine
        from batchdispatch import BackgroundDispatcher, RetryPolicy
        from batchdispatch.sinks.sqlalchemy import TableSink

        engine = create_engine("postgresql+psycopg://app:...@db.internal/app", pool_pre_ping=True)
        events = Table("events", MetaData(), Column("id", Integer, primary_key=True),
                       Column("kind", String(50), nullable=False), Column("at", DateTime))
        dispatcher = BackgroundDispatcher(TableSink(engine, events), delay=0.5, max_batch_size=1000,
                                          retry=RetryPolicy(max_attempts=10, max_backoff=30))
        dispatcher.enqueue({"kind": "signup", "at": datetime.now(timezone.utc)})

    Each batch is one ``connection.execute(insert(table), rows)`` with a
    list of parameter dicts, inside one transaction: an "executemany",
    which SQLAlchemy 2 sends as multi-row ``INSERT ... VALUES`` statements
    where the dialect supports it ("insertmanyvalues": PostgreSQL, SQLite,
    MySQL, ...). With Flask-SQLAlchemy, pass ``db.engine`` (read it in an
    application context, at setup) and a model's ``__table__``.

    **Bad rows.** When the batch fails on the data (``IntegrityError``,
    ``DataError``, a value SQLAlchemy cannot bind, or an SQLSTATE of class
    22 or 23), the sink splits it in halves, each half in a savepoint
    (``begin_nested()``) of one new transaction, down to the rows that fail;
    it commits every other row, once, and raises
    :class:`~batchdispatch.PartialFailure` with the bad items, whose cause,
    :class:`RowsRejected`, is not retryable and carries the database's
    message for each, without the DETAIL lines or the statement's
    parameters, which show values. (Pass ``hide_parameters=True`` to
    ``create_engine`` to keep them out of SQLAlchemy's own messages too.)

    **Retries.** ``OperationalError``, ``InterfaceError``, a connection
    invalidated as a disconnect, the pool's timeout, a serialization
    failure or a deadlock: :class:`WriteError` with ``retryable=True``, and
    nothing committed. ``ProgrammingError`` (a missing table or column) and
    ``NotSupportedError``: not retryable. Delivery is at least once: a
    batch whose COMMIT was sent but not answered is written again. Pass an
    ``Insert`` with a conflict clause instead of a table, such as
    ``sqlalchemy.dialects.postgresql.insert(table).on_conflict_do_nothing()``,
    and a unique key in each item, for exactly once.

    **Fork.** The engine belongs to your application; a forked child must
    not use the connections its pool inherited. The sink's first batch in
    a child calls ``engine.dispose(close=False)``, as SQLAlchemy advises:
    the child's pool starts empty, and the parent's connections are
    neither used nor closed there. Use ``pool_pre_ping=True`` on the
    engine so that a connection a server restart broke is replaced before
    use, rather than costing an attempt.

    :param engine: an ``Engine`` (not a Connection or a Session); its URL's
        password never appears in the sink's repr or messages.
    :param table: a ``Table`` (a declarative model's ``__table__``), or an
        ``Insert`` on one.
    :param row: ``row(item) -> dict`` of column keys to values. By
        default, an item must be a mapping, used as it is. A column left out
        of a row gets its default. A key that is not a column of the table
        rejects the item (SQLAlchemy would drop it silently), as does an
        item for which ``row`` raises.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        engine: Engine,
        table: Union[Table, Insert],
        *,
        row: Optional[Callable[[Any], Mapping[str, Any]]] = None,
    ) -> None:
        if not isinstance(engine, Engine):
            raise TypeError(
                f"engine must be an sqlalchemy Engine, got {type(engine).__name__}"
                + (" (pass db.engine)" if type(engine).__name__ == "SQLAlchemy" else "")
            )
        if isinstance(table, Table):
            self._statement = insert(table)
            self._table = table
        elif isinstance(table, Insert) and isinstance(table.table, Table):
            self._statement = table
            self._table = table.table
        else:
            raise TypeError(f"table must be an sqlalchemy Table or an Insert, got {type(table).__name__}")
        self._engine = engine
        self._keys = frozenset(column.key for column in self._table.columns)
        super().__init__(row)

    @property
    def target(self) -> str:
        return f'"{self._table.fullname}"'

    def _convert(self, item: Any) -> Row:
        values = self._row(item) if self._row is not None else item
        if not isinstance(values, Mapping):
            if self._row is None:
                raise BadItem(f"item is a {type(item).__name__}, not a mapping: pass row= to make a dict")
            raise BadItem(f"row() must return a mapping, got {type(values).__name__}")
        unknown = sorted(str(key) for key in values if key not in self._keys)
        if unknown:
            # SQLAlchemy would leave them out without a word: a misspelt key would lose its value.
            names = ", ".join(map(repr, unknown))
            raise BadItem(f"item has keys that are not columns of {self.target}: {names}")
        return dict(values)

    @contextlib.contextmanager
    def _session(self) -> Iterator[Connection]:
        with self._engine.connect() as connection:
            yield connection

    def _transaction(self, session: Connection) -> contextlib.AbstractContextManager[Any]:
        return session.begin()

    def _savepoint(self, session: Connection) -> contextlib.AbstractContextManager[Any]:
        return session.begin_nested()

    def _insert(self, session: Connection, rows: List[Row]) -> None:
        # One executemany needs the same keys in every row: rows that leave
        # out other columns (for their defaults) go in their own, in order.
        start = 0
        for end in range(1, len(rows) + 1):
            if end == len(rows) or rows[end].keys() != rows[start].keys():
                session.execute(self._statement, rows[start:end])
                start = end

    def _kind(self, error: BaseException) -> Optional[Kind]:
        if isinstance(error, sa_exc.DBAPIError):
            if error.connection_invalidated:
                return Kind.RETRY
            found = kind_of_sqlstate(sqlstate_of(error.orig))
            if found is not None:
                return found
            if isinstance(error, (sa_exc.IntegrityError, sa_exc.DataError)):
                return Kind.DATA
            if isinstance(error, sa_exc.ProgrammingError) and sqlstate_of(error.orig) is None:
                return Kind.DATA  # the driver refused one value ("cannot adapt"), before the server saw it
            if isinstance(error, (sa_exc.ProgrammingError, sa_exc.NotSupportedError)):
                return Kind.FINAL
            return Kind.RETRY  # OperationalError, InterfaceError, InternalError, DatabaseError
        if isinstance(error, (sa_exc.TimeoutError, sa_exc.DisconnectionError)):
            return Kind.RETRY
        if isinstance(error, (sa_exc.StatementError, sa_exc.CompileError)):
            return Kind.DATA  # a row SQLAlchemy could not bind: a missing or unknown key, a bad value
        return None

    def _driver_error(self, error: BaseException) -> BaseException:
        orig = getattr(error, "orig", None)
        return orig if isinstance(orig, BaseException) else error

    def _secrets(self) -> List[str]:
        password = self._engine.url.password
        return [str(password)] if password else []

    def _drop_inherited(self, forking_thread: int) -> None:
        INHERITED.append(self._engine.pool)  # the parent's connections: kept, never closed here
        self._engine.dispose(close=False)

    def __repr__(self) -> str:
        url = self._engine.url.render_as_string(hide_password=True)
        return f"<TableSink {url} {self.target}>"
