"""A :class:`logging.Handler` that ships log records through a dispatcher.

.. code-block:: python

    import logging
    from batchdispatch import BackgroundDispatcher
    from batchdispatch.handlers import BatchHandler
    from batchdispatch.http import HttpSink

    dispatcher = BackgroundDispatcher(HttpSink("https://logs.example.com/ingest"), delay=1.0)
    logging.getLogger().addHandler(BatchHandler(dispatcher))

Each record becomes a JSON-safe dict (see :meth:`BatchHandler.record_to_dict`)
that is enqueued on the dispatcher; the logging call never waits for the
network. Records this library logs itself, and records logged while a
dispatcher delivers (the debug logs of requests and urllib3 during a POST,
say), are never shipped, so a failing endpoint cannot feed back into itself.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import datetime
import logging
import math
import threading
from typing import Any, Dict, Mapping, Optional, Protocol, Tuple, Union

from . import _validate
from ._context import delivering
from ._dispatcher import BackgroundDispatcher
from ._keyed import KeyedDispatcher

__all__ = ["BatchHandler"]

#: Attributes every LogRecord has (plus the two a Formatter adds): anything
#: else on a record came from ``extra=`` or a record factory.
_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None))) | {
    "message",
    "asctime",
}

#: Containers nested deeper than this are shipped as their text, which also
#: ends self-referencing ones.
_MAX_DEPTH = 8

#: Formats tracebacks and stacks when the handler has no formatter of its own.
_DEFAULT_FORMATTER = logging.Formatter()

#: The library's own logger: its records, and its children's, are never shipped.
_OWN_LOGGER = "batchdispatch"
_OWN_PREFIX = _OWN_LOGGER + "."


class _Target(Protocol):
    """What the handler needs of a dispatcher."""

    def enqueue(self, item: Any, /) -> object: ...

    def flush(self, timeout: Optional[float] = ...) -> object: ...


class _Closable(Protocol):
    def close(self) -> object: ...


class BatchHandler(logging.Handler):
    """Turn log records into dicts and enqueue them on a dispatcher.

    .. code-block:: python

        import logging
        from batchdispatch import BackgroundDispatcher
        from batchdispatch.handlers import BatchHandler

        dispatcher = BackgroundDispatcher(print, delay=1.0)
        handler = BatchHandler(dispatcher, logging.INFO)
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(logging.INFO)
        logging.getLogger("app").info("user %s signed in", "ada", extra={"user_id": 7})
        handler.close()          # delivers what is waiting, within flush_timeout
        dispatcher.shutdown()

    ``emit`` builds the dict on the logging thread (a snapshot: later changes
    to an ``extra`` value are not seen) and hands it to
    ``dispatcher.enqueue``, which takes no lock and returns at once. The
    handler does not take the :class:`logging.Handler` lock either, so
    threads that log at the same time do not queue up behind each other.
    If building the dict or enqueueing fails (a message whose arguments do
    not match its format string, or :class:`~batchdispatch.QueueFullError`
    under ``overflow="raise"``), the failure goes to :meth:`handleError`,
    as with any logging handler: nothing is raised to the code that logged.

    Feedback protection: a record is skipped, and counted in
    :attr:`skipped`, when its logger is ``batchdispatch`` or below it, or
    when it is logged on a dispatcher's worker thread or inside a dispatch,
    ``on_error`` or event listener call (:func:`batchdispatch._context.delivering`).
    So the debug logs of requests and urllib3 during a POST, or the
    library's own warning about a failed batch, never come back as new
    records, and a failing endpoint cannot cause a storm or a recursion.

    Give exactly one of *dispatcher* and *url*.

    :param dispatcher: a :class:`~batchdispatch.BackgroundDispatcher`, or any
        object with ``enqueue(item)`` and ``flush(timeout=...)``. It may be
        shared with other code: :meth:`close` flushes it but does not shut
        it down. From :func:`logging.config.dictConfig`, name it with
        ``"ext://module.attribute"``.
    :param level: the handler's level, as for any :class:`logging.Handler`.
    :param url: instead of *dispatcher*: build a
        ``BackgroundDispatcher(HttpSink(url, **sink_options), **dispatcher_options)``
        that this handler owns, so that :func:`logging.config.dictConfig`
        can set the handler up without code. :meth:`close` shuts it down
        and closes the sink.
    :param sink_options: keyword arguments for the
        :class:`~batchdispatch.http.HttpSink` built for *url* (``headers``,
        ``gzip``, ``secret``, ``timeout``, ...).
    :param dispatcher_options: keyword arguments for the
        :class:`~batchdispatch.BackgroundDispatcher` built for *url*. The
        handler's defaults are ``name="BatchHandler"`` and
        ``max_batch_size=1000``; the dispatcher's own defaults apply to the
        rest.
    :param flush_timeout: seconds :meth:`flush` and :meth:`close` wait for
        delivery at most (None: as long as it takes).

    .. versionadded:: 0.2.0
    """

    #: The defaults of the dispatcher built for *url*, under *dispatcher_options*.
    URL_DISPATCHER_DEFAULTS: Mapping[str, Any] = {"name": "BatchHandler", "max_batch_size": 1000}

    def __init__(
        self,
        dispatcher: Optional[_Target] = None,
        level: Union[int, str] = logging.NOTSET,
        *,
        url: Optional[str] = None,
        sink_options: Optional[Mapping[str, Any]] = None,
        dispatcher_options: Optional[Mapping[str, Any]] = None,
        flush_timeout: Optional[float] = 5.0,
    ) -> None:
        timeout = _validate.optional_seconds("flush_timeout", flush_timeout)
        if (dispatcher is None) == (url is None):
            raise TypeError(
                "BatchHandler needs exactly one of dispatcher= (a BackgroundDispatcher) "
                "and url= (an HTTP endpoint), got "
                + ("both" if dispatcher is not None else "neither")
            )
        if dispatcher is not None and (sink_options is not None or dispatcher_options is not None):
            raise TypeError("sink_options and dispatcher_options apply only with url=, not with dispatcher=")
        if url is not None and not isinstance(url, str):
            raise TypeError(f"url must be a str, got {type(url).__name__}")
        if dispatcher is not None:
            _check_dispatcher(dispatcher)
        super().__init__(level)  # checks level: before a dispatcher is built for url=
        owned: Optional[Tuple[BackgroundDispatcher[Dict[str, Any]], _Closable]] = None
        if url is not None:
            owned = _build(url, sink_options, dispatcher_options)
            dispatcher = owned[0]
        assert dispatcher is not None
        #: The dispatcher records are enqueued on.
        self.dispatcher: _Target = dispatcher
        #: Seconds :meth:`flush` and :meth:`close` wait at most.
        self.flush_timeout = timeout
        # The dispatcher and HttpSink built for url=: this handler shuts them down.
        self._owned = owned
        self._closed = False
        self._skipped = 0
        # Guards the skip counter and the closed flag; the shipping path takes no lock.
        self._state_lock = threading.Lock()

    @property
    def skipped(self) -> int:
        """Records not shipped by the feedback protection (the library's own, or logged during delivery)."""
        return self._skipped

    def handle(self, record: logging.LogRecord) -> Any:
        """Filter *record* and emit it, without taking the handler's lock.

        :class:`logging.Handler` serialises every ``emit`` behind one lock;
        this one needs none (each record is converted on its own thread and
        ``enqueue`` is thread-safe), and a lock here would also make a
        delivery thread that logs wait for a ``flush`` holding it.
        """
        if _feeds_back(record):
            with self._state_lock:
                self._skipped += 1
            return False
        result = self.filter(record)
        if isinstance(result, logging.LogRecord):  # Python 3.12+: a filter may replace it
            record = result
        if result:
            self.emit(record)
        return result

    def emit(self, record: logging.LogRecord) -> None:
        """Convert *record* with :meth:`record_to_dict` and enqueue it; never raises (but RecursionError)."""
        try:
            self.dispatcher.enqueue(self.record_to_dict(record))
        except RecursionError:  # as the standard handlers do: not something to swallow
            raise
        except Exception:  # noqa: BLE001 - logging's convention: report, never raise
            self.handleError(record)

    def record_to_dict(self, record: logging.LogRecord) -> Dict[str, Any]:
        """Return the JSON-safe dict shipped for *record*.

        Always present:

        * ``timestamp``: ``record.created`` in ISO 8601, UTC, with
          microseconds (``"2026-12-01T10:00:00.123456+00:00"``);
        * ``level``: the level name (``"WARNING"``);
        * ``logger``: the logger's name;
        * ``message``: the message with its arguments merged
          (``record.getMessage()``). If the handler has a formatter, its
          layout instead (:meth:`logging.Formatter.formatMessage`), still
          without the traceback;
        * ``module``, ``function``, ``line``: where the call was made;
        * ``thread`` (the thread's name) and ``process`` (the process id).

        Present only when there is something to say:

        * ``exception``: the formatted traceback, when the record has
          ``exc_info`` (or text a formatter already cached);
        * ``stack``: the formatted stack, for ``stack_info=True``;
        * ``extra``: a dict of the record's non-standard attributes, the
          ``extra=`` of the logging call. Values that JSON cannot hold
          become JSON-safe: tuples and sets become lists, mapping keys
          strings, dates and times ISO strings, non-finite floats and any
          other object their ``str()`` (or ``repr()`` if that fails).

        Override it to add or drop fields; the result must stay JSON-safe.
        """
        formatter = self.formatter or _DEFAULT_FORMATTER
        message = record.getMessage()
        if self.formatter is not None:
            record.message = message
            if formatter.usesTime():
                record.asctime = formatter.formatTime(record, formatter.datefmt)
            message = formatter.formatMessage(record)
        created = datetime.datetime.fromtimestamp(record.created, tz=datetime.timezone.utc)
        item: Dict[str, Any] = {
            "timestamp": created.isoformat(timespec="microseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            "module": record.module,
            "function": record.funcName,
            "line": record.lineno,
            "thread": record.threadName,
            "process": record.process,
        }
        if record.exc_info and not record.exc_text:
            # Cached on the record, as logging.Formatter does, so that
            # other handlers do not format the same traceback again.
            record.exc_text = formatter.formatException(record.exc_info)
        if record.exc_text:
            item["exception"] = record.exc_text
        if record.stack_info:
            item["stack"] = formatter.formatStack(record.stack_info)
        extra = {
            key: _json_safe_or_text(value)
            for key, value in vars(record).items()
            if key not in _STANDARD_ATTRS
        }
        if extra:
            item["extra"] = extra
        return item

    def flush(self) -> None:
        """Deliver the records enqueued so far, waiting at most *flush_timeout* seconds.

        Called inside delivery (a dispatch that flushes logging), it does
        not wait for itself.
        """
        self.dispatcher.flush(timeout=self.flush_timeout)

    def close(self) -> None:
        """Flush, then close the handler. Idempotent.

        A dispatcher passed in is flushed but left running: it may be
        shared, and whoever created it shuts it down (or the exit hook
        delivers what is left). The dispatcher built for *url* is shut down
        within *flush_timeout*, and its sink closed once the worker has
        stopped.
        """
        with self._state_lock:  # held only for the flag, never while waiting
            first, self._closed = not self._closed, True
        try:
            if first and self._owned is not None:
                dispatcher, sink = self._owned
                if dispatcher.shutdown(timeout=self.flush_timeout):
                    sink.close()  # not while the worker may still be in a request
            elif first:
                self.dispatcher.flush(timeout=self.flush_timeout)
        finally:
            super().close()


def _feeds_back(record: logging.LogRecord) -> bool:
    """Whether shipping *record* could feed the pipeline from its own delivery."""
    name = record.name
    if name == _OWN_LOGGER or name.startswith(_OWN_PREFIX):
        return True
    return delivering()


def _check_dispatcher(dispatcher: object) -> None:
    if isinstance(dispatcher, KeyedDispatcher):
        raise TypeError(
            "dispatcher must be a BackgroundDispatcher: a KeyedDispatcher's enqueue takes a key"
        )
    missing = [name for name in ("enqueue", "flush") if not callable(getattr(dispatcher, name, None))]
    if missing:
        hint = " (in dictConfig, name it as 'ext://module.attribute')" if isinstance(dispatcher, str) else ""
        raise TypeError(
            "dispatcher must have enqueue() and flush() methods, like a BackgroundDispatcher; "
            f"got {type(dispatcher).__name__}{hint}"
        )


def _build(
    url: str, sink_options: Optional[Mapping[str, Any]], dispatcher_options: Optional[Mapping[str, Any]]
) -> Tuple[BackgroundDispatcher[Dict[str, Any]], _Closable]:
    """Build the ``BackgroundDispatcher(HttpSink(url))`` a ``url=`` handler owns."""
    # Imported here: requests is needed only by handlers built from a URL.
    from .http import HttpSink

    for name, value in (("sink_options", sink_options), ("dispatcher_options", dispatcher_options)):
        if value is not None and not isinstance(value, Mapping):
            raise TypeError(f"{name} must be a mapping of keyword arguments, got {type(value).__name__}")
    sink = HttpSink(url, **_kwargs(sink_options))
    options = {**BatchHandler.URL_DISPATCHER_DEFAULTS, **_kwargs(dispatcher_options)}
    try:
        dispatcher: BackgroundDispatcher[Dict[str, Any]] = BackgroundDispatcher(sink, **options)
    except BaseException:
        sink.close()
        raise
    return dispatcher, sink


def _kwargs(options: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    # Item by item rather than dict(options): dictConfig hands over a
    # ConvertingDict, which resolves "ext://" and "cfg://" values only in
    # __getitem__, so a nested "session": "ext://myapp.session" works.
    return {key: options[key] for key in options} if options is not None else {}


def _json_safe_or_text(value: object) -> Any:
    try:
        return _json_safe(value, 0)
    except Exception:  # noqa: BLE001 - a container that fails to iterate, say: ship its text
        return _text(value)


def _json_safe(value: object, depth: int) -> Any:
    """Return a copy of *value* that :func:`json.dumps` accepts, in strict mode too."""
    kind = type(value)
    if value is None or kind is str or kind is int or kind is bool:
        return value
    if isinstance(value, float):
        # JSON has no NaN or Infinity; float() also unwraps subclasses.
        return float(value) if math.isfinite(value) else str(value)
    if isinstance(value, int):  # an IntEnum, say: ship the number
        return int(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if depth < _MAX_DEPTH:
        if isinstance(value, Mapping):
            return {
                key if type(key) is str else _text(key): _json_safe(item, depth + 1)
                for key, item in value.items()
            }
        if isinstance(value, (list, tuple, set, frozenset)):
            return [_json_safe(item, depth + 1) for item in value]
    return _text(value)


def _text(value: object) -> str:
    """``str(value)``, falling back to ``repr`` and then to the type's name: never raises."""
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - user objects may fail in any way
        pass
    try:
        return repr(value)
    except Exception:  # noqa: BLE001
        return f"<unrepresentable {type(value).__name__}>"
