"""The Django ORM: :class:`ModelSink`, one ``bulk_create`` per batch inside ``transaction.atomic``.

Importing this module imports Django (the extra ``django``); ``import
batchdispatch`` does not. The flow of a batch, the split of one with bad
rows and the errors are those of every SQL sink
(:mod:`batchdispatch.sinks._sql`); this module owns what Django adds:
its per-thread connections, opened and closed around each batch as
Django does around a request, the connections a forked child inherits
on the thread that forked, and what Django's errors mean.
"""

from __future__ import annotations

import contextlib
import copy
import threading
from typing import Any, Callable, Iterator, List, Optional

from django.core.exceptions import FieldDoesNotExist, ValidationError  # type: ignore[import-untyped]
from django.db import (  # type: ignore[import-untyped]
    DEFAULT_DB_ALIAS,
    close_old_connections,
    connections,
    models,
    transaction,
)
from django.db import utils as db_utils

from ._sql import (
    INHERITED,
    BadItem,
    Kind,
    RejectedRow,
    RowsRejected,
    SqlSink,
    WriteError,
    check_bool,
    kind_of_sqlstate,
    sqlstate_of,
)

__all__ = ["ModelSink", "RejectedRow", "RowsRejected", "WriteError"]


class ModelSink(SqlSink[Any, None]):
    """A dispatch callable that saves each batch with ``Model.objects.bulk_create``, in one transaction.

    .. code-block:: python

        from batchdispatch import BackgroundDispatcher, RetryPolicy
        from batchdispatch.sinks.django import ModelSink
        from shop.models import PageView

        page_views = BackgroundDispatcher(ModelSink(PageView), delay=1.0, max_batch_size=500,
                                          retry=RetryPolicy(max_attempts=10, max_backoff=30))


        def product(request):  # a view
            page_views.enqueue({"path": request.path, "user_id": request.user.pk})
            ...

    Each batch is one ``bulk_create`` of the batch's objects inside
    ``transaction.atomic(using=using)``, on the dispatcher's worker thread.
    Django's connections belong to the thread that opened them, so the
    worker has its own; the sink calls ``django.db.close_old_connections()``
    before and after each batch, as Django does around each request: a
    connection past ``CONN_MAX_AGE`` (by default 0: after every batch) or
    broken by an error is closed, and the next batch opens another. Set
    ``CONN_MAX_AGE`` (and ``CONN_HEALTH_CHECKS = True``) to keep the
    worker's connection between batches.

    **Bad rows.** When the batch fails on the data (``IntegrityError``,
    ``DataError``, a value Django cannot convert for its field, or an
    SQLSTATE of class 22 or 23), the sink splits it in halves, each half in
    a nested ``atomic`` (a savepoint) of one new transaction, down to the
    rows that fail; it commits every other row, once, and raises
    :class:`~batchdispatch.PartialFailure` with the bad items, whose cause,
    :class:`RowsRejected`, is not retryable and carries the database's
    message for each (without the DETAIL lines, which quote values).

    **Retries.** ``OperationalError``, ``InterfaceError`` (a lost or closed
    connection), a serialization failure or a deadlock:
    :class:`WriteError` with ``retryable=True``, and nothing committed.
    ``ProgrammingError`` (a missing table: a migration not run) and
    ``NotSupportedError``: not retryable. Delivery is at least once: a batch
    whose COMMIT was sent but not answered is written again. With
    ``ignore_conflicts=True`` and a unique field that each item carries (an
    event id made when it is enqueued), that retry inserts nothing: exactly
    once.

    **Fork.** A child's worker threads are new and open their own
    connections. The thread that forked keeps, in the child, the
    connection objects of its parent: when the sink first runs on that
    thread in the child, it drops them without closing them (closing would
    end the parent's session), so that Django opens new ones.

    An enqueued model instance is copied before it is saved: the instance
    you hold is never changed by the worker thread (its ``pk`` stays
    unset).

    :param model: the model class. Not a multi-table inherited model
        (``bulk_create`` cannot save those).
    :param row: ``row(item) -> model instance`` (or a dict of field values).
        By default, an item may be a dict of field values (``Model(**item)``)
        or an instance of *model*. An item for which ``row`` raises is
        rejected on its own, like a bad row.
    :param using: the database alias (a key of ``DATABASES``).
    :param ignore_conflicts: pass ``ignore_conflicts=True`` to
        ``bulk_create`` (``ON CONFLICT DO NOTHING`` on PostgreSQL): rows that
        would break a unique constraint are skipped, not rejected.
    :param batch_size: ``bulk_create``'s *batch_size* (None: Django's
        default, as many rows per INSERT as the database accepts).

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        model: type,
        *,
        row: Optional[Callable[[Any], Any]] = None,
        using: str = DEFAULT_DB_ALIAS,
        ignore_conflicts: bool = False,
        batch_size: Optional[int] = None,
    ) -> None:
        if not (isinstance(model, type) and issubclass(model, models.Model)):
            raise TypeError(f"model must be a Django model class, got {model!r}")
        model_class: Any = model  # Django is untyped here
        meta = model_class._meta
        if meta.abstract:
            raise ValueError(f"model must not be abstract: {model.__name__} has no table")
        if any(parent._meta.concrete_model is not meta.concrete_model for parent in meta.get_parent_list()):
            raise ValueError(f"model must not be a multi-table inherited model: bulk_create cannot save "
                             f"{model.__name__}")
        if not isinstance(using, str):
            raise TypeError(f"using must be a database alias (a str), got {type(using).__name__}")
        if using not in connections.settings:
            raise ValueError(f"using: no database {using!r} in DATABASES "
                             f"(configured: {', '.join(map(repr, connections.settings))})")
        if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int)
                                       or batch_size < 1):
            raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
        self._model: Any = model
        self._using = using
        self._ignore_conflicts = check_bool(ignore_conflicts, "ignore_conflicts")
        self._batch_size = batch_size
        # The thread that forked, in a child, until the sink has dropped its parent's connections.
        self._inherited_thread: Optional[int] = None
        super().__init__(row)

    @property
    def target(self) -> str:
        return f"{self._model._meta.label} ({self._model._meta.db_table})"

    def _convert(self, item: Any) -> Any:
        obj = self._row(item) if self._row is not None else item
        if isinstance(obj, dict):
            try:
                return self._model(**obj)
            except Exception as exc:  # noqa: BLE001 - a field the model does not have, say
                raise BadItem(f"{self._model.__name__}(**item) raised {type(exc).__name__}: {exc}") from None
        if isinstance(obj, self._model):
            return copy.copy(obj)  # bulk_create sets pk on what it saves: never on the caller's instance
        what = "row() returned" if self._row is not None else "item is"
        raise BadItem(f"{what} a {type(obj).__name__}, not a {self._model.__name__} or a dict of its fields")

    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        self._leave_parent_connections()
        _close_old_connections()
        try:
            yield None
        finally:
            _close_old_connections()

    def _transaction(self, session: None) -> contextlib.AbstractContextManager[Any]:
        return transaction.atomic(using=self._using)  # type: ignore[no-any-return]

    def _savepoint(self, session: None) -> contextlib.AbstractContextManager[Any]:
        return transaction.atomic(using=self._using)  # type: ignore[no-any-return]

    def _insert(self, session: None, rows: List[Any]) -> None:
        fresh = [obj for obj in rows if obj.pk is None]
        try:
            self._model._default_manager.using(self._using).bulk_create(
                rows, batch_size=self._batch_size, ignore_conflicts=self._ignore_conflicts,
            )
        except BaseException:
            # bulk_create gave them the primary keys of rows now rolled back: the next attempt inserts anew.
            for obj in fresh:
                obj.pk = None
                obj._state.adding = True
                obj._state.db = None
            raise

    def _kind(self, error: BaseException) -> Optional[Kind]:
        if isinstance(error, db_utils.Error):
            code = sqlstate_of(error.__cause__) if error.__cause__ is not None else None
            found = kind_of_sqlstate(code)
            if found is not None:
                return found
            if isinstance(error, (db_utils.IntegrityError, db_utils.DataError)):
                return Kind.DATA
            if isinstance(error, db_utils.ProgrammingError) and code is None:
                return Kind.DATA  # the driver refused one value ("cannot adapt"), before the server saw it
            if isinstance(error, (db_utils.ProgrammingError, db_utils.NotSupportedError)):
                return Kind.FINAL
            return Kind.RETRY  # OperationalError, InterfaceError, InternalError, DatabaseError
        if isinstance(error, (ValueError, TypeError, ValidationError, FieldDoesNotExist)):
            return Kind.DATA  # a field's to_python / get_prep_value refused one object's value
        return None

    def _driver_error(self, error: BaseException) -> BaseException:
        cause: Optional[BaseException] = error.__cause__ if isinstance(error, db_utils.Error) else None
        return error if cause is None else cause

    def _secrets(self) -> List[str]:
        password = connections.settings.get(self._using, {}).get("PASSWORD")
        return [str(password)] if password else []

    # -- fork

    def _drop_inherited(self, forking_thread: int) -> None:
        self._inherited_thread = forking_thread

    def _leave_parent_connections(self) -> None:
        """On the thread that forked, in the child: drop (not close) the connections it inherited."""
        if self._inherited_thread is None or self._inherited_thread != threading.get_ident():
            return
        self._inherited_thread = None
        for wrapper in connections.all(initialized_only=True):
            if wrapper.connection is None:
                continue
            INHERITED.append(wrapper.connection)  # the parent's session: never closed here
            wrapper.connection = None
            wrapper.run_on_commit = []
            if wrapper.in_atomic_block:
                # Forked inside atomic(): that block can only roll back now.
                wrapper.closed_in_transaction = True
                wrapper.needs_rollback = True

    def __repr__(self) -> str:
        extras = " ignore_conflicts" if self._ignore_conflicts else ""
        return f"<ModelSink {self.target} using {self._using!r}{extras}>"


def _close_old_connections() -> None:
    """``close_old_connections()``, unless this thread is inside ``atomic()``.

    Django closes a connection whose autocommit is off: inside an atomic
    block (a sink called where its caller holds a transaction), that would
    break the caller's transaction, so the caller's connection is left as
    it is. On a dispatcher's worker thread, which never is, this is
    exactly what Django does around a request.
    """
    if not any(wrapper.in_atomic_block for wrapper in connections.all(initialized_only=True)):
        close_old_connections()

