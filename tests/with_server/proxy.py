"""A TCP proxy between a sink and a real server, that breaks one connection where a test says.

The server is real and so is the network: the proxy only stops passing the
server's bytes at a chosen point of the first connection whose client
sends a chosen byte string, the way a connection lost at that moment
would. Every other connection passes through untouched.

* ``cut_after_replies(trigger, replies, requests)``: once the client has
  sent *trigger* (a Redis command's name, say), pass that many complete
  RESP replies back and, once the client has sent *requests* triggers in
  all, close the client's side, as a connection reset would, with the
  rest of the replies unread (the server still gets everything sent);
* ``swallow_after(trigger)``: once the client has sent *trigger*, pass
  nothing more back (the server's answers, heartbeats included, are lost).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import List, Optional

from ..services import HOST


def reply_ends(data: bytes) -> List[int]:
    """Where each complete RESP reply of *data* ends: replies of one line (``+``, ``-``, ``:``) or bulk
    strings (``$``), the only ones an ``XADD`` gets."""
    ends: List[int] = []
    position = 0
    while True:
        end = data.find(b"\r\n", position)
        if end < 0:
            return ends
        if data[position:position + 1] == b"$" and int(data[position + 1:end]) >= 0:
            stop = end + 2 + int(data[position + 1:end]) + 2
            if len(data) < stop:
                return ends
            position = stop
        else:
            position = end + 2
        ends.append(position)


class Proxy:
    """Listens on a free port of 127.0.0.1 and forwards each connection to *port*."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server((HOST, 0))
        self.port: int = self.listener.getsockname()[1]
        self.trigger: Optional[bytes] = None
        self.replies: Optional[int] = None  # None: swallow everything once armed
        self.broken = threading.Event()  # set once the chosen connection was broken
        self.requests = 0  # triggers to have gone to the server before the cut
        self.forwarded = 0  # triggers that did
        self.all_forwarded = threading.Event()
        self._claimed = False
        self._lock = threading.Lock()
        self._threads: List[threading.Thread] = []
        self._sockets: List[socket.socket] = []
        self._accepter = threading.Thread(target=self._accept, name="test-proxy", daemon=True)
        self._accepter.start()

    def cut_after_replies(self, trigger: bytes, replies: int, requests: int = 0) -> Proxy:
        self.trigger, self.replies, self.requests = trigger, replies, requests
        return self

    def swallow_after(self, trigger: bytes) -> Proxy:
        self.trigger, self.replies = trigger, None
        return self

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._accepter.join(10)
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            self._shut(sock, socket.SHUT_RDWR)
        for thread in list(self._threads):
            thread.join(10)
        for sock in sockets:
            sock.close()

    @staticmethod
    def _shut(sock: socket.socket, how: int) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(how)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection((HOST, self.target))
            armed = threading.Event()
            with self._lock:
                self._sockets += [client, server]
                for target, args in ((self._upstream, (client, server, armed)),
                                     (self._downstream, (server, client, armed))):
                    thread = threading.Thread(target=target, args=args, name="test-proxy-pump", daemon=True)
                    self._threads.append(thread)
                    thread.start()

    def _upstream(self, client: socket.socket, server: socket.socket, armed: threading.Event) -> None:
        """Client to server, all of it; arm this connection when the trigger goes by (first one only)."""
        tail = b""
        with contextlib.suppress(OSError):
            while True:
                data = client.recv(65536)
                if not data:
                    break
                if self.trigger is not None and self.trigger in tail + data and not armed.is_set():
                    with self._lock:
                        if not self._claimed:
                            self._claimed = True
                            armed.set()
                server.sendall(data)
                if armed.is_set() and self.trigger is not None:
                    self.forwarded += (tail + data).count(self.trigger)
                    if self.forwarded >= self.requests:
                        self.all_forwarded.set()
                    tail = data[-(len(self.trigger) - 1):]
        # A half close: the server still carries out everything it was sent, then sees the end.
        self._shut(server, socket.SHUT_WR)

    def _downstream(self, server: socket.socket, client: socket.socket, armed: threading.Event) -> None:
        """Server to client; once armed, only *replies* replies more, or nothing, while the rest of
        what the server sends is read and dropped."""
        pending = b""
        cut = False
        with contextlib.suppress(OSError):
            while True:
                data = server.recv(65536)
                if not data:
                    break
                if cut:
                    continue
                if not armed.is_set():
                    client.sendall(data)
                    continue
                self.broken.set()
                if self.replies is None:
                    continue  # swallowed
                pending += data
                ends = reply_ends(pending)
                if len(ends) >= self.replies:
                    client.sendall(pending[:ends[self.replies - 1]] if self.replies else b"")
                    self.all_forwarded.wait(30)
                    self._shut(client, socket.SHUT_RDWR)
                    cut = True
        self._shut(client, socket.SHUT_RDWR)
