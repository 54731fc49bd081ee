"""HttpSink and WebhookSink at their limits: Retry-After, deadlines, slow or huge answers, bad values.

Real servers on 127.0.0.1 only: the scripted Receiver, and a raw socket
server for answers the Receiver cannot give (a body dripped a byte at a
time, a body of many megabytes).
"""

from __future__ import annotations

import email.utils
import io
import logging
import socket
import threading
import time
import tracemalloc
from typing import Any, Callable, Iterator, List, Optional

import pytest
import requests

from batchdispatch import RetryPolicy, http
from batchdispatch.exceptions import DeliveryError, PartialFailure
from batchdispatch.http import Endpoint, HttpSink, WebhookSink
from batchdispatch.testing import Receiver, Response

from ..conftest import run_python
from .conftest import fast_retry, free_port
from .deadline import under_shutdown_deadline

SECRET = "sk_live_Vb93-do-not-leak"
QUICK = RetryPolicy(max_attempts=3, backoff=0.01, jitter=False)


class RawServer:
    """A one-thread HTTP server on 127.0.0.1 that answers every request with *head*, then *body*.

    *body* is called with the connection's socket and writes what it likes
    (slowly, or a lot); it must stop when ``stopping`` is set. Each
    connection is served in turn, on the server's one thread.
    """

    def __init__(self, head: bytes, body: Callable[[socket.socket, threading.Event], None]) -> None:
        self.head = head
        self.body = body
        self.stopping = threading.Event()
        self.requests = 0
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.05)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        self.thread = threading.Thread(target=self._serve, name="raw-server", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    self._read_request(conn)
                    self.requests += 1
                    conn.sendall(self.head)
                    self.body(conn, self.stopping)
                except OSError:
                    pass  # the client hung up: what these tests want to see

    @staticmethod
    def _read_request(conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                raise OSError("client went away")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(rest) < length:
            rest += conn.recv(65536)

    def close(self) -> None:
        self.stopping.set()
        self.listener.close()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    made: List[RawServer] = []

    def factory(head: bytes, body: Callable[[socket.socket, threading.Event], None]) -> RawServer:
        server = RawServer(head, body)
        made.append(server)
        return server

    yield factory
    for server in made:
        server.close()


def drip(seconds: float, first: bytes = b"") -> Callable[[socket.socket, threading.Event], None]:
    """*first*, then one byte every 0.2 s, for at most *seconds* (so a client that waits does end)."""

    def body(conn: socket.socket, stopping: threading.Event) -> None:
        conn.sendall(first)
        end = time.monotonic() + seconds
        while time.monotonic() < end and not stopping.wait(0.2):
            conn.sendall(b"x")

    return body


def flood(total: int) -> Callable[[socket.socket, threading.Event], None]:
    """A body of *total* zero bytes, as fast as the client takes them."""
    block = b"\0" * 65536

    def body(conn: socket.socket, stopping: threading.Event) -> None:
        sent = 0
        while sent < total and not stopping.is_set():
            conn.sendall(block)
            sent += len(block)

    return body


def timed(call: Callable[[], Any]) -> Any:
    """(seconds the call took, the DeliveryError it raised or None)."""
    started = time.monotonic()
    try:
        call()
    except DeliveryError as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


# -- Retry-After (items 4 and 8) ---------------------------------------------


@pytest.mark.parametrize("value", ["soon-ish", "-5", "1.5", "Wed, 99 Foo 2024 25:61:00 GMT"])
def test_a_5xx_with_a_malformed_retry_after_is_retried_and_the_header_ignored(
    receiver: Receiver, http_sink: Callable[..., HttpSink], value: str,
) -> None:
    busy = Response(503, headers={"Retry-After": value})
    receiver.respond(busy, busy)
    http_sink(receiver.url)([{"n": n} for n in range(10)])  # urllib3 retries: 503, 503, 200
    assert [r.status for r in receiver.requests] == [503, 503, 200]
    assert receiver.item_count == 10

    receiver.clear()
    receiver.respond(busy)
    with pytest.raises(DeliveryError) as caught:
        http_sink(receiver.url, retries=None)([1])
    error = caught.value
    assert (error.status, error.retryable, error.retry_after) == (503, True, None)


def test_ten_items_behind_a_malformed_retry_after_are_delivered_by_the_dispatcher(
    receiver: Receiver, http_sink: Callable[..., HttpSink], make: Any,
) -> None:
    receiver.respond(Response(503, headers={"Retry-After": "soon-ish"}))
    dispatcher = make(http_sink(receiver.url), delay=0.01, max_batch_size=10, retry=QUICK)
    for n in range(10):
        dispatcher.enqueue(n)
    assert dispatcher.flush(10)
    assert receiver.items == list(range(10))
    assert [r.status for r in receiver.requests] == [503, 200]  # retried by urllib3, at once
    assert (dispatcher.stats().dispatched, dispatcher.stats().failed) == (10, 0)


def test_retry_after_is_reported_not_slept(receiver: Receiver, http_sink: Callable[..., HttpSink]) -> None:
    receiver.respond(Response(429, headers={"Retry-After": "1"}))
    with pytest.raises(DeliveryError) as caught:
        http_sink(receiver.url)([{"n": 1}])  # urllib3 may retry 429, but not before the server said
    error = caught.value
    assert (error.status, error.retryable, error.retry_after) == (429, True, 1.0)
    assert "Retry-After: 1 s" in str(error)
    assert receiver.request_count == 1


def test_a_retry_after_date_becomes_seconds(receiver: Receiver, http_sink: Callable[..., HttpSink]) -> None:
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    receiver.respond(Response(503, headers={"Retry-After": when}))
    with pytest.raises(DeliveryError) as caught:
        http_sink(receiver.url)([1])
    assert caught.value.retry_after is not None
    assert 100 <= caught.value.retry_after <= 121
    assert receiver.request_count == 1


def test_retry_after_zero_is_retried_at_once_by_urllib3(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    receiver.respond(Response(503, headers={"Retry-After": "0"}))
    http_sink(receiver.url)([1])
    assert [r.status for r in receiver.requests] == [503, 200]


def test_a_huge_retry_after_frees_the_worker_so_healthy_keys_are_delivered() -> None:
    # Two endpoints asking for 11 days and two workers: urllib3 used to sleep
    # in both workers, and the healthy key waited for ever. In a subprocess
    # with a deadline, because the old behaviour never returns.
    result = run_python(
        """
        import os
        import sys
        from batchdispatch import KeyedDispatcher, RetryPolicy
        from batchdispatch.testing import Receiver, Response
        from batchdispatch.http import Endpoint, WebhookSink

        busy = Response(503, headers={"Retry-After": "999999"})
        bad_a, bad_b, good = Receiver().start(), Receiver().start(), Receiver().start()
        for bad in (bad_a, bad_b):
            bad.respond(*[busy] * 50)
        sink = WebhookSink({"a": Endpoint(bad_a.url), "b": Endpoint(bad_b.url), "good": Endpoint(good.url)})
        errors = []
        hooks = KeyedDispatcher(sink, delay=0.01, max_concurrent_batches=2,
                                retry=RetryPolicy(max_attempts=3, backoff=30, jitter=False))
        hooks.on("batch_failed", lambda event: errors.append(event.error))
        hooks.enqueue("a", 1)
        hooks.enqueue("b", 2)
        assert bad_a.wait_for_requests(1) and bad_b.wait_for_requests(1)
        hooks.enqueue("good", 3)
        print("good flushed:", hooks.flush(key="good", timeout=10), good.items)
        print("retry_after:", sorted({e.retry_after for e in errors}))
        print("requests to the busy ones:", bad_a.request_count, bad_b.request_count)
        sys.stdout.flush()
        os._exit(0)  # the busy keys still wait for their retry: no need to wait for them
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [
        "good flushed: True [3]",
        "retry_after: [999999.0]",
        "requests to the busy ones: 1 1",
    ]


def test_no_sink_call_sleeps_longer_than_its_timeout_with_urllib3_backoff(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    # Backoff of 4, 8, 16 s between attempts; the call is bounded by connect + read = 1.5 s.
    receiver.respond(503, 503, 503, 503)
    patient = fast_retry(total=4).new(backoff_factor=4)
    took, error = timed(lambda: http_sink(receiver.url, retries=patient, timeout=(0.5, 1))([1]))
    assert isinstance(error, DeliveryError)
    assert (error.status, error.retryable) == (503, True)
    assert took < 6  # generous: without the bound it is 4 + 8 + 16 s
    assert 1 <= receiver.request_count < 5


# -- 413 (item 6) -------------------------------------------------------------


def test_a_413_splits_the_batch_in_two_until_accepted(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    receiver.respond(413)  # then 200s
    sink = http_sink(receiver.url)
    sink([1, 2, 3])
    assert [r.items for r in receiver.requests] == [[1, 2, 3], [1], [2, 3]]
    first, *halves = [r.headers["webhook-id"] for r in receiver.requests]
    # Each body has an id of its own, derived from the batch's.
    assert [h.split(".")[0] for h in halves] == [first, first]
    assert len({first, *halves}) == 3
    assert sink.stats().splits == 1


def test_a_single_item_refused_with_413_is_final_and_the_rest_delivered(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    receiver.respond(413, 413, 200)
    sink = http_sink(receiver.url)
    with pytest.raises(PartialFailure) as split:
        sink([1, 2])
    assert split.value.failed_items == [1]
    assert split.value.retryable is False
    assert [r.items for r in receiver.requests] == [[1, 2], [1], [2]]
    receiver.respond(413)
    with pytest.raises(DeliveryError) as one:
        sink([1])
    assert (one.value.status, one.value.retryable) == (413, False)
    assert receiver.request_count == 4  # urllib3 does not retry a 413 itself


def test_a_multi_item_413_is_not_given_up_at_once_by_the_dispatcher(
    receiver: Receiver, http_sink: Callable[..., HttpSink], make: Any,
) -> None:
    receiver.respond(413)
    dispatcher = make(http_sink(receiver.url), delay=0.01, max_batch_size=5, retry=QUICK)
    for n in range(5):
        dispatcher.enqueue(n)
    assert dispatcher.flush(10)
    assert receiver.items == [0, 1, 2, 3, 4]
    assert dispatcher.stats().failed == 0


# -- slow and huge answers, and the deadline (item 10) -------------------------


def test_an_answer_dripped_a_byte_at_a_time_cannot_hold_the_call(
    raw_server: Callable[..., RawServer], http_sink: Callable[..., HttpSink],
) -> None:
    server = raw_server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 1000000\r\n\r\n", drip(30))
    took, error = timed(lambda: http_sink(server.url, timeout=(1, 1))([1]))
    assert isinstance(error, DeliveryError)
    assert (error.status, error.retryable) == (400, False)
    assert error.body.startswith("x")  # what came before the deadline
    assert took < 10  # generous: the deadline is 2 s; the server drips for 30 s


def test_a_2xx_whose_body_drips_is_a_success_within_the_deadline(
    raw_server: Callable[..., RawServer], http_sink: Callable[..., HttpSink],
) -> None:
    server = raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", drip(30))
    took, error = timed(lambda: http_sink(server.url, timeout=(1, 1))([1]))
    assert error is None
    assert took < 10


CHUNKED = "Transfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("head", "dripped"),
    [
        # a chunk-size line that never ends: a chunk extension, a byte at a time
        (f"HTTP/1.1 200 OK\r\n{CHUNKED}", b"1;"),
        (f"HTTP/1.1 500 Oops\r\n{CHUNKED}", b"1;"),
        # the last chunk, then a trailer that never ends
        (f"HTTP/1.1 500 Oops\r\n{CHUNKED}", b"1\r\na\r\n0\r\nX-Trailer: "),
    ],
    ids=["200-size-line", "500-size-line", "500-trailer"],
)
def test_a_chunked_body_whose_lines_drip_cannot_hold_the_call(
    raw_server: Callable[..., RawServer], http_sink: Callable[..., HttpSink], head: str, dripped: bytes,
) -> None:
    # http.client reads those lines with readline: a receive per byte, each
    # allowed the whole read timeout, for up to 64 KiB (a byte every 0.2 s
    # held the call for as long as the server went on: 30 s here).
    server = raw_server(head.encode(), drip(30, first=dripped))
    took, error = timed(lambda: http_sink(server.url, timeout=(0.5, 0.5), retries=None)([1]))
    if head.startswith("HTTP/1.1 200"):
        assert error is None
    else:
        assert isinstance(error, DeliveryError)
        assert error.status == 500
    assert took < 4  # generous: the deadline is 1 s


@pytest.mark.parametrize(
    ("head", "dripped"),
    [(b"", b"HTTP/1.1 200 O"), (b"HTTP/1.1 200 OK\r\n", b"X-Slow: ")],
    ids=["status-line", "header"],
)
def test_an_answers_head_that_drips_cannot_hold_the_call(
    raw_server: Callable[..., RawServer], http_sink: Callable[..., HttpSink], head: bytes, dripped: bytes,
) -> None:
    # Read inside urllib3's getresponse, a receive per byte, each allowed the
    # whole read timeout: it held the call for as long as the server went on.
    server = raw_server(head, drip(30, first=dripped))
    took, error = timed(lambda: http_sink(server.url, timeout=(0.5, 0.5))([1]))
    assert isinstance(error, DeliveryError)
    assert error.retryable
    assert "timed out" in str(error)
    assert took < 4  # generous: the deadline is 1 s
    assert server.requests == 1  # no time is left for urllib3 to retry


def test_a_reused_connection_sends_within_the_next_calls_deadline(
    raw_server: Callable[..., RawServer], http_sink: Callable[..., HttpSink],
) -> None:
    # The first answer leaves its connection in the pool, with a socket
    # timeout of about 30 s; the server then never reads the second request.
    # urllib3 1.26 sent it with that timeout, past the second call's deadline.
    # urllib3 2 sends with the connect timeout: 10 s, so the deadline must bound it.
    server = raw_server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                        lambda conn, stopping: stopping.wait(60))
    sink = http_sink(server.url, timeout=(10, 30))
    sink([1])
    big = ["x" * 1000] * 50_000  # 50 MB: more than the socket buffers hold
    took, error = under_shutdown_deadline(lambda: sink(big), timeout=1.0)
    assert isinstance(error, DeliveryError)
    assert error.retryable
    assert took < 8  # generous: the deadline is 1 s
    assert server.requests == 1


def test_a_retried_answer_is_not_drained(
    raw_server: Callable[..., RawServer], http_sink: Callable[..., HttpSink],
) -> None:
    # urllib3 reads a retried answer to its end to reuse the connection.
    server = raw_server(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 1000000\r\n\r\n", drip(30))
    took, error = timed(lambda: http_sink(server.url, timeout=(1, 1), retries=fast_retry(total=1))([1]))
    assert isinstance(error, DeliveryError)
    assert (error.status, error.retryable) == (503, True)
    assert server.requests == 2
    assert took < 10


def test_a_huge_answer_is_not_read_into_memory(
    raw_server: Callable[..., RawServer], http_sink: Callable[..., HttpSink],
) -> None:
    size = 64 * 1024 * 1024
    server = raw_server(f"HTTP/1.1 500 Oops\r\nContent-Length: {size}\r\n\r\n".encode(), flood(size))
    sink = http_sink(server.url, retries=None)
    tracemalloc.start()
    try:
        with pytest.raises(DeliveryError) as caught:
            sink([1])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.status == 500
    assert len(caught.value.body) <= 200
    assert peak < 8 * 1024 * 1024  # the body is 64 MiB


def test_a_slow_server_is_bounded_by_the_dispatchers_deadline(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    # current_deadline() is the engine's contract: the call is over by then,
    # even with a read timeout of 60 s. Set by shutdown(timeout=1), as at exit.
    receiver.respond(Response(delay=30))
    sink = http_sink(receiver.url, timeout=(5, 60))
    took, error = under_shutdown_deadline(lambda: sink([1]), timeout=1.0)
    assert isinstance(error, DeliveryError)
    assert error.retryable
    assert "timed out" in str(error)
    assert took < 8  # generous: the deadline is 1 s, the server answers after 30 s
    assert receiver.items == []


def test_a_deadline_already_passed_sends_nothing(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    sink = http_sink(receiver.url)
    _, error = under_shutdown_deadline(lambda: sink([1]), timeout=0)  # passed when the call starts
    assert isinstance(error, DeliveryError)
    assert "deadline" in str(error)
    assert error.retryable
    assert receiver.request_count == 0


# -- secrets in the library's own log (item 12) ------------------------------


def _formatted_log(run: Callable[[], None]) -> str:
    """Everything the batchdispatch loggers print while *run* runs, tracebacks included."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("batchdispatch")
    logger.addHandler(handler)
    try:
        run()
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def _chain(exc: Optional[BaseException]) -> List[BaseException]:
    seen: List[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def test_the_default_error_log_never_shows_the_query_string_or_a_header_value(
    make_receiver: Callable[..., Receiver], make: Any, sinks: Callable[..., Any],
) -> None:
    slow = make_receiver()
    slow.respond(*[Response(delay=30)] * 3)
    refused = f"http://127.0.0.1:{free_port()}/hook?api_key={SECRET}"
    timing_out = f"{slow.url}hook?api_key={SECRET}"
    errors: List[BaseException] = []

    def run() -> None:
        for url, timeout in ((refused, 2.0), (timing_out, (1, 0.5))):
            sink = sinks(HttpSink, url, headers={"Authorization": f"Bearer {SECRET}"}, timeout=timeout,
                         retries=fast_retry(total=1))
            dispatcher = make(sink, delay=0.01)  # the default on_error: log.error with the traceback
            dispatcher.on("batch_failed", lambda event: errors.append(event.error))
            dispatcher.enqueue({"n": 1})
            assert dispatcher.flush(15)
            dispatcher.shutdown(10)

    text = _formatted_log(run)
    assert "Traceback" in text
    assert "connection failed" in text
    assert "timed out" in text
    assert SECRET not in text
    assert "api_key" not in text
    assert len(errors) == 2
    for error in errors:
        for link in _chain(error):
            assert SECRET not in str(link)
            assert SECRET not in repr(link)


def test_a_bad_header_in_a_users_session_is_final_and_never_shown(
    receiver: Receiver, make: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {SECRET}\n"  # read from a file, newline and all
        errors: List[BaseException] = []
        dispatcher = make(HttpSink(receiver.url, session=session), delay=0.01, retry=QUICK)
        dispatcher.on("batch_failed", lambda event: errors.append(event.error))
        text = _formatted_log(lambda: (dispatcher.enqueue({"n": 1}), dispatcher.flush(10), None)[-1])
        dispatcher.shutdown(10)
    assert receiver.request_count == 0
    (error,) = errors
    assert isinstance(error, DeliveryError)
    assert error.retryable is False
    assert "'Authorization'" in str(error)
    assert "Traceback" in text
    assert SECRET not in text
    assert SECRET not in caplog.text
    for link in _chain(error):
        assert SECRET not in str(link)


def test_a_header_the_session_cannot_encode_is_final(receiver: Receiver) -> None:
    with requests.Session() as session, HttpSink(receiver.url, session=session) as sink:
        session.headers["X-Name"] = "caf\u00e9 \u2615"
        with pytest.raises(DeliveryError) as caught:
            sink([1])
    assert caught.value.retryable is False
    assert "\u2615" not in str(caught.value)
    assert receiver.request_count == 0


# -- bad values, at construction (items 12 and 15) ---------------------------


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (f"{SECRET}\n", "line break"), (f"{SECRET}\r\nX-Evil: 1", "line break"),
        (f"\r{SECRET}", "line break"), (f" {SECRET}", "whitespace"),
        (f"{SECRET}\0", "control"), (f"{SECRET}\u2019", "latin-1"),
    ],
)
def test_a_bad_header_value_is_refused_when_the_sink_is_built(value: str, what: str) -> None:
    checks: List[Callable[[], Any]] = [
        lambda: HttpSink("http://127.0.0.1:9/", headers={"X-Api-Key": value}),
        lambda: WebhookSink(headers={"X-Api-Key": value}),
        lambda: Endpoint("http://127.0.0.1:9/", headers={"X-Api-Key": value}),
    ]
    for check in checks:
        with pytest.raises(ValueError, match=what) as caught:
            check()
        message = str(caught.value)
        assert "'X-Api-Key'" in message
        assert "headers" in message
        assert SECRET not in message


@pytest.mark.parametrize("key", ["", "X Key", "X-Key:", "X-K\u00e9y", "X-Key\n"])
def test_a_bad_header_name_is_refused_by_name(key: str) -> None:
    with pytest.raises(ValueError, match="not a valid header name"):
        HttpSink("http://127.0.0.1:9/", headers={key: "v"})


def test_header_values_that_are_fine_are_kept(receiver: Receiver, http_sink: Callable[..., HttpSink]) -> None:
    http_sink(receiver.url, headers={"X-Latin": "caf\u00e9", "X-Tab": "a\tb", "X-Empty": ""})([1])
    (request,) = receiver.requests
    assert request.headers["x-tab"] == "a\tb"
    assert request.headers["x-empty"] == ""


@pytest.mark.parametrize("timeout", [1e12, (1, 1e12), 86400.5, float("inf"), float("nan"), -1])
def test_a_timeout_out_of_range_is_refused_by_name(timeout: Any) -> None:
    for check in (lambda: HttpSink("http://127.0.0.1:9/", timeout=timeout),
                  lambda: Endpoint("http://127.0.0.1:9/", timeout=timeout)):
        with pytest.raises(ValueError, match="timeout"):
            check()
    assert http.MAX_TIMEOUT == 86400
    HttpSink("http://127.0.0.1:9/", timeout=http.MAX_TIMEOUT).close()
