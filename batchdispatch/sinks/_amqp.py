"""One thread's connection to RabbitMQ for the RabbitMQ sink: a :class:`_Link`, on a pika SelectConnection.

A link is a pika ``SelectConnection`` with one channel, made, used and
closed by one thread of one process, and run only while that thread waits
on it: to open, to publish one batch and collect the broker's answers, to
close. pika's ``BlockingChannel`` waits for each publisher confirm in
turn, one round trip per message; the asynchronous channel lets a whole
batch go out at once and its confirms come back together.

What one batch's publication learns, per message (:class:`Outcome`):
confirmed (``basic.ack``), refused (``basic.nack``), returned as unroutable
(``basic.return``, for ``mandatory`` messages), not sent (the channel was
gone before its turn), or unknown (no answer before the connection was
lost or the time ran out). Without confirms, the batch ends with one
round trip (``basic.qos``), answered after the broker has routed every
message of it and returned the unroutable ones.
"""

from __future__ import annotations

import enum
import os
import time
from typing import Any, Callable, List, Optional, Tuple

import pika
import pika.exceptions
from pika.adapters.select_connection import SelectConnection

#: Seconds a link waits at most for its connection to close.
CLOSE_TIMEOUT = 1.0


class Outcome(enum.Enum):
    """What became of one message of a batch."""

    #: Sent, no answer yet (and, once the batch is over, none came).
    PENDING = "pending"
    #: The broker confirmed it (or, without confirms, routed it).
    ACKED = "acked"
    #: The broker refused it (``basic.nack``): an internal error, a full queue with ``reject-publish``.
    NACKED = "nacked"
    #: Unroutable: returned by the broker (``basic.return``); no queue holds it.
    RETURNED = "returned"
    #: Never sent: the channel had closed before its turn.
    NOT_SENT = "not_sent"


class LinkError(Exception):
    """Why a link could not open or went away; ``cause`` is pika's exception."""

    def __init__(self, message: str, cause: Optional[BaseException]) -> None:
        super().__init__(message)
        self.cause = cause


class _Link:
    """One thread's connection and channel (see the module's notes). Not thread-safe, on purpose."""

    def __init__(self, parameters: pika.URLParameters, confirm: bool) -> None:
        self.pid = os.getpid()
        self.busy = False
        self._confirm = confirm
        self._connection: Optional[SelectConnection] = None
        self._ioloop: Any = None
        self._channel: Any = None
        self._ready = False
        #: Why the connection or the channel closed, once it did.
        self.failure: Optional[BaseException] = None
        self._waiting: Optional[Callable[[], bool]] = None
        self._parameters = parameters
        # The batch being published: delivery tag of its first message, each message's outcome,
        # and what a returned message is matched with.
        self._published = 0
        self._first_tag = 1
        self._outcomes: List[Outcome] = []
        self._pending = 0
        self._low = 0
        self._messages: List[Tuple[bytes, Any]] = []
        self._returned_from = 0
        self.return_reason = ""
        self._routed = False

    # -- opening and closing ---------------------------------------------------------------------

    @property
    def usable(self) -> bool:
        connection = self._connection
        return (
            self._ready and self.failure is None and connection is not None and connection.is_open
            and self.pid == os.getpid()
        )

    def open(self, deadline: float) -> None:
        """Connect, open the channel (in confirm mode, if asked) by *deadline*; raise LinkError if not."""
        self._connection = SelectConnection(
            parameters=self._parameters, on_open_callback=self._on_open,
            on_open_error_callback=self._on_open_error, on_close_callback=self._on_close,
        )
        self._ioloop = self._connection.ioloop
        if not self._wait(lambda: self._ready or self.failure is not None, deadline):
            self.close(graceful=False)
            raise LinkError("the connection did not open in time", None)
        if self.failure is not None:
            failure = self.failure
            self.close(graceful=False)
            raise LinkError(f"the connection did not open: {_describe(failure)}", failure)

    def refresh(self) -> None:
        """Read what the broker sent while this link was idle (a close, say), without waiting."""
        connection = self._connection
        if connection is None or self.pid != os.getpid():
            return
        ioloop = connection.ioloop
        timer = ioloop.call_later(0, ioloop.stop)
        try:
            ioloop.start()
        finally:
            ioloop.remove_timeout(timer)

    def close(self, graceful: bool = True) -> None:
        """Close the connection; idempotent. *graceful*: the AMQP way first, for up to
        :data:`CLOSE_TIMEOUT` seconds; then, or at once, by closing the socket.

        In a forked child the connection is the parent's: it is only dropped.
        """
        connection, self._connection = self._connection, None
        self._ready = False
        if connection is None or self.pid != os.getpid():
            return
        closed = lambda: bool(connection.is_closed)  # noqa: E731
        try:
            if graceful and connection.is_open:
                connection.close()
                self._wait(closed, time.monotonic() + CLOSE_TIMEOUT, connection)
            if not connection.is_closed:
                # What close() does underneath, without the AMQP handshake that a broker that does not
                # answer would never finish (and that pika cannot abort while the connection opens):
                # the socket is closed, or the opening given up. pika has no public name for it.
                connection._adapter_disconnect_stream()
                self._wait(closed, time.monotonic() + CLOSE_TIMEOUT, connection)
        except Exception:  # noqa: BLE001 - closing is best effort: the link is dropped either way
            pass
        finally:
            try:
                connection.ioloop.close()
            except Exception:  # noqa: BLE001
                pass

    # -- one batch -------------------------------------------------------------------------------

    def publish(
        self, exchange: str, routing_key: str, messages: List[Tuple[bytes, Any]], deadline: float,
    ) -> List[Outcome]:
        """Publish *messages* (body, properties), mandatory; wait by *deadline* for the broker's answers."""
        count = len(messages)
        self._messages = messages
        self._outcomes = [Outcome.PENDING] * count
        self._pending = count
        self._low = 0
        self._returned_from = 0
        self._routed = False
        self._first_tag = self._published + 1
        channel = self._channel
        for position, (body, properties) in enumerate(messages):
            try:
                channel.basic_publish(exchange, routing_key, body, properties, mandatory=True)
            except pika.exceptions.AMQPError as exc:
                if self.failure is None:
                    self.failure = exc
                for rest in range(position, count):
                    self._outcomes[rest] = Outcome.NOT_SENT
                self._pending -= count - position
                break
            self._published += 1
        if self._confirm:
            self._wait(lambda: self._pending == 0 or self.failure is not None, deadline)
        elif self.failure is None:
            # One round trip: the broker answers it after routing (and returning) every message before it.
            try:
                channel.basic_qos(prefetch_count=0, callback=self._on_routed)
            except pika.exceptions.AMQPError as exc:
                self.failure = exc
            if self._wait(lambda: self._routed or self.failure is not None, deadline) and self._routed:
                self._outcomes = [
                    Outcome.ACKED if outcome is Outcome.PENDING else outcome for outcome in self._outcomes
                ]
        self._messages = []
        return self._outcomes

    # -- waiting -----------------------------------------------------------------------------------

    def _wait(
        self, done: Callable[[], bool], deadline: float, connection: Optional[SelectConnection] = None,
    ) -> bool:
        """Run the connection's loop until *done*() or *deadline*; whether *done*() came true."""
        connection = connection or self._connection
        if connection is None:
            return done()
        ioloop = connection.ioloop
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            timer = ioloop.call_later(remaining, ioloop.stop)
            self._waiting = done
            try:
                ioloop.start()
            except Exception as exc:  # noqa: BLE001 - raised by pika inside its loop: the link is broken
                if self.failure is None:
                    self.failure = exc
                self._ready = False
                return done()
            finally:
                self._waiting = None
                ioloop.remove_timeout(timer)
        return True

    def _wake(self) -> None:
        """Stop the loop if what it waits for has happened (called from pika's callbacks)."""
        if self._waiting is not None and self._waiting():
            self._ioloop.stop()

    # -- pika's callbacks --------------------------------------------------------------------------

    def _on_open(self, connection: Any) -> None:
        connection.channel(on_open_callback=self._on_channel_open)

    def _on_open_error(self, connection: Any, error: BaseException) -> None:
        self._fail(error)

    def _on_close(self, connection: Any, reason: BaseException) -> None:
        self._fail(reason)

    def _on_channel_open(self, channel: Any) -> None:
        self._channel = channel
        channel.add_on_close_callback(self._on_channel_close)
        channel.add_on_return_callback(self._on_return)
        if self._confirm:
            channel.confirm_delivery(ack_nack_callback=self._on_confirm, callback=self._on_confirm_select)
        else:
            self._ready = True
            self._wake()

    def _on_confirm_select(self, frame: Any) -> None:
        self._ready = True
        self._wake()

    def _on_channel_close(self, channel: Any, reason: BaseException) -> None:
        self._fail(reason)
        connection = self._connection
        if connection is not None and connection.is_open:
            connection.close()  # one channel per connection: a link without it is of no use

    def _fail(self, reason: BaseException) -> None:
        if self.failure is None:
            self.failure = reason
        self._ready = False
        self._wake()

    def _on_confirm(self, frame: Any) -> None:
        method = frame.method
        acked = isinstance(method, pika.spec.Basic.Ack)
        outcome = Outcome.ACKED if acked else Outcome.NACKED
        last = method.delivery_tag - self._first_tag
        outcomes = self._outcomes
        if method.multiple:
            if method.delivery_tag == 0:  # "everything so far"
                last = len(outcomes) - 1
            for position in range(max(self._low, 0), min(last + 1, len(outcomes))):
                self._settle(position, outcome)
            self._low = max(self._low, last + 1)
        elif 0 <= last < len(outcomes):
            self._settle(last, outcome)
        self._wake()

    def _settle(self, position: int, outcome: Outcome) -> None:
        if self._outcomes[position] is Outcome.PENDING:  # a returned message, confirmed next, stays returned
            self._outcomes[position] = outcome
            self._pending -= 1

    def _on_return(self, channel: Any, method: Any, properties: Any, body: bytes) -> None:
        """A message came back unroutable. Returns come in publication order, and carry no delivery
        tag: the first message from the last one matched on with this body and headers is the one."""
        headers = getattr(properties, "headers", None)
        for position in range(self._returned_from, len(self._messages)):
            sent_body, sent_properties = self._messages[position]
            if sent_body == body and getattr(sent_properties, "headers", None) == headers:
                if self._outcomes[position] is Outcome.PENDING:
                    self._pending -= 1
                self._outcomes[position] = Outcome.RETURNED
                self._returned_from = position + 1
                self.return_reason = f"({method.reply_code}) {method.reply_text}"
                break
        self._wake()

    def _on_routed(self, frame: Any) -> None:
        self._routed = True
        self._wake()


def _describe(error: BaseException) -> str:
    """pika's error, as a message may show it: its type and text (pika's texts hold no password)."""
    text = str(error) or repr(error)
    return f"{type(error).__name__}: {text[:200]}"
