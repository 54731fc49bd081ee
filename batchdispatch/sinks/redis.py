"""Deliver batches to a Redis stream: :class:`RedisStreamSink`, one pipeline of ``XADD`` per batch (redis-py).

.. code-block:: python

    from batchdispatch import BackgroundDispatcher, RetryPolicy
    from batchdispatch.sinks.redis import RedisStreamSink

    sink = RedisStreamSink("redis://127.0.0.1:6379/0", "events", maxlen=1_000_000)
    events = BackgroundDispatcher(sink, delay=0.1, max_batch_size=500, retry=RetryPolicy(max_attempts=5))
    events.enqueue({"event": "signup", "user": 42})

Install the extra from a checkout: ``pip install ".[redis]"``. This module owns
the sink: its arguments, the ``XADD`` commands it writes, how it reads their
replies to learn which entries landed, and what each failure means.
"""

from __future__ import annotations

import inspect
import itertools
import os
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.retry import Retry

from ..exceptions import DeliveryError, SerializationError
from ._base import (
    Failures,
    Target,
    _encode,
    _Sink,
    check_optional_callable,
    check_target,
    check_url,
    deadline_left,
    json_item,
    resolve,
    safe_url,
)

__all__ = ["RETRYABLE_REPLIES", "RedisStreamSink"]

#: The value types a *fields* mapping may hold, as redis-py takes them.
FieldValue = Union[str, bytes, int, float]
#: ``fields(item)``: the fields of the item's stream entry.
Fields = Callable[[Any], Mapping[Union[str, bytes], FieldValue]]

#: Error replies to an ``XADD`` that a later attempt may not get: the server
#: is out of memory, loading its data, busy with a script, a replica (during
#: a failover), or cannot persist. Any other error reply (``WRONGTYPE``,
#: ``ERR``, ``NOPERM``) fails its item for good.
RETRYABLE_REPLIES = frozenset({
    "OOM", "LOADING", "BUSY", "READONLY", "MASTERDOWN", "MISCONF", "NOREPLICAS", "TRYAGAIN",
    "CLUSTERDOWN", "MOVED", "ASK",
})
#: Seconds each socket operation of a client made from a URL may take (the URL's ``socket_timeout`` wins).
SOCKET_TIMEOUT = 10.0
#: Seconds a client made from a URL may take to connect (the URL's ``socket_connect_timeout`` wins).
CONNECT_TIMEOUT = 5.0
#: Commands sent at a time while the rest of the batch is encoded.
SEND_EVERY = 100

# redis-py raises these for some error replies, with the code taken off the message.
_CODES = {
    name: code for name, code in (
        ("OutOfMemoryError", "OOM"), ("ReadOnlyError", "READONLY"), ("NoPermissionError", "NOPERM"),
        ("MasterDownError", "MASTERDOWN"), ("ClusterDownError", "CLUSTERDOWN"), ("TryAgainError", "TRYAGAIN"),
        ("MovedError", "MOVED"), ("AskError", "ASK"), ("ExecAbortError", "EXECABORT"),
        ("NoScriptError", "NOSCRIPT"),
    )
}
# Connection errors that cannot heal by themselves: a wrong password, an ACL that refuses.
_FINAL_CONNECTION_ERRORS = tuple(
    getattr(redis.exceptions, name) for name in ("AuthenticationError", "AuthorizationError")
    if hasattr(redis.exceptions, name)
)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


class RedisStreamSink(_Sink):
    """A dispatch (or deliver) callable that appends each item of a batch to a Redis stream.

    .. code-block:: python

        import redis
        from batchdispatch import KeyedDispatcher, RetryPolicy
        from batchdispatch.sinks.redis import RedisStreamSink

        # One stream per tenant; the dispatcher's key is the tenant.
        sink = RedisStreamSink(redis.Redis(), lambda tenant: f"events:{tenant}", maxlen=100_000)
        events = KeyedDispatcher(sink, delay=0.2, retry=RetryPolicy(max_attempts=10, max_backoff=30))
        events.enqueue("acme", {"event": "login"})

    Each batch is one pipeline: an ``XADD`` per item, in order, written to
    one connection of the client's pool (:data:`SEND_EVERY` at a time, as
    they are encoded) without ``MULTI`` (a pipeline, not a transaction),
    then every reply read. Each entry
    gets an id from the server (``*``) and, by default, one field,
    ``data``, holding the item's compact JSON (UTF-8); ``fields(item)``
    returns the entry's fields instead, a mapping of str or bytes to str,
    bytes, int or float (str is sent as UTF-8). With *maxlen*, each
    ``XADD`` trims the stream to about that many entries (``MAXLEN ~``;
    exactly that many with ``approximate=False``, which costs more).

    **What fails, and whether it is retried.** The replies say which entries
    landed, so a failure fails only its own items, raised as a
    :class:`~batchdispatch.PartialFailure` while the others count as
    delivered (or as the error itself when the whole batch failed for one
    reason):

    * an item that cannot be encoded (JSON cannot represent it, *fields*
      raises or returns something else than a non-empty mapping of those
      types) is not sent: a non-retryable
      :class:`~batchdispatch.exceptions.SerializationError` naming its index;
    * an error reply fails its item: retryable for a reply in
      :data:`RETRYABLE_REPLIES` (``OOM``, ``LOADING``, ``READONLY``...),
      final otherwise (``WRONGTYPE``: the key holds something else than a
      stream; ``NOPERM``);
    * a connection error or a timeout is retryable. Entries whose replies
      were read landed; those from the first reply that did not arrive on
      (all of them, when the connection is lost while the batch is still
      being written) may or may not have landed, and fail, to be retried:
      a retry can add one of them twice. Delivery is **at least once**,
      and only entries of one batch whose replies were not read can be
      duplicated;
    * a refused password or ACL (redis-py's ``AuthenticationError``) is final.

    An entry refused for a passing reason (``OOM``, say) is retried after
    the entries that followed it in its batch had landed: only then can a
    stream's order differ from the enqueue order.

    **The client.** Pass a ``redis.Redis`` of your own, which the sink uses
    through its connection pool but never closes, or a ``redis://``,
    ``rediss://`` or ``unix://`` URL, for which the sink makes a client with
    :data:`SOCKET_TIMEOUT` and :data:`CONNECT_TIMEOUT` (unless the URL's
    query sets them) and no retries of its own, and closes it in
    :meth:`close`. The sink talks to the pool's connections itself, so a
    client's own ``retry`` applies only to connecting: a pipeline is never
    sent twice by redis-py. Safe to call from several threads at once (a
    KeyedDispatcher with several workers): each call takes a connection
    of its own from the pool.

    **Fork.** A forked child never uses its parent's connections: a client
    the sink made is made anew in the child, and redis-py's pool, yours
    included, drops the parent's connections (unclosed) in a child.

    The password of a URL never appears in the repr, in messages or in this
    library's logs.

    :param client: a ``redis.Redis``, or a URL.
    :param stream: the stream's name, or a callable that returns it for the
        dispatcher's key (the sink is then used as ``deliver(key, batch)``).
    :param fields: ``fields(item) -> mapping``: the entry's fields. Default:
        ``{"data": <the item as JSON>}``.
    :param maxlen: trim each stream to about this many entries (>= 1);
        None: never trim.
    :param approximate: trim with ``~`` (a bool): faster, and the stream may
        hold a few more entries than *maxlen*.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        client: Union[redis.Redis, str],
        stream: Target,
        *,
        fields: Optional[Fields] = None,
        maxlen: Optional[int] = None,
        approximate: bool = True,
    ) -> None:
        if isinstance(client, str):
            self._url: Optional[str] = check_url(client, ("redis", "rediss", "unix"), "client")
            self._where = safe_url(client)
            own = self._make_client()
        elif isinstance(client, redis.Redis):
            self._url = None
            self._where = _describe(client)
            own = client
        else:
            raise TypeError(f"client must be a redis.Redis or a redis:// URL, got {type(client).__name__}")
        self._stream = check_target(stream, "stream")
        self._fields = check_optional_callable(fields, "fields")
        if maxlen is not None and (isinstance(maxlen, bool) or not isinstance(maxlen, int)):
            raise TypeError(f"maxlen must be an int or None, got {type(maxlen).__name__}")
        if maxlen is not None and maxlen < 1:
            raise ValueError(f"maxlen must be at least 1, got {maxlen!r}")
        if not isinstance(approximate, bool):
            raise TypeError(f"approximate must be a bool, got {type(approximate).__name__}")
        self._maxlen = maxlen
        self._approximate = approximate
        self._trim = b"" if maxlen is None else (
            _bulk(b"MAXLEN") + (_bulk(b"~") if approximate else b"") + _bulk(b"%d" % maxlen)
        )
        self._trim_args = 0 if maxlen is None else (3 if approximate else 2)
        # (pid, client): replaced whole, so that a thread reads a pair that belongs together.
        self._state: Optional[Tuple[int, redis.Redis]] = (os.getpid(), own)
        self._closed = False
        super().__init__()

    # -- the client --------------------------------------------------------------------------

    def _make_client(self) -> redis.Redis:
        assert self._url is not None
        try:
            client: redis.Redis = redis.Redis.from_url(
                self._url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=CONNECT_TIMEOUT,
                retry=Retry(NoBackoff(), 0),
            )
        except ValueError:
            # redis-py's message may quote the URL; this one does not.
            raise ValueError(f"client is not a valid Redis URL: {self._where!r}") from None
        return client

    def _client(self) -> redis.Redis:
        state = self._state
        if state is None or self._closed:
            message = f"RedisStreamSink for {self._where} is closed"
            raise DeliveryError(message, url=self._where, retryable=False)
        pid, client = state
        if pid != os.getpid():  # forked where the fork hook did not run (uWSGI, say)
            self._forked()
            return self._client()
        return client

    def _forked(self) -> None:
        state = self._state
        if state is None:
            return
        if self._url is None:
            self._state = (os.getpid(), state[1])  # a client of yours: its pool resets itself in a child
        else:
            # The parent's client is left unclosed (its sockets are the parent's): a new one, unconnected.
            self._state = (os.getpid(), self._make_client())

    def close(self) -> None:
        """Close the client if the sink made it from a URL (yours stays open). Idempotent.

        Later calls fail with a non-retryable DeliveryError.
        """
        state, self._state = self._state, None
        self._closed = True
        if state is not None and self._url is not None and state[0] == os.getpid():
            state[1].close()

    def __repr__(self) -> str:
        stream = "<callable>" if callable(self._stream) else repr(self._stream)
        extras = [f"stream={stream}"]
        if self._maxlen is not None:
            extras.append(f"maxlen{'~' if self._approximate else '='}{self._maxlen}")
        if self._fields is not None:
            extras.append("fields=<callable>")
        if self._closed:
            extras.append("closed")
        return f"<RedisStreamSink {self._where} {' '.join(extras)}>"

    # -- a batch ---------------------------------------------------------------------------------

    def _deliver(self, key: Any, batch: List[Any]) -> None:
        client = self._client()
        if not batch:
            return
        name = resolve(self._stream, key, "stream", self._where)
        try:
            stream = name.encode("utf-8")
        except UnicodeEncodeError:
            message = "the stream's name does not encode to UTF-8"
            raise DeliveryError(message, url=self._where, retryable=False) from None
        failures = Failures()
        commands = self._commands(stream, batch, failures)
        first = next(commands, None)
        if first is not None:
            deadline_left(self._where)
            self._send(client, stream, itertools.chain((first,), commands), failures)
        failures.raise_for(batch)

    def _commands(self, stream: bytes, batch: List[Any], failures: Failures) -> Iterator[Tuple[int, bytes]]:
        """Each item's index and ``XADD`` as it goes on the wire (RESP), made as they are sent; the items
        that cannot be encoded go to *failures* instead."""
        head = _bulk(b"XADD") + _bulk(stream) + self._trim + _bulk(b"*")
        base = 3 + self._trim_args
        where = self._where
        if self._fields is None:
            # The hot path: one JSON field per entry, encoded inline.
            start = b"*%d\r\n" % (base + 2) + head + _bulk(b"data")
            encode = _encode
            for index, item in enumerate(batch):
                try:
                    value = encode(item).encode("utf-8")
                except Exception:  # noqa: BLE001 - json_item says what is wrong, naming the item
                    try:
                        value = json_item(item, index, where)
                    except SerializationError as exc:
                        failures.add(index, exc)
                        continue
                yield index, b"%s$%d\r\n%s\r\n" % (start, len(value), value)
            return
        for index, item in enumerate(batch):
            try:
                pairs = self._encode_fields(item, index)
            except SerializationError as exc:
                failures.add(index, exc)
                continue
            yield index, b"*%d\r\n" % (base + len(pairs)) + head + b"".join(map(_bulk, pairs))

    def _encode_fields(self, item: Any, index: int) -> List[bytes]:
        """``fields(item)`` as a flat list of field, value, field, value... in bytes."""
        assert self._fields is not None
        try:
            fields = self._fields(item)
        except Exception as exc:  # the user's code: final for this item
            message = f"fields() raised {type(exc).__name__} on item {index} of the batch"
            raise SerializationError(message, url=self._where, index=index) from exc
        if not isinstance(fields, Mapping) or not fields:
            got = "an empty mapping" if isinstance(fields, Mapping) else type(fields).__name__
            raise SerializationError(
                f"fields() must return a non-empty mapping; for item {index} of the batch it returned {got}",
                url=self._where, index=index,
            )
        flat: List[bytes] = []
        for name, value in fields.items():
            encoded_name, encoded_value = _field_bytes(name, value=False), _field_bytes(value, value=True)
            if encoded_name is None or encoded_value is None:
                what, wanted, got = (
                    ("a field name", "str or bytes", name) if encoded_name is None
                    else ("a field value", "str, bytes, int or float", value)
                )
                raise SerializationError(
                    f"fields() returned {what} of type {type(got).__name__} for item {index} of the batch"
                    f" (it takes {wanted}; a str must encode to UTF-8)", url=self._where, index=index,
                )
            flat += (encoded_name, encoded_value)
        return flat

    def _send(self, client: redis.Redis, stream: bytes, commands: Iterator[Tuple[int, bytes]],
              failures: Failures) -> None:
        """Send the commands :data:`SEND_EVERY` at a time as they are made, so that the server works
        while the next are encoded, then read every reply; record in *failures* what did not land."""
        pool = client.connection_pool
        sent: List[int] = []
        try:
            connection = _get_connection(pool)
        except RedisError as exc:
            failures.add_all([index for index, _ in commands], self._lost(exc, stream, "could not connect"))
            return
        try:
            chunk: List[bytes] = []
            send = connection.send_packed_command
            try:
                for index, command in commands:
                    sent.append(index)
                    chunk.append(command)
                    if len(chunk) == SEND_EVERY:
                        send([b"".join(chunk)], check_health=len(sent) == SEND_EVERY)  # the first time only
                        chunk = []
                if chunk:
                    send([b"".join(chunk)], check_health=len(sent) <= SEND_EVERY)
            except RedisError as exc:  # redis-py has closed the connection; what was sent may have landed
                error = self._lost(exc, stream, "sending failed")
                failures.add_all(sent + [index for index, _ in commands], error)
                return
            refused: Dict[str, DeliveryError] = {}
            for position, index in enumerate(sent):
                try:
                    connection.read_response()
                except ResponseError as exc:
                    failures.add(index, self._refused(exc, stream, refused))
                except RedisError as exc:  # the connection is gone (redis-py closed it): the rest is unknown
                    failures.add_all(sent[position:], self._lost(exc, stream, "a reply was lost"))
                    return
        except BaseException:
            connection.disconnect()  # replies may be left unread: never hand this connection out again
            raise
        finally:
            pool.release(connection)

    def _lost(self, exc: RedisError, stream: bytes, what: str) -> DeliveryError:
        final = isinstance(exc, _FINAL_CONNECTION_ERRORS)
        error = DeliveryError(
            f"XADD to {_show(stream)} on {self._where}: {what}: {type(exc).__name__}: {_excerpt(exc)}",
            url=self._where, retryable=not final,
        )
        error.__cause__ = exc
        return error

    def _refused(self, exc: ResponseError, stream: bytes, seen: Dict[str, DeliveryError]) -> DeliveryError:
        """The error of one refused XADD: one per distinct reply, so that a batch refused whole raises it."""
        text = _excerpt(exc)
        code = _code(exc)
        error = seen.get(code + text)
        if error is None:
            reply = text if text.startswith(code) else f"{code} {text}".rstrip()
            error = DeliveryError(
                f"XADD to {_show(stream)} on {self._where} refused: {reply}",
                url=self._where, retryable=code in RETRYABLE_REPLIES,
            )
            error.__cause__ = exc
            seen[code + text] = error
        return error


def _field_bytes(part: object, *, value: bool) -> Optional[bytes]:
    """*part* of a field (its name, or its *value*) as bytes; None if it cannot be one."""
    if isinstance(part, bytes):
        return part
    if isinstance(part, str):
        try:
            return part.encode("utf-8")
        except UnicodeEncodeError:
            return None
    if value and isinstance(part, int) and not isinstance(part, bool):
        return b"%d" % part
    if value and isinstance(part, float):
        return repr(part).encode("ascii")
    return None


def _code(exc: ResponseError) -> str:
    """The reply's error code (``WRONGTYPE``, ``OOM``...), which redis-py may have taken off the message."""
    code = getattr(exc, "status_code", None)
    if isinstance(code, str) and code:
        return code
    for cls in type(exc).__mro__:
        if cls.__name__ in _CODES:
            return _CODES[cls.__name__]
    first = str(exc).split(" ", 1)[0]
    return first if first.isupper() and first.isalpha() else "ERR"


def _excerpt(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:197] + "..."


def _show(stream: bytes) -> str:
    return repr(stream.decode("utf-8", "replace"))


def _describe(client: redis.Redis) -> str:
    """Where *client* connects, as a URL without its password."""
    kwargs = client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}"
    connection_class = getattr(client.connection_pool, "connection_class", None)
    secure = isinstance(connection_class, type) and issubclass(connection_class, redis.SSLConnection)
    scheme = "rediss" if secure else "redis"
    return f"{scheme}://{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


# redis-py 5.3 deprecated get_connection's arguments; earlier versions require the command's name.
_POOL_TAKES_NO_ARGS: Dict[type, bool] = {}


def _get_connection(pool: Any) -> Any:
    cls = type(pool)
    takes_no_args = _POOL_TAKES_NO_ARGS.get(cls)
    if takes_no_args is None:
        try:
            parameter = inspect.signature(pool.get_connection).parameters.get("command_name")
        except (TypeError, ValueError):
            parameter = None
        takes_no_args = parameter is None or parameter.default is not inspect.Parameter.empty
        _POOL_TAKES_NO_ARGS[cls] = takes_no_args
    return pool.get_connection() if takes_no_args else pool.get_connection("XADD")
