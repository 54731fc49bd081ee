"""Deliver batches to RabbitMQ with pika: :class:`RabbitMQSink`, a message per item, confirmed per batch.

.. code-block:: python

    from batchdispatch import BackgroundDispatcher, RetryPolicy
    from batchdispatch.sinks.rabbitmq import RabbitMQSink

    sink = RabbitMQSink("amqp://app:secret@mq.internal:5672/%2F", routing_key="events")
    events = BackgroundDispatcher(sink, delay=0.1, max_batch_size=500, retry=RetryPolicy(max_attempts=5))
    events.enqueue({"event": "signup", "user": 42})

Install the extra from a checkout: ``pip install ".[rabbitmq]"``. This module
owns the sink: its arguments, each item's body and properties, where a
batch goes, one connection per thread (the :class:`~._amqp._Link` of
:mod:`._amqp`), and what each message's outcome means for its item.
"""

from __future__ import annotations

import copy
import math
import threading
import time
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import pika
import pika.exceptions

from ..exceptions import DeliveryError, SerializationError
from ._amqp import LinkError, Outcome, _describe, _Link
from ._base import (
    NO_KEY,
    Failures,
    _Sink,
    check_optional_callable,
    check_url,
    deadline_left,
    json_item,
    safe_url,
)

__all__ = ["DELIVERY_MODE", "FINAL_REPLY_CODES", "RabbitMQSink"]

#: The routing key: a str, a callable of the dispatcher's key, or None (see :class:`RabbitMQSink`).
RoutingKey = Union[str, Callable[[Any], str], None]
#: Message properties: one ``pika.BasicProperties`` for every message, or a callable of the item.
Properties = Union[pika.BasicProperties, Callable[[Any], pika.BasicProperties], None]
#: ``serializer(item) -> bytes``: a message's body.
ItemSerializer = Callable[[Any], bytes]

#: The delivery mode of messages whose properties set none: 2, persistent (kept by a durable queue
#: across a broker restart).
DELIVERY_MODE = 2
#: The broker's reply codes, on closing the channel or the connection, that a later attempt
#: would get again: 403 ACCESS_REFUSED (permissions) and 404 NOT_FOUND (no such exchange).
FINAL_REPLY_CODES = frozenset({403, 404})
#: The longest exchange name or routing key AMQP carries, in bytes of UTF-8.
MAX_NAME_BYTES = 255

_NO_PROPERTIES = pika.BasicProperties()  # type: ignore[no-untyped-call]
# The links a forked child inherited: never used, never closed, never collected.
_orphans: List[_Link] = []


class RabbitMQSink(_Sink):
    """A dispatch (or deliver) callable that publishes each item of a batch as one message.

    .. code-block:: python

        from batchdispatch import KeyedDispatcher, RetryPolicy
        from batchdispatch.sinks.rabbitmq import RabbitMQSink

        # A topic exchange; the routing key is made of the dispatcher's key.
        sink = RabbitMQSink("amqp://app:secret@mq.internal:5672/%2F", exchange="audit",
                            routing_key=lambda tenant: f"audit.{tenant}")
        audit = KeyedDispatcher(sink, delay=0.5, retry=RetryPolicy(max_attempts=10, max_backoff=30))
        audit.enqueue("acme", {"who": 7, "did": "login"})

    **Messages.** Each item's body is its compact JSON (UTF-8), with
    ``content_type="application/json"`` and ``delivery_mode=2``
    (persistent), unless *properties* sets them. *serializer* makes the
    body instead, and then only *properties* gives a ``content_type``.
    Every message is published with ``mandatory=True``, in order, on the
    calling thread's own connection.

    **Where.** To *exchange* (the default exchange, ``""``, routes by queue
    name) with *routing_key*: a str; a callable of the dispatcher's key
    (the sink is then used as ``deliver(key, batch)``); or None, which is
    the key itself (a str) when the sink is called with one, and ``""``
    when it is called as ``dispatch(batch)`` (for a fanout exchange).

    **Confirms.** With *confirm* (the default) the channel is in publisher
    confirm mode: the whole batch is published at once and the call returns
    once the broker has confirmed every message, within *timeout*. Without,
    the batch ends with one round trip that the broker answers after
    routing every message: faster (nothing waits for a disk), but a message
    the broker loses after routing it goes unnoticed.

    **What fails, and whether it is retried,** per item, raised as a
    :class:`~batchdispatch.PartialFailure` when others went through (or as
    the error itself when the whole batch failed for one reason):

    * an item that cannot be serialized, or whose *properties* callable
      fails: not sent, a non-retryable
      :class:`~batchdispatch.exceptions.SerializationError`;
    * an unroutable message (returned by the broker: no queue is bound for
      its routing key): non-retryable;
    * a message the broker refused (``basic.nack``), or that had no answer
      when the connection was lost, the channel closed or *timeout* ran
      out: retryable. One without an answer may have reached its queue, so
      a retry can deliver it twice: delivery is **at least once**;
    * a channel or connection closed by the broker with a code in
      :data:`FINAL_REPLY_CODES` (no such exchange, access refused), a
      refused login or virtual host: non-retryable;
    * a routing key that cannot be made (its callable raises or returns
      something else than a str of at most 255 bytes): non-retryable, for
      the batch.

    **Connections.** pika's connections are not thread-safe, so each
    thread that calls the sink (each worker of a KeyedDispatcher) opens one
    of its own on its first batch, with one channel, and keeps it. A lost
    connection, or one that sat idle until the broker closed it, is
    noticed at the next batch and opened anew. :meth:`close` closes them
    all (those of threads that are delivering, once they are done).
    Connections run only while their thread delivers: heartbeats are not
    answered in between, so after an idle spell of twice the heartbeat
    interval (60 s by default) the broker closes the connection and the
    next batch opens another.

    **Fork.** A forked child never uses its parent's connections: it drops
    them unclosed (closing would end the parent's) and opens its own.

    The password of the URL never appears in the repr, in messages or in
    this library's logs.

    :param url: an ``amqp://`` or ``amqps://`` URL, with pika's query
        options if needed (``heartbeat``, ``connection_attempts``...).
    :param exchange: the exchange every message goes to.
    :param routing_key: a str, a callable of the key, or None (see above).
    :param properties: a ``pika.BasicProperties`` for every message, or a
        callable of the item that returns one.
    :param confirm: wait for publisher confirms (a bool).
    :param serializer: ``serializer(item) -> bytes``, the message's body.
        Default: the item as compact JSON.
    :param timeout: seconds a batch may take at most, connecting included
        (> 0); the dispatcher's deadline shortens it at exit and shutdown.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        url: str,
        *,
        exchange: str = "",
        routing_key: RoutingKey = None,
        properties: Properties = None,
        confirm: bool = True,
        serializer: Optional[ItemSerializer] = None,
        timeout: float = 30.0,
    ) -> None:
        check_url(url, ("amqp", "amqps"), "url")
        self._where = safe_url(url)
        try:
            self._parameters = pika.URLParameters(url)
        except Exception:  # noqa: BLE001 - pika's message may quote the URL; this one does not
            message = f"url is not a valid AMQP URL (see pika's URLParameters): {self._where!r}"
            raise ValueError(message) from None
        self._exchange = _check_name(exchange, "exchange")
        if routing_key is not None and not callable(routing_key):
            _check_name(routing_key, "routing_key")
        self._routing_key = routing_key
        if not (properties is None or callable(properties) or isinstance(properties, pika.BasicProperties)):
            raise TypeError(
                f"properties must be a pika.BasicProperties, a callable of the item or None, "
                f"got {type(properties).__name__}"
            )
        if not isinstance(confirm, bool):
            raise TypeError(f"confirm must be a bool, got {type(confirm).__name__}")
        self._serializer = check_optional_callable(serializer, "serializer")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number, got {type(timeout).__name__}")
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        self._confirm = confirm
        self._timeout = float(timeout)
        self._properties = properties
        # The properties of every message, when they are the same for all.
        self._fixed = None if callable(properties) else self._complete(properties)
        self._closed = False
        # The sink's one lock: it guards _links and the links' busy flags, and is held only to
        # read or change them, never while pika or your code runs.
        self._lock = threading.Lock()
        self._local = threading.local()
        # Every open link of this process, with its thread, so that close() reaches them all.
        self._links: Dict[_Link, weakref.ref[threading.Thread]] = {}
        super().__init__()

    def __repr__(self) -> str:
        if self._routing_key is None:
            key = "<the key>"
        elif callable(self._routing_key):
            key = "<callable>"
        else:
            key = repr(self._routing_key)
        confirm = "confirm" if self._confirm else "no-confirm"
        extras = [f"exchange={self._exchange!r}", f"routing_key={key}", confirm]
        if self._closed:
            extras.append("closed")
        return f"<RabbitMQSink {self._where} {' '.join(extras)}>"

    # -- connections ------------------------------------------------------------------------------

    def _link(self, deadline: float) -> _Link:
        """This thread's link, opened anew if it has none that works; marked busy, so that close()
        leaves it to this thread."""
        link: Optional[_Link] = getattr(self._local, "link", None)
        if link is not None:
            with self._lock:
                mine = link in self._links  # close() may have taken it while it was idle
                link.busy = mine
            if mine:
                try:
                    link.refresh()
                except Exception:  # noqa: BLE001 - whatever pika raised, this link is done
                    link.failure = link.failure or LinkError("the connection failed while idle", None)
            if not mine:  # close() has it, and closes it
                self._local.link = link = None
            elif not link.usable:
                self._drop(link)
                link = None
        if link is None:
            self._reap()
            link = _Link(self._parameters, self._confirm)
            link.busy = True
            with self._lock:
                self._links[link] = weakref.ref(threading.current_thread())
            self._local.link = link
            try:
                link.open(deadline)
            except BaseException:
                self._drop(link)
                raise
        return link

    def _drop(self, link: _Link, graceful: bool = True) -> None:
        """Forget this thread's *link* and close it, gracefully or not, unless close() took it first."""
        with self._lock:
            registered = self._links.pop(link, None) is not None
        if getattr(self._local, "link", None) is link:
            self._local.link = None
        if registered:
            link.close(graceful)

    def _reap(self) -> None:
        """Close the links of threads that have ended (a dispatcher shut down and started again)."""
        with self._lock:
            dead = [link for link, thread in self._links.items() if _ended(thread) and not link.busy]
            for link in dead:
                del self._links[link]
        for link in dead:
            link.close()

    def close(self) -> None:
        """Close every connection of this process; a thread delivering closes its own when done. Idempotent.

        Later calls fail with a non-retryable DeliveryError.
        """
        self._closed = True
        with self._lock:
            idle = [link for link in self._links if not link.busy]
            for link in idle:
                del self._links[link]
        for link in idle:
            link.close()

    def _forked(self) -> None:
        # The parent's links are the parent's: dropped unclosed, with the lock that guards them
        # (kept referenced, so that no finalizer of pika's runs on them here).
        _orphans.extend(self._links)
        self._lock = threading.Lock()
        self._links = {}
        self._local = threading.local()

    # -- a batch ---------------------------------------------------------------------------------

    def _deliver(self, key: Any, batch: List[Any]) -> None:
        if self._closed:
            raise DeliveryError(f"RabbitMQSink for {self._where} is closed", url=self._where, retryable=False)
        if not batch:
            return
        routing_key = self._routing_key_for(key)
        failures = Failures()
        messages, positions = self._messages(batch, failures)
        if messages:
            self._publish(routing_key, messages, positions, failures)
        failures.raise_for(batch)

    def _publish(self, routing_key: str, messages: List[Tuple[bytes, Any]], positions: List[int],
                 failures: Failures) -> None:
        left = deadline_left(self._where)
        deadline = time.monotonic() + (self._timeout if left is None else min(left, self._timeout))
        try:
            link = self._link(deadline)
        except LinkError as exc:
            failures.add_all(positions, self._error(f"could not connect: {exc}", exc.cause))
            return
        try:
            outcomes = link.publish(self._exchange, routing_key, messages, deadline)
            lost: Optional[DeliveryError] = None
            unroutable: Optional[DeliveryError] = None
            refused: Optional[DeliveryError] = None
            for position, outcome in zip(positions, outcomes):
                if outcome is Outcome.ACKED:
                    continue
                if outcome is Outcome.RETURNED:
                    unroutable = unroutable or DeliveryError(
                        f"unroutable: the exchange {self._exchange!r} on {self._where} returned the message "
                        f"for routing key {routing_key!r} {link.return_reason}",
                        url=self._where, retryable=False,
                    )
                    failures.add(position, unroutable)
                elif outcome is Outcome.NACKED:
                    refused = refused or self._error("the broker refused the message (basic.nack)", None)
                    failures.add(position, refused)
                else:
                    if lost is None:
                        lost = self._lost(link, outcome)
                    failures.add(position, lost)
            if lost is not None:
                self._drop(link, graceful=False)  # closed, timed out, or its state unknown: never used again
        except BaseException:
            self._drop(link, graceful=False)
            raise
        finally:
            with self._lock:
                link.busy = False
            if self._closed:
                self._drop(link)

    def _lost(self, link: _Link, outcome: Outcome) -> DeliveryError:
        failure = link.failure
        if failure is None:
            what = "no confirm from the broker in time" if self._confirm else "not routed in time"
            return self._error(what, None)
        if outcome is Outcome.NOT_SENT:
            what = "not sent"
        else:
            what = "not confirmed" if self._confirm else "not routed"
        if isinstance(failure, pika.exceptions.ChannelClosed):
            what += ", the channel was closed"
        elif isinstance(failure, pika.exceptions.AMQPConnectionError):
            what += ", the connection was lost"
        return self._error(f"{what}: {_describe(failure)}", failure)

    def _error(self, what: str, cause: Optional[BaseException]) -> DeliveryError:
        error = DeliveryError(f"RabbitMQ {self._where}: {what}", url=self._where, retryable=_retryable(cause))
        error.__cause__ = cause
        return error

    def _routing_key_for(self, key: Any) -> str:
        routing_key = self._routing_key
        if routing_key is None:
            if key is NO_KEY:
                return ""
            if not isinstance(key, str):
                raise DeliveryError(
                    f"routing_key=None routes by the dispatcher's key, which must then be a str, "
                    f"got {type(key).__name__}", url=self._where, retryable=False,
                )
            value = key
        elif callable(routing_key):
            if key is NO_KEY:
                raise DeliveryError(
                    "routing_key is a callable of the key: call the sink as deliver(key, batch), "
                    "from a KeyedDispatcher", url=self._where, retryable=False,
                )
            try:
                value = routing_key(key)
            except Exception as exc:  # the user's code: final for the batch
                raise DeliveryError(
                    f"routing_key({key!r}) raised {type(exc).__name__}", url=self._where, retryable=False,
                ) from exc
        else:
            return routing_key
        try:
            return _check_name(value, "routing_key")
        except (TypeError, ValueError) as exc:
            raise DeliveryError(f"{exc} (for key {key!r})", url=self._where, retryable=False) from None

    # -- messages ---------------------------------------------------------------------------------

    def _messages(self, batch: List[Any], failures: Failures) -> Tuple[List[Tuple[bytes, Any]], List[int]]:
        """Each item's body and properties, with its index; those that fail, in *failures*."""
        messages: List[Tuple[bytes, Any]] = []
        positions: List[int] = []
        fixed = self._fixed
        for index, item in enumerate(batch):
            try:
                body = self._body(item, index)
                properties = fixed if fixed is not None else self._item_properties(item, index)
            except SerializationError as exc:
                failures.add(index, exc)
                continue
            messages.append((body, properties))
            positions.append(index)
        return messages, positions

    def _body(self, item: Any, index: int) -> bytes:
        if self._serializer is None:
            return json_item(item, index, self._where)
        try:
            body = self._serializer(item)
        except Exception as exc:  # the user's code: final for this item
            raise SerializationError(
                f"the serializer raised {type(exc).__name__} on item {index} of the batch",
                url=self._where, index=index,
            ) from exc
        if not isinstance(body, (bytes, bytearray)):
            raise SerializationError(
                f"the serializer must return bytes; for item {index} of the batch it returned "
                f"{type(body).__name__}",
                url=self._where, index=index,
            )
        return bytes(body)

    def _item_properties(self, item: Any, index: int) -> Any:
        assert callable(self._properties)
        try:
            properties = self._properties(item)
        except Exception as exc:  # the user's code: final for this item
            raise SerializationError(
                f"properties() raised {type(exc).__name__} on item {index} of the batch",
                url=self._where, index=index,
            ) from exc
        if not isinstance(properties, pika.BasicProperties):
            raise SerializationError(
                f"properties() must return a pika.BasicProperties; for item {index} of the batch it returned "
                f"{type(properties).__name__}", url=self._where, index=index,
            )
        return self._complete(properties)

    def _complete(self, properties: Optional[pika.BasicProperties]) -> pika.BasicProperties:
        """A copy of *properties* with the defaults filled in where they set nothing."""
        completed = copy.copy(properties if properties is not None else _NO_PROPERTIES)
        if completed.content_type is None and self._serializer is None:
            completed.content_type = "application/json"
        if completed.delivery_mode is None:
            completed.delivery_mode = DELIVERY_MODE
        return completed


def _check_name(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError(f"{name} must encode to UTF-8") from None
    if size > MAX_NAME_BYTES:
        raise ValueError(f"{name} must be at most {MAX_NAME_BYTES} bytes of UTF-8, got {size}")
    return value


def _retryable(cause: Optional[BaseException]) -> bool:
    """Whether a later attempt may succeed where *cause* (pika's error, or None: no answer) failed."""
    while cause is not None:
        if isinstance(cause, (pika.exceptions.ProbableAuthenticationError,
                              pika.exceptions.ProbableAccessDeniedError)):
            return False
        code = getattr(cause, "reply_code", None)
        if isinstance(code, int) and code in FINAL_REPLY_CODES:
            return False
        # pika wraps what went wrong while connecting; look at what is inside.
        inner = getattr(cause, "exception", None)
        if inner is None and getattr(cause, "exceptions", None):
            inner = cause.exceptions[-1]  # type: ignore[attr-defined]
        cause = inner if isinstance(inner, BaseException) else None
    return True


def _ended(thread: weakref.ref[threading.Thread]) -> bool:
    alive = thread()
    return alive is None or not alive.is_alive()
