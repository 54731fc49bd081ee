"""The scriptable HTTP receiver behind :class:`batchdispatch.testing.Receiver`.

Private: import it from :mod:`batchdispatch.testing`. It lives apart so
that the pytest plugin can use it without importing the public module,
which hands the plugin's fixtures out (no import cycle).
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
    Deque,
    Dict,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
    Union,
)

from ._signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from ._standard_webhooks import WEBHOOK_SIGNATURE, Secret, verify_webhook, webhook_keys


@dataclasses.dataclass(frozen=True)
class Response:
    """One scripted answer of a :class:`Receiver`.

    .. code-block:: python

        from batchdispatch.testing import Receiver, Response

        with Receiver() as receiver:  # a 429 first, then a 200
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
    :ivar verified: with a receiver secret, whether the signature checked
        out (Standard Webhooks, or the ``X-Webhook-Signature`` of 0.1); None
        without a secret.
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
    With a *secret*, requests are checked: one with a ``webhook-signature``
    header with :func:`~batchdispatch.webhooks.verify_webhook` (Standard
    Webhooks, the sinks' default), one with ``X-Webhook-Signature`` with
    :func:`~batchdispatch.webhooks.verify_signature` (``signature="x-webhook"``).
    A request that fails the check is answered 401 without consuming a
    scripted answer, and its items are not kept. With *max_body_bytes*, a
    larger body is answered 413 the same way, as an ingest API with a
    size limit does.

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

    :param secret: check signatures with this secret, or any of a list of
        them (None: do not check). A ``whsec_<base64>`` secret is the key it
        encodes for Standard Webhooks, and used as it is for ``X-Webhook-Signature``,
        as the sinks do.
    :param host: the address to bind.
    :param port: the port to bind (0: any free port).
    :param tolerance: seconds of timestamp difference accepted by the check.
    :param ssl_context: serve HTTPS with this server-side context (the URL
        then starts with ``https://``).
    :param max_body_bytes: answer 413 to a request whose body, as received
        (before gzip decoding), is larger (None: no limit).

    .. versionadded:: 0.2.0
       Public, in :mod:`batchdispatch.testing`.
    """

    def __init__(
        self,
        *,
        secret: Optional[Secret] = None,
        host: str = "127.0.0.1",
        port: int = 0,
        tolerance: float = 300,
        ssl_context: Optional[ssl.SSLContext] = None,
        max_body_bytes: Optional[int] = None,
    ) -> None:
        if secret is not None:
            webhook_keys(secret)  # a bad secret is an error here, not on a connection thread
        if max_body_bytes is not None and (
            isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1
        ):
            raise ValueError(f"max_body_bytes must be a positive int or None, got {max_body_bytes!r}")
        self._secret = secret
        self._max_body_bytes = max_body_bytes
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
        too_large = self._max_body_bytes is not None and len(raw) > self._max_body_bytes
        verified: Optional[bool] = None
        if self._secret is not None and not too_large:
            verified = _verified(body, headers, self._secret, self._tolerance)
        with self._cond:
            if too_large:
                response = Response(413, body=b"request body too large")
            elif verified is False:
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


def _verified(body: bytes, headers: Mapping[str, str], secret: Secret, tolerance: float) -> bool:
    """Whether the request is signed with *secret* (or one of them), in whichever scheme it uses."""
    if WEBHOOK_SIGNATURE in headers:
        return verify_webhook(body, headers, secret, tolerance=tolerance)
    signature = headers.get(SIGNATURE_HEADER.lower())
    if signature is None:
        return False
    secrets = secret if isinstance(secret, (list, tuple)) else (secret,)
    timestamp = headers.get(TIMESTAMP_HEADER.lower(), "")
    return any(verify_signature(body, signature, one, timestamp, tolerance) for one in secrets)


# -- recording sinks -------------------------------------------------------------

#: What a sink can be told to raise: an exception, or a function of the batch that returns one.
