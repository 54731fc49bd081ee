"""The ``app`` section's receiver: it counts the unique events that reach it, whoever sent them.

One HTTP server on 127.0.0.1, in the bench's process, takes the POSTs of
every variant: a JSON array of events (:class:`~batchdispatch.http.HttpSink`),
or an object whose ``batch`` holds them (PostHog's ``/batch/``, Segment's
``/v1/batch``), gzipped or not. Each event carries a unique id (its
``properties.id``, ``<pid>-<n>``, set by :mod:`.app_server`); the receiver
counts, per sending process, the ids it has seen, the events in all
(duplicates included) and the POSTs. With *delay*, it waits that long
before it answers each POST, as a slow ingest endpoint does.

Unlike :class:`~batchdispatch.testing.Receiver`, it keeps no request and
no event, only the ids: a run of the section ships a few million events.
"""

from __future__ import annotations

import collections
import gzip
import http.server
import json
import threading
from typing import Any, Dict, Iterable, Optional, Set, Tuple


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients expect
    disable_nagle_algorithm = True
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        counter = self.server.counter
        if counter.delay > 0 and counter.closing.wait(counter.delay):
            self.close_connection = True
            return  # closing: hang up without answering
        counter.count(body)
        answer = b'{"status":"Ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up (a worker at exit) is no news


def _events(value: Any) -> Iterable[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and isinstance(value.get("batch"), list):
        return value["batch"]  # type: ignore[no-any-return]
    return ()


def _event_id(event: Any) -> Optional[str]:
    properties = event.get("properties") if isinstance(event, dict) else None
    found = properties.get("id") if isinstance(properties, dict) else None
    return found if isinstance(found, str) else None


class Counter:
    """The receiver: :meth:`start` it, point the clients at :attr:`url`, read :meth:`tally`.

    Ids are ``<pid>-<n>``: what arrived is counted per process that sent it,
    so that several gunicorns can share one receiver.

    :param delay: seconds to wait before answering each POST (0: at once).
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.closing = threading.Event()
        self._lock = threading.Lock()  # guards _ids and the counts
        self._ids: Set[str] = set()
        self._unique: Dict[str, int] = collections.Counter()
        self._events: Dict[str, int] = collections.Counter()
        self._posts: Dict[str, int] = collections.Counter()
        self._server: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Counter:
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="bench-app-receiver", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Counter:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def count(self, body: bytes) -> None:
        """Count the events of one request body (an unparsable body counts as nothing)."""
        try:
            ids = [i for i in (_event_id(event) for event in _events(json.loads(body))) if i is not None]
        except ValueError:
            return
        with self._lock:
            if ids:
                self._posts[ids[0].partition("-")[0]] += 1
            for event_id in ids:
                pid = event_id.partition("-")[0]
                self._events[pid] += 1
                if event_id not in self._ids:
                    self._ids.add(event_id)
                    self._unique[pid] += 1

    def unseen(self, ids: Iterable[object]) -> int:
        """How many of *ids* (of events kept elsewhere, a spool) were not received."""
        with self._lock:
            return len(set(ids) - self._ids)

    def tally(self, pids: Iterable[int]) -> Tuple[int, int, int]:
        """(unique events, events in all, POSTs) sent by the processes *pids*."""
        keys = [str(pid) for pid in pids]
        with self._lock:
            return (sum(self._unique[k] for k in keys), sum(self._events[k] for k in keys),
                    sum(self._posts[k] for k in keys))
