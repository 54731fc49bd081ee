"""One deadline for the whole call: the urllib3 and http.client pieces that hold it.

This module owns the thread-local deadline of the call running on this
thread and the pieces of urllib3 and requests that read it: the per-attempt
:class:`_DeadlineTimeout`, the :class:`_DeadlineReader` put under
http.client while it reads, the :class:`_DeadlineResponse` and
:class:`_DeadlineConnection` that read an answer's head by the deadline,
and the :class:`_DeadlineAdapter` that mounts them on the sessions the sinks
create. The urllib3 Retry that honours the same deadline lives in
:mod:`batchdispatch.http._retries`.
"""

from __future__ import annotations

import http.client
import io
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import requests.adapters
import urllib3.connection
from urllib3.util import Timeout as _Urllib3Timeout

# -- one deadline for the whole call ------------------------------------------
#
# requests offers a timeout per attempt only, and urllib3 retries (and sleeps
# between them) inside session.post. The sink bounds the whole call by a
# deadline that two urllib3 hooks read: the Timeout of every attempt (shortened
# to the time left) and the Retry (which stops retrying rather than sleep past
# the deadline or for a Retry-After). The Retry is shared by every thread that
# uses the session, so the deadline of the call running on this thread is kept
# in a thread-local.

_call = threading.local()
#: The shortest wait handed to a socket: 0 would make it non-blocking.
_MIN_WAIT = 0.001


def _time_left(limit: Optional[float]) -> Optional[float]:
    deadline: Optional[float] = getattr(_call, "deadline", None)
    if deadline is None:
        return limit
    left = max(_MIN_WAIT, deadline - time.monotonic())
    return left if limit is None else min(limit, left)


class _DeadlineTimeout(_Urllib3Timeout):
    """A urllib3 Timeout whose connect and read timeouts never reach past *deadline*."""

    def __init__(self, connect: float, read: float, deadline: float) -> None:
        super().__init__(connect=connect, read=read)
        self._deadline = deadline

    def clone(self) -> _DeadlineTimeout:  # urllib3 clones it for every attempt
        return _DeadlineTimeout(self._connect, self._read, self._deadline)  # type: ignore[arg-type]

    def _bounded(self, value: float) -> float:
        return min(value, max(_MIN_WAIT, self._deadline - time.monotonic()))

    @property
    def connect_timeout(self) -> float:
        return self._bounded(self._connect)  # type: ignore[arg-type]

    @property
    def read_timeout(self) -> float:
        return self._bounded(self._read)  # type: ignore[arg-type]


def _cached_class(cache: Dict[type, type], base: type, make: Callable[[], type]) -> type:
    """The class *make* builds for *base*, built once. No lock: a fork must not find one held;
    two threads that race may both build one, and ``setdefault`` keeps the first."""
    cls = cache.get(base)
    if cls is None:
        cls = cache.setdefault(base, make())
    return cls


class _DeadlineReader:
    """The buffered reader of a socket (``sock.makefile("rb")``), but every read ends by *deadline*.

    http.client reads the status line, the headers and a chunked body's
    size lines with ``readline``, which receives until it sees a newline:
    each receive may take the socket's whole timeout, and a line may be
    64 KiB long, so a server sending a byte at a time holds it for hours.
    Here every method receives at most once per step, with the socket's
    timeout set to the time left, and raises :class:`socket.timeout` once
    the deadline has passed. Bytes already buffered stay where they were.
    """

    def __init__(self, inner: io.BufferedReader, sock: socket.socket, deadline: float) -> None:
        self.inner = inner
        self._sock = sock
        self._deadline = deadline

    def _arm(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("the call's deadline has passed")
        self._sock.settimeout(left)

    def peek(self, size: int = 0) -> bytes:
        self._arm()
        return self.inner.peek(size)

    def read1(self, size: int = -1) -> bytes:
        self._arm()
        return self.inner.read1(size)

    def read(self, size: Optional[int] = -1) -> bytes:
        parts: List[bytes] = []
        got = 0
        while size is None or size < 0 or got < size:
            part = self.read1(-1 if size is None or size < 0 else size - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        return b"".join(parts)

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        got = 0
        while got < len(view):
            self._arm()
            count = self.inner.readinto1(view[got:])
            if not count:
                break
            got += count
        return got

    def readline(self, size: Optional[int] = -1) -> bytes:
        parts: List[bytes] = []
        got = 0
        while size is None or size < 0 or got < size:
            ahead = self.peek(1)  # what is buffered, or one receive
            if not ahead:
                break
            take = len(ahead) if size is None or size < 0 else min(len(ahead), size - got)
            end = ahead.find(b"\n", 0, take)
            if end >= 0:
                take = end + 1
            parts.append(self.inner.read(take))  # buffered: no receive
            got += take
            if end >= 0:
                break
        return b"".join(parts)

    def fileno(self) -> int:
        return self.inner.fileno()

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()

    @property
    def closed(self) -> bool:
        return self.inner.closed


class _DeadlineResponse(http.client.HTTPResponse):
    """An http.client response whose status line and headers are read by the call's deadline.

    urllib3 reads them in ``getresponse``, before the sink sees the
    answer; a :class:`_DeadlineReader` is put under the response for that
    while, with the deadline of the call running on this thread.
    """

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self._deadline_sock = sock

    def begin(self) -> None:
        deadline: Optional[float] = getattr(_call, "deadline", None)
        inner = self.fp
        if deadline is None or inner is None:
            super().begin()
            return
        self.fp = _DeadlineReader(inner, self._deadline_sock, deadline)  # type: ignore[assignment]
        try:
            super().begin()
        finally:
            if self.fp is not None:
                self.fp = inner


class _DeadlineConnection(urllib3.connection.HTTPConnection):
    """A urllib3 connection that reads answers with :class:`_DeadlineResponse`.

    It also sets the socket's timeout before sending on a reused
    connection, as urllib3 2.x does and 1.26 does not (1.26 would send with
    whatever timeout the previous answer left).
    """

    response_class = _DeadlineResponse

    def request(self, *args: Any, **kwargs: Any) -> None:
        if self.sock is not None:
            self.sock.settimeout(self.timeout)
        super().request(*args, **kwargs)


_pool_classes: Dict[type, type] = {}


def _deadline_pool(base: Any) -> type:
    """A subclass of the connection pool class *base* whose connections are :class:`_DeadlineConnection`."""
    if issubclass(base.ConnectionCls, _DeadlineConnection):
        return base  # type: ignore[no-any-return]

    def make() -> type:
        # A subclass of the pool's own connection class keeps what it does (TLS, SOCKS).
        own = base.ConnectionCls
        connection = type(f"_Deadline{own.__name__}", (_DeadlineConnection, own), {})
        return type(f"_Deadline{base.__name__}", (base,), {"ConnectionCls": connection})

    return _cached_class(_pool_classes, base, make)


class _DeadlineAdapter(requests.adapters.HTTPAdapter):
    """The HTTPAdapter of a session the sink creates: its pools' connections are _DeadlineConnections."""

    @staticmethod
    def _bound(manager: Any) -> Any:
        classes = getattr(manager, "pool_classes_by_scheme", None)
        if isinstance(classes, dict):
            manager.pool_classes_by_scheme = {scheme: _deadline_pool(cls) for scheme, cls in classes.items()}
        return manager

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self._bound(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        return self._bound(super().proxy_manager_for(proxy, **proxy_kwargs))
