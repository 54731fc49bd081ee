"""Test helpers for code that uses batchdispatch: a real HTTP receiver and recording sinks.

Use them to test your own integration, as the project tests itself:

* :class:`Receiver` is a real HTTP server on 127.0.0.1 that records every
  request, answers as you script it (status, headers, a delay) and checks
  webhook signatures. Point an :class:`~batchdispatch.http.HttpSink`, a
  Flask or Django app, or any HTTP client at its :attr:`~Receiver.url`.
* :class:`RecordingSink` is a dispatch callable for
  :class:`~batchdispatch.BackgroundDispatcher` that keeps the batches it
  was given and fails when told to; :class:`KeyedRecordingSink` is the same
  for :class:`~batchdispatch.KeyedDispatcher`'s ``deliver(key, batch)``.
* The pytest fixtures ``receiver`` (a started :class:`Receiver`, closed
  after the test) and ``recording_sink`` (a fresh :class:`RecordingSink`)
  come with the package: installing batchdispatch registers them through
  a ``pytest11`` entry point, so no ``conftest.py`` is needed. They can
  also be imported from here (``from batchdispatch.testing import
  receiver``). pytest is imported only then: this module itself needs
  nothing but the standard library, and the fixtures are left out of
  ``__all__`` so that ``from batchdispatch.testing import *`` never
  imports pytest.

.. code-block:: python

    from batchdispatch import BackgroundDispatcher
    from batchdispatch.testing import RecordingSink

    sink = RecordingSink()
    dispatcher = BackgroundDispatcher(sink, delay=0.01)
    dispatcher.enqueue({"event": "signup"})
    assert dispatcher.flush(timeout=5)       # a sync point: no sleep
    assert sink.items == [{"event": "signup"}]
    dispatcher.shutdown(timeout=5)

Assert after a sync point (``flush()``, ``shutdown()``,
:meth:`Receiver.wait_for_items`, :meth:`RecordingSink.wait_for_items`),
never after a bare sleep.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import http.server
import json
import socket
import ssl
import threading
import time
import zlib
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Generic,
    Hashable,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
    TypeVar,
    Union,
)

from ._signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from .exceptions import PartialFailure

__all__ = [
    "KeyedRecordingSink",
    "ReceivedRequest",
    "Receiver",
    "RecordingSink",
    "Response",
]

T = TypeVar("T")

@dataclasses.dataclass(frozen=True)
class Response:
    """One scripted answer of a :class:`Receiver`.

    .. code-block:: python

        receiver.respond(Response(429, headers={"Retry-After": "1"}), Response(200))

    :param status: the HTTP status code.
    :param headers: extra response headers.
    :param body: the response body.
    :param delay: seconds to wait before answering (to test client timeouts);
        :meth:`Receiver.close` cuts the wait short.
    """

    status: int = 200
    headers: Optional[Mapping[str, str]] = None
    body: bytes = b""
    delay: float = 0.0


@dataclasses.dataclass(frozen=True)
class ReceivedRequest:
    """A request as the :class:`Receiver` saw it.

    :ivar method: ``"POST"``, ``"PUT"``, ...
    :ivar path: the request target, query string included.
    :ivar headers: a plain dict with **lower-case** keys (``headers["x-webhook-id"]``);
        repeated headers are joined with ``", "``.
    :ivar body: the body, after gzip decoding when ``Content-Encoding: gzip``.
    :ivar items: the decoded JSON value, or None if the body is not JSON.
    :ivar verified: with a receiver secret, whether the signature checked out;
        None without a secret.
    :ivar status: the status code the receiver answered with.
    :ivar received_at: ``time.monotonic()`` when the request had been read.
    """

    method: str
    path: str
    headers: Dict[str, str]
    body: bytes
    items: Any
    verified: Optional[bool]
    status: int = 200
    received_at: float = 0.0


class _Handler(http.server.BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive, as a requests.Session expects;
    # Receiver.close() cuts idle ones so their threads end.
    protocol_version = "HTTP/1.1"
    server_version = "batchdispatch-receiver"
    # Headers and body go out in one write; without this, Nagle's algorithm
    # and delayed ACKs add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True
    # A last resort against a client that holds a connection open forever.
    timeout = 60
    server: _Server

    def _handle(self) -> None:
        receiver = self.server.receiver
        raw = self._read_body()
        if raw is None:
            self.close_connection = True
            self._answer(Response(400, body=b"bad request body"))
            return
        receiver._handle(self, raw)

    def _read_body(self) -> Optional[bytes]:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: List[bytes] = []
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    return None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return None
        return self.rfile.read(length) if length > 0 else b""

    def _answer(self, response: Response) -> None:
        lines = [f"{self.protocol_version} {response.status} {self.responses.get(response.status, ('',))[0]}"]
        headers = {k.lower(): (k, v) for k, v in (response.headers or {}).items()}
        headers.setdefault("content-length", ("Content-Length", str(len(response.body))))
        if self.close_connection:
            headers["connection"] = ("Connection", "close")
        lines += [f"{name}: {value}" for name, value in headers.values()]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + response.body)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests, demo and bench do not want a line per request


class _Server(http.server.HTTPServer):
    """An HTTPServer with a thread per connection that it tracks, cuts and joins."""

    def __init__(
        self, address: Tuple[str, int], receiver: Receiver, ssl_context: Optional[ssl.SSLContext],
    ) -> None:
        self.receiver = receiver
        self._ssl_context = ssl_context
        self._conn_lock = threading.Lock()
        self._conns: Set[socket.socket] = set()
        self._threads: Set[threading.Thread] = set()
        super().__init__(address, _Handler)

    # socketserver.ThreadingMixIn does not join daemon threads on every
    # supported Python, and never ends those blocked on an idle keep-alive
    # connection, so the threads are managed here instead.
    def process_request(self, request: Any, client_address: Any) -> None:
        if self._ssl_context is not None:
            # The handshake happens on the first read, on the connection's thread,
            # so a client that rejects the certificate cannot stall the accept loop.
            request = self._ssl_context.wrap_socket(request, server_side=True, do_handshake_on_connect=False)
        thread = threading.Thread(
            target=self._serve_connection, args=(request, client_address),
            name=f"batchdispatch-receiver:{self.server_address[1]}:conn", daemon=True,
        )
        with self._conn_lock:
            self._conns.add(request)
            self._threads.add(thread)
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - a client hanging up mid-request is not our problem
            pass
        finally:
            with self._conn_lock:
                self._conns.discard(request)
                self._threads.discard(threading.current_thread())
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # quiet, as log_message

    def close_connections(self, timeout: float) -> None:
        with self._conn_lock:
            conns, threads = list(self._conns), list(self._threads)
        for conn in conns:
            try:  # wakes a handler blocked reading the next keep-alive request
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


class Receiver:
    """A real HTTP server on 127.0.0.1 that records requests and answers as scripted.

    Each request is recorded (see :class:`ReceivedRequest`) before it is
    answered, so once a client has its response the request is already in
    :attr:`requests`. Answers come from :meth:`respond`, in order, then 200.
    With a *secret*, requests are checked with :func:`verify_signature`;
    a request that fails the check is answered 401 without consuming a
    scripted answer, and its items are not kept.

    .. code-block:: python

        import requests
        from batchdispatch.testing import Receiver

        with Receiver() as receiver:
            receiver.respond(503)                            # the next answer; then 200
            assert requests.post(receiver.url, json=[1]).status_code == 503
            assert requests.post(receiver.url, json=[2, 3]).status_code == 200
            assert receiver.wait_for_items(2, timeout=5)
            assert receiver.items == [2, 3]                  # only 2xx answers count

    It is quiet (no log line per request), keeps connections alive, and
    :meth:`close` ends every thread it started, idle keep-alive connections
    included.

    :param secret: check signatures with this secret (None: do not check).
    :param host: the address to bind.
    :param port: the port to bind (0: any free port).
    :param tolerance: seconds of timestamp difference accepted by the check.
    :param ssl_context: serve HTTPS with this server-side context (the URL
        then starts with ``https://``).

    .. versionadded:: 0.2.0
       Public, in :mod:`batchdispatch.testing`.
    """

    def __init__(
        self,
        *,
        secret: Union[str, bytes, None] = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tolerance: float = 300,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        self._secret = secret
        self._ssl_context = ssl_context
        self._host = host
        self._port = port
        self._tolerance = tolerance
        self._cond = threading.Condition()
        self._script: Deque[Response] = collections.deque()
        self._requests: List[ReceivedRequest] = []
        self._items: List[Any] = []
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None
        self._closing = threading.Event()

    def __repr__(self) -> str:
        state = "closed" if self._closing.is_set() else "running" if self._server else "not started"
        where = self.url if self._server is not None else f"http://{self._host}:{self._port}/"
        return f"<Receiver {where} {state}, {self.request_count} requests>"

    # -- lifecycle ------------------------------------------------------

    def start(self) -> Receiver:
        """Bind and serve on a background thread; returns self. Idempotent."""
        if self._server is not None:
            return self
        if self._closing.is_set():
            raise RuntimeError("this Receiver is closed; make a new one")
        server = _Server((self._host, self._port), self, self._ssl_context)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"batchdispatch-receiver:{server.server_address[1]}", daemon=True,
        )
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving, cut open connections and join every thread. Idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()  # also ends scripted delays early
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()  # no new connections after this returns
        server.server_close()
        server.close_connections(timeout)
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- scripting and results -----------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError("the Receiver is not running; call start() first")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``"http://127.0.0.1:<port>/"`` (after :meth:`start`)."""
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{self._host}:{self.port}/"

    def respond(self, *responses: Union[Response, int]) -> None:
        """Queue answers for the next requests, in order; 200 once they run out."""
        script = [r if isinstance(r, Response) else Response(status=int(r)) for r in responses]
        with self._cond:
            self._script.extend(script)

    @property
    def requests(self) -> List[ReceivedRequest]:
        """Every request so far, in arrival order (a copy)."""
        with self._cond:
            return list(self._requests)

    @property
    def items(self) -> List[Any]:
        """The items of requests answered 2xx, in order (a copy).

        A JSON array contributes its elements; any other JSON value itself.
        """
        with self._cond:
            return list(self._items)

    @property
    def request_count(self) -> int:
        """Requests so far, without copying them."""
        with self._cond:
            return len(self._requests)

    @property
    def item_count(self) -> int:
        """Items of 2xx requests so far, without copying them."""
        with self._cond:
            return len(self._items)

    def clear(self) -> None:
        """Forget recorded requests and items (scripted answers stay)."""
        with self._cond:
            self._requests.clear()
            self._items.clear()

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until *count* requests have arrived; False if *timeout* passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._requests) >= count, timeout)

    def wait_for_items(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until *count* items were accepted; False if *timeout* passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._items) >= count, timeout)

    # -- request handling (on connection threads) -----------------------

    def _handle(self, handler: _Handler, raw: bytes) -> None:
        headers: Dict[str, str] = {}
        for name, value in handler.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        body = raw
        if headers.get("content-encoding", "").lower() == "gzip":
            try:
                body = gzip.decompress(raw)
            except (OSError, EOFError, zlib.error):
                body = raw
        try:
            items: Any = json.loads(body) if body else None
        except ValueError:
            items = None
        verified: Optional[bool] = None
        if self._secret is not None:
            verified = verify_signature(
                body, headers.get(SIGNATURE_HEADER.lower(), ""), self._secret,
                headers.get(TIMESTAMP_HEADER.lower(), ""), self._tolerance,
            )
        with self._cond:
            if verified is False:
                response = Response(401, body=b"bad signature")
            else:
                response = self._script.popleft() if self._script else Response()
            self._requests.append(ReceivedRequest(
                method=handler.command, path=handler.path, headers=headers, body=body, items=items,
                verified=verified, status=response.status, received_at=time.monotonic(),
            ))
            if response.delay <= 0:
                self._accept(response, items)
            self._cond.notify_all()
        if response.delay > 0:
            if self._closing.wait(response.delay):
                handler.close_connection = True
                return  # closing: hang up without answering, and without accepting
            with self._cond:
                self._accept(response, items)
        # Recorded before answering: once a client has its answer, the test can assert.
        handler._answer(response)

    def _accept(self, response: Response, items: Any) -> None:
        if 200 <= response.status < 300 and items is not None:
            if isinstance(items, list):
                self._items.extend(items)
            else:
                self._items.append(items)
            self._cond.notify_all()


# -- recording sinks -------------------------------------------------------------

#: What a sink can be told to raise: an exception, or a function of the batch that returns one.
Failure = Union[BaseException, Callable[[List[Any]], BaseException]]

#: The key of a failure scripted for calls of every key.
_EVERY_KEY: Any = object()


@dataclasses.dataclass
class _Scripted:
    """One failure told to a sink: raised on *remaining* calls of *key* (None: on all)."""

    failure: Failure
    remaining: Optional[int]
    key: Any


def _check_failure(failure: object, times: Optional[int]) -> None:
    if not isinstance(failure, BaseException) and not callable(failure):
        raise TypeError(f"failure must be an exception or a callable, got {type(failure).__name__}")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError(f"times must be None or an int >= 1, got {times!r}")


def _delivered(batch: List[T], error: Optional[BaseException]) -> List[T]:
    """The items of *batch* the dispatcher counts as delivered after a call that raised *error*."""
    if error is None:
        return batch
    if not isinstance(error, PartialFailure):
        return []
    rest = list(batch)
    for failed in error.failed_items:
        for index, item in enumerate(rest):
            if item is failed or item == failed:
                del rest[index]
                break
    return rest


class _Recording:
    """What both recording sinks share: the condition, the failure script and the waits.

    Every attribute is guarded by ``_cond``. The sinks record a call before
    they raise or return, and notify once the call's items are counted, so
    a wait that returns True has seen every call it counted.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._script: List[_Scripted] = []
        self._calls = 0
        self._delivered_count = 0

    def _schedule(self, failure: Failure, times: Optional[int], key: Any) -> None:
        _check_failure(failure, times)
        with self._cond:
            self._script.append(_Scripted(failure, times, key))

    def succeed(self) -> None:
        """Forget every failure told with ``fail()`` and not raised yet: later calls succeed."""
        with self._cond:
            self._script.clear()

    def _next_failure_locked(self, key: Any) -> Optional[Failure]:
        for index, scripted in enumerate(self._script):
            if scripted.key is _EVERY_KEY or scripted.key == key:
                if scripted.remaining is not None:
                    scripted.remaining -= 1
                    if scripted.remaining == 0:
                        del self._script[index]
                return scripted.failure
        return None

    def wait_for_batches(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until the sink was called *count* times; False if *timeout* passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._calls >= count, timeout)

    def wait_for_items(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until *count* items were delivered (see ``items``); False if *timeout* passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._delivered_count >= count, timeout)

    def _fail_or_return(self, failure: Optional[Failure], batch: List[Any]) -> Optional[BaseException]:
        # Built outside the lock: a failure function is the test's own code.
        if failure is None:
            return None
        error = failure if isinstance(failure, BaseException) else failure(list(batch))
        # A fresh traceback each time the same instance is raised; it would grow otherwise.
        return error.with_traceback(None)


class RecordingSink(_Recording, Generic[T]):
    """A dispatch callable that keeps every batch it is given and fails when told to.

    Pass it to :class:`~batchdispatch.BackgroundDispatcher` as *dispatch*,
    then assert after a sync point (``flush()``, ``shutdown()`` or
    :meth:`wait_for_items`). It is thread-safe, and it records a copy of
    each batch, so the dispatcher reusing or changing its list changes
    nothing here.

    .. code-block:: python

        from batchdispatch import BackgroundDispatcher, RetryPolicy
        from batchdispatch.testing import RecordingSink

        sink = RecordingSink()
        sink.fail(ConnectionError("down"), times=2)  # the first two calls raise
        dispatcher = BackgroundDispatcher(sink, delay=0.01,
                                          retry=RetryPolicy(max_attempts=3, backoff=0.01))
        dispatcher.enqueue("a")
        dispatcher.enqueue("b")
        assert dispatcher.flush(timeout=5)
        assert sink.batches == [["a", "b"]] * 3      # every call, the failed ones too
        assert sink.items == ["a", "b"]               # what was delivered
        dispatcher.shutdown(timeout=5)

    .. versionadded:: 0.2.0
    """

    def __init__(self) -> None:
        super().__init__()
        self._batches: List[List[T]] = []
        self._items: List[T] = []

    def __repr__(self) -> str:
        with self._cond:
            return (f"<RecordingSink batches={len(self._batches)} delivered={len(self._items)}"
                    f" failures_scripted={len(self._script)}>")

    def __call__(self, batch: List[T]) -> None:
        """Record *batch*, then raise the next scripted failure, if any."""
        batch = list(batch)
        with self._cond:
            self._batches.append(batch)
            failure = self._next_failure_locked(_EVERY_KEY)
        error = self._fail_or_return(failure, batch)
        with self._cond:
            delivered = _delivered(batch, error)
            self._items.extend(delivered)
            self._calls += 1
            self._delivered_count += len(delivered)
            self._cond.notify_all()
        if error is not None:
            raise error

    def fail(self, failure: Failure, *, times: Optional[int] = 1) -> None:
        """Make the next *times* calls raise *failure* (None: every call until :meth:`succeed`).

        *failure* is an exception, raised as it is, or a function that takes
        the batch and returns the exception to raise:

        .. code-block:: python

            sink.fail(TimeoutError("slow"))                            # the next call
            sink.fail(lambda batch: PartialFailure(batch[:1]), times=None)  # each call: its first item

        Failures told one after the other are raised in that order.

        :raises TypeError: if *failure* is neither an exception nor callable.
        :raises ValueError: if *times* is not None or an int >= 1.
        """
        self._schedule(failure, times, _EVERY_KEY)

    @property
    def batches(self) -> List[List[T]]:
        """Every batch the sink was called with, in call order, failed calls included (a copy)."""
        with self._cond:
            return [list(batch) for batch in self._batches]

    @property
    def items(self) -> List[T]:
        """The items the dispatcher counts as delivered, in order (a copy).

        That is every item of a call that returned, and of a call that raised
        :class:`~batchdispatch.PartialFailure`, the items not among its
        ``failed_items``; a call that raised anything else delivered nothing.
        """
        with self._cond:
            return list(self._items)

    def clear(self) -> None:
        """Forget the recorded batches and items (scripted failures stay)."""
        with self._cond:
            self._batches.clear()
            self._items.clear()
            self._calls = self._delivered_count = 0


class KeyedRecordingSink(_Recording, Generic[T]):
    """A ``deliver(key, batch)`` callable for :class:`~batchdispatch.KeyedDispatcher` that records its calls.

    The keyed twin of :class:`RecordingSink`: it keeps each ``(key, batch)``
    pair, and a failure can be told for one key, so that a test can check
    that a failing endpoint does not hold the others back. It is
    thread-safe: the dispatcher calls it from several workers at once.

    .. code-block:: python

        from batchdispatch import KeyedDispatcher
        from batchdispatch.testing import KeyedRecordingSink

        sink = KeyedRecordingSink()
        sink.fail(ConnectionError("down"), key="b", times=None)   # "b" always fails
        hooks = KeyedDispatcher(sink, delay=0.01)
        hooks.enqueue("a", 1)
        hooks.enqueue("b", 2)
        assert hooks.flush(timeout=5)
        assert sink.items_for("a") == [1]
        assert sink.items_for("b") == []
        hooks.shutdown(timeout=5)

    .. versionadded:: 0.2.0
    """

    def __init__(self) -> None:
        super().__init__()
        self._batches: List[Tuple[Any, List[T]]] = []
        self._items: List[Tuple[Any, T]] = []

    def __repr__(self) -> str:
        with self._cond:
            return (f"<KeyedRecordingSink batches={len(self._batches)} delivered={len(self._items)}"
                    f" failures_scripted={len(self._script)}>")

    def __call__(self, key: Hashable, batch: List[T]) -> None:
        """Record *key* and *batch*, then raise the next failure scripted for *key*, if any."""
        batch = list(batch)
        with self._cond:
            self._batches.append((key, batch))
            failure = self._next_failure_locked(key)
        error = self._fail_or_return(failure, batch)
        with self._cond:
            delivered = _delivered(batch, error)
            self._items.extend((key, item) for item in delivered)
            self._calls += 1
            self._delivered_count += len(delivered)
            self._cond.notify_all()
        if error is not None:
            raise error

    def fail(self, failure: Failure, *, times: Optional[int] = 1, key: Any = _EVERY_KEY) -> None:
        """Make the next *times* calls (of *key*, if given) raise *failure*.

        As :meth:`RecordingSink.fail`; *times* None fails every call (of
        *key*) until :meth:`succeed`. A call raises the first failure told
        that matches its key.
        """
        self._schedule(failure, times, key)

    @property
    def batches(self) -> List[Tuple[Any, List[T]]]:
        """Every call as a ``(key, batch)`` pair, in call order, failed calls included (a copy)."""
        with self._cond:
            return [(key, list(batch)) for key, batch in self._batches]

    @property
    def items(self) -> List[T]:
        """The items counted as delivered, all keys together, in order (a copy).

        As :attr:`RecordingSink.items`; :meth:`items_for` picks one key.
        """
        with self._cond:
            return [item for _, item in self._items]

    def items_for(self, key: Hashable) -> List[T]:
        """The items of *key* counted as delivered, in order (a copy)."""
        with self._cond:
            return [item for k, item in self._items if k == key]

    def clear(self) -> None:
        """Forget the recorded calls and items (scripted failures stay)."""
        with self._cond:
            self._batches.clear()
            self._items.clear()
            self._calls = self._delivered_count = 0


def __getattr__(name: str) -> Any:
    # The fixtures live in the pytest plugin, imported only when asked for,
    # so that this module never imports pytest by itself.
    if name in ("receiver", "recording_sink"):
        from . import _pytest_plugin

        return getattr(_pytest_plugin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
