"""HttpSink and WebhookSink against real HTTP servers on 127.0.0.1; nothing is mocked."""

from __future__ import annotations

import datetime
import gc
import gzip
import hmac
import json
import logging
import os
import threading
import time
from typing import Any, Callable, List, Optional

import pytest
import requests
import requests.adapters
from freezegun import freeze_time

import batchdispatch
from batchdispatch import RetryPolicy
from batchdispatch.events import BatchFailed, ItemsExhausted
from batchdispatch.exceptions import (
    BatchDispatchError,
    DeliveryError,
    SerializationError,
    UnknownEndpointError,
)
from batchdispatch.http import (
    RETRY_STATUSES,
    USER_AGENT,
    Endpoint,
    HttpSink,
    WebhookSink,
    default_retry,
    json_serializer,
    sign,
    sign_webhook,
    verify_signature,
    verify_webhook,
)
from batchdispatch.testing import Receiver, Response

from ..conftest import ROOT, run_python
from .conftest import fast_retry, free_port
from .sockets import connections_to

SECRET = "s3cret-Zq81-do-not-leak"
API_KEY = "api-key-Hh27-do-not-leak"
QUICK = RetryPolicy(max_attempts=5, backoff=0.01, jitter=False)


class Events:
    """Collects a dispatcher's events, with a condition to wait on."""

    def __init__(self, dispatcher: Any, *names: str) -> None:
        self.seen: List[Any] = []
        self.cond = threading.Condition()
        for name in names:
            dispatcher.on(name, self._add)

    def _add(self, event: Any) -> None:
        with self.cond:
            self.seen.append(event)
            self.cond.notify_all()

    def of(self, kind: type) -> List[Any]:
        with self.cond:
            return [e for e in self.seen if isinstance(e, kind)]

    def wait(self, kind: type, count: int = 1, timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len([e for e in self.seen if isinstance(e, kind)]) >= count,
                                      timeout)


# -- retries by urllib3 and by the dispatcher --------------------------------


def test_503_503_200_is_delivered_once_with_one_webhook_id(
    receiver: Receiver, http_sink: Callable[..., HttpSink], make: Any,
) -> None:
    receiver.respond(503, 503)
    dispatcher = make(http_sink(receiver.url), delay=0.01)
    for n in range(3):
        dispatcher.enqueue({"n": n})
    assert dispatcher.flush(10)
    requests_seen = receiver.requests
    assert [r.status for r in requests_seen] == [503, 503, 200]
    assert len({r.headers["webhook-id"] for r in requests_seen}) == 1
    assert receiver.items == [{"n": 0}, {"n": 1}, {"n": 2}]
    stats = dispatcher.stats()
    assert (stats.dispatched, stats.batches, stats.failed) == (3, 1, 0)


def test_a_dispatcher_retry_of_the_same_batch_keeps_its_webhook_id(
    receiver: Receiver, http_sink: Callable[..., HttpSink], make: Any,
) -> None:
    receiver.respond(503)
    dispatcher = make(http_sink(receiver.url, retries=None), delay=0.01, retry=QUICK)
    events = Events(dispatcher, "batch_failed")
    dispatcher.enqueue({"n": 1})
    assert dispatcher.flush(10)
    first, second = receiver.requests
    assert (first.status, second.status) == (503, 200)
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    (failed,) = events.of(BatchFailed)
    assert isinstance(failed.error, DeliveryError)
    assert (failed.error.status, failed.error.retryable) == (503, True)
    assert dispatcher.stats().dispatched == 1


def test_separate_calls_outside_a_dispatcher_get_fresh_ids(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    sink = http_sink(receiver.url)
    sink([1])
    sink([2])
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert len(set(ids)) == 2
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_429_with_retry_after_is_reported_for_the_dispatcher_to_wait(
    receiver: Receiver, http_sink: Callable[..., HttpSink], make: Any,
) -> None:
    # The sink does not sleep for a Retry-After (that would pin a worker):
    # it reports it, and the dispatcher's RetryPolicy tries again later.
    receiver.respond(Response(429, headers={"Retry-After": "1"}))
    dispatcher = make(http_sink(receiver.url), delay=0.01, retry=QUICK)
    events = Events(dispatcher, "batch_failed")
    dispatcher.enqueue({"n": 1})
    assert dispatcher.flush(10)
    first, second = receiver.requests
    assert (first.status, second.status) == (429, 200)
    (failed,) = events.of(BatchFailed)
    assert (failed.error.status, failed.error.retryable, failed.error.retry_after) == (429, True, 1.0)
    assert receiver.items == [{"n": 1}]


def test_an_int_retries_is_the_default_policy_with_that_total(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    receiver.respond(503, 503, 503)
    sink = http_sink(receiver.url, retries=1)  # 1 retry: no backoff sleep yet
    with pytest.raises(DeliveryError) as caught:
        sink([1])
    assert receiver.request_count == 2
    assert (caught.value.status, caught.value.retryable) == (503, True)


def test_400_is_sent_once_and_given_up_at_once(
    receiver: Receiver, http_sink: Callable[..., HttpSink], make: Any,
) -> None:
    receiver.respond(Response(400, body=b'{"error": "field \\"n\\" must be a string"}' + b"x" * 500))
    dispatcher = make(http_sink(receiver.url), delay=0.01, retry=QUICK)
    events = Events(dispatcher, "items_exhausted")
    for n in range(4):
        dispatcher.enqueue({"n": n})
    assert dispatcher.flush(10)
    assert receiver.request_count == 1
    (exhausted,) = events.of(ItemsExhausted)
    assert exhausted.attempts == 1
    error = exhausted.error
    assert isinstance(error, DeliveryError)
    assert (error.status, error.retryable) == (400, False)
    assert error.body.startswith('{"error": "field \\"n\\" must be a string"}')
    assert len(error.body) <= 200
    assert "400" in str(error)
    assert "must be a string" in str(error)
    stats = dispatcher.stats()
    assert (stats.failed, stats.dispatched, stats.retried) == (4, 0, 0)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retryable_when_retries_run_out(
    receiver: Receiver, http_sink: Callable[..., HttpSink], status: int,
) -> None:
    receiver.respond(status, status)
    with pytest.raises(DeliveryError) as caught:
        http_sink(receiver.url, retries=fast_retry(total=1))([1])
    assert (caught.value.status, caught.value.retryable) == (status, True)
    assert receiver.request_count == 2


@pytest.mark.parametrize("status", [301, 307, 401, 403, 404, 413, 422])
def test_redirects_and_other_4xx_are_final(
    receiver: Receiver, http_sink: Callable[..., HttpSink], status: int,
) -> None:
    receiver.respond(Response(status, headers={"Location": receiver.url + "elsewhere"}))
    with pytest.raises(DeliveryError) as caught:
        http_sink(receiver.url)([1])
    assert (caught.value.status, caught.value.retryable) == (status, False)
    assert receiver.request_count == 1


def test_connection_refused_then_the_server_comes_up(
    make_receiver: Callable[..., Receiver], http_sink: Callable[..., HttpSink], make: Any,
) -> None:
    port = free_port()
    dispatcher = make(http_sink(f"http://127.0.0.1:{port}/", retries=None), delay=0.01, retry=QUICK)
    errors: List[BaseException] = []
    receivers: List[Receiver] = []

    def bring_it_up(event: BatchFailed) -> None:
        errors.append(event.error)
        if not receivers:  # the first failure starts the server the retry will find
            receivers.append(make_receiver(port=port))

    dispatcher.on("batch_failed", bring_it_up)
    dispatcher.enqueue({"n": 1})
    assert dispatcher.flush(10)
    assert receivers[0].items == [{"n": 1}]
    (error,) = errors
    assert isinstance(error, DeliveryError)
    assert error.retryable
    assert error.status is None
    assert "connection failed" in str(error)
    assert isinstance(error.__cause__, requests.ConnectionError)
    assert dispatcher.stats().dispatched == 1


def test_a_server_slower_than_the_timeout_counts_as_failed(
    receiver: Receiver, http_sink: Callable[..., HttpSink], make: Any,
) -> None:
    receiver.respond(Response(delay=5.0))
    errors: List[BaseException] = []
    dispatcher = make(http_sink(receiver.url, timeout=(1, 0.3), retries=None), delay=0.01,
                      on_error=lambda exc, batch: errors.append(exc))
    dispatcher.enqueue({"n": 1})
    assert dispatcher.flush(10)
    assert dispatcher.stats().failed == 1
    (error,) = errors
    assert isinstance(error, DeliveryError)
    assert error.retryable
    assert error.status is None
    assert "timed out" in str(error)
    assert isinstance(error.__cause__, requests.Timeout)
    assert receiver.items == []  # the slow answer never counted


# -- signatures, gzip and headers -------------------------------------------


def test_sign_is_the_hmac_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"key", b"1700000000.[1,2]", hashlib.sha256).hexdigest()
    assert sign(b"[1,2]", "key", 1700000000) == f"sha256={expected}"
    assert sign(b"[1,2]", b"key", "1700000000") == f"sha256={expected}"


def test_signature_round_trip_tampering_and_replay() -> None:
    body = b'[{"event":"paid"}]'
    with freeze_time("2024-05-01 12:00:00") as frozen:
        now = int(time.time())
        signature = sign(body, SECRET, now)
        assert verify_signature(body, signature, SECRET, now)
        assert verify_signature(body, signature, SECRET.encode(), str(now))
        # tampering: the body, the signature, the timestamp or the secret changed
        assert not verify_signature(body.replace(b"paid", b"void"), signature, SECRET, now)
        flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
        assert not verify_signature(body, flipped, SECRET, now)
        assert not verify_signature(body, signature, SECRET, now + 1)
        assert not verify_signature(body, signature, "another secret", now)
        # replay: the same request, accepted within the tolerance only
        frozen.tick(299)
        assert verify_signature(body, signature, SECRET, now)
        frozen.tick(2)
        assert not verify_signature(body, signature, SECRET, now)
        assert verify_signature(body, signature, SECRET, now, tolerance=600)
    with freeze_time("2024-05-01 11:54:00"):  # a timestamp from the future is no better
        assert not verify_signature(body, signature, SECRET, now)


@pytest.mark.parametrize(
    ("signature", "timestamp"),
    [
        (None, "1714564800"), ("", "1714564800"), ("sha1=abc", "1714564800"), ("sha256=", "1714564800"),
        ("sha256=zz", "1714564800"), ("sha256=é", "1714564800"), ("valid", None), ("valid", ""),
        ("valid", "abc"), ("valid", "1.5e9"), ("valid", True), ("valid", 1714564800.0),
        ("valid", "\u0661\u0667"),  # Arabic-Indic digits: int() would accept them
    ],
)
@freeze_time("2024-05-01 12:00:00")
def test_verify_signature_returns_false_on_malformed_input(signature: Any, timestamp: Any) -> None:
    body = b"[]"
    if signature == "valid":
        signature = sign(body, SECRET, 1714564800)
    assert verify_signature(body, signature, SECRET, timestamp) is False
    assert verify_signature(body, sign(body, SECRET, 1714564800), SECRET, 1714564800) is True


@pytest.mark.parametrize("secret", ["", b""])
def test_an_empty_secret_is_an_error_on_both_sides(secret: Any) -> None:
    # A secret from an unset environment variable must not make signatures anyone can compute.
    body, now = b"[]", int(time.time())
    with pytest.raises(ValueError, match="secret"):
        sign(body, secret, now)
    forged = "sha256=" + hmac.new(b"", f"{now}.[]".encode(), "sha256").hexdigest()
    with pytest.raises(ValueError, match="secret"):
        verify_signature(body, forged, secret, now)
    with pytest.raises(TypeError, match="secret"):
        verify_signature(body, forged, None, now)  # type: ignore[arg-type]


@pytest.mark.parametrize("tolerance", [float("nan"), float("inf"), -1])
def test_a_tolerance_that_turns_replay_protection_off_is_an_error(tolerance: float) -> None:
    body = b"[]"
    old = int(time.time()) - 10 * 365 * 86400
    with pytest.raises(ValueError, match="tolerance"):
        verify_signature(body, sign(body, SECRET, old), SECRET, old, tolerance=tolerance)
    with pytest.raises(TypeError, match="tolerance"):
        verify_signature(body, sign(body, SECRET, old), SECRET, old, tolerance="300")  # type: ignore[arg-type]
    assert verify_signature(body, sign(body, SECRET, old), SECRET, old, tolerance=0) is False


def test_signed_requests_verify_at_the_receiver_and_carry_the_headers(
    make_receiver: Callable[..., Receiver], http_sink: Callable[..., HttpSink],
) -> None:
    receiver = make_receiver(secret=SECRET)
    before = int(time.time())
    http_sink(receiver.url, secret=SECRET, headers={"Api-Key": API_KEY})([{"n": 1}, "two", 3.5, None])
    (request,) = receiver.requests
    assert request.verified is True
    assert request.method == "POST"
    assert request.body == b'[{"n":1},"two",3.5,null]'  # one compact JSON array
    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == f"batchdispatch/{batchdispatch.__version__}"
    assert headers["api-key"] == API_KEY
    webhook_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    assert before <= int(timestamp) <= time.time()
    assert headers["webhook-signature"] == sign_webhook(request.body, SECRET, webhook_id, timestamp)
    assert headers["webhook-signature"].startswith("v1,")
    assert verify_webhook(request.body, headers, SECRET)
    assert not any(name.startswith("x-webhook") for name in headers)
    assert "content-encoding" not in headers


def test_signature_x_webhook_sends_the_headers_of_0_1_byte_for_byte(
    make_receiver: Callable[..., Receiver], http_sink: Callable[..., HttpSink], make: Any,
) -> None:
    receiver = make_receiver(secret=SECRET)
    receiver.respond(503)
    sink = http_sink(receiver.url, secret=SECRET, signature="x-webhook", retries=None)
    dispatcher = make(sink, delay=0.01, retry=QUICK)
    dispatcher.enqueue({"n": 1})
    assert dispatcher.flush(10)
    first, second = receiver.requests
    assert (first.status, second.status, second.verified) == (503, 200, True)
    headers = second.headers
    assert headers["x-webhook-id"] == first.headers["x-webhook-id"]
    signature, timestamp = headers["x-webhook-signature"], headers["x-webhook-timestamp"]
    assert signature == sign(second.body, SECRET, timestamp)
    assert verify_signature(second.body, signature, SECRET, timestamp)
    assert not any(name.startswith("webhook-") for name in headers)
    assert "signed x-webhook" in repr(sink)


def test_a_wrong_secret_is_refused_by_the_receiver_and_given_up(
    make_receiver: Callable[..., Receiver], http_sink: Callable[..., HttpSink], make: Any,
) -> None:
    receiver = make_receiver(secret=SECRET)
    dispatcher = make(http_sink(receiver.url, secret="wrong"), delay=0.01, retry=QUICK)
    dispatcher.enqueue({"n": 1})
    assert dispatcher.flush(10)
    (request,) = receiver.requests
    assert (request.verified, request.status) == (False, 401)
    assert dispatcher.stats().failed == 1


def test_gzip_bodies_round_trip_and_the_signature_covers_the_uncompressed_json(
    make_receiver: Callable[..., Receiver], http_sink: Callable[..., HttpSink],
) -> None:
    receiver = make_receiver(secret=SECRET)
    batch = [{"event": "page_view", "path": "/é", "n": n} for n in range(200)]
    http_sink(receiver.url, gzip=True, secret=SECRET)(batch)
    (request,) = receiver.requests
    assert request.headers["content-encoding"] == "gzip"
    assert int(request.headers["content-length"]) < len(request.body) / 4
    assert request.body == json_serializer(batch)
    assert request.verified is True
    assert receiver.items == batch
    assert gzip.decompress(gzip.compress(request.body)) == request.body


def test_user_headers_may_override_content_type_but_not_the_webhook_headers(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    mine = {"Content-Type": "application/x-ndjson", "Webhook-Id": "mine", "webhook-timestamp": "1",
            "X-Webhook-Id": "mine too"}
    ndjson = {"serializer": lambda batch: "\n".join(json.dumps(i) for i in batch).encode()}
    http_sink(receiver.url, headers=mine, **ndjson)([1, 2])
    http_sink(receiver.url, headers=mine, signature="x-webhook", **ndjson)([3])
    standard, legacy = receiver.requests
    assert standard.headers["content-type"] == "application/x-ndjson"
    assert standard.headers["webhook-id"] != "mine"  # in whatever case it was written
    assert standard.headers["webhook-timestamp"] != "1"
    assert standard.headers["x-webhook-id"] == "mine too"  # not a header of this scheme
    assert standard.body == b"1\n2"
    assert legacy.headers["x-webhook-id"] != "mine too"
    assert legacy.headers["webhook-id"] == "mine"


# -- serialization ----------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        (datetime.datetime(2024, 5, 1), "datetime"), ({1, 2}, "set"), (object(), "object"),
        (float("nan"), "Out of range float values are not JSON compliant"),
        ({"nested": [b"bytes"]}, "bytes"), ({(1, 2): "tuple key"}, "keys must be"),
    ],
)
def test_a_non_json_item_names_its_index_and_type(bad: Any, named: str) -> None:
    with pytest.raises(SerializationError) as caught:
        json_serializer([{"ok": 1}, {"ok": 2}, {"ok": 3}, {"at": bad}])
    message = str(caught.value)
    assert message.startswith("item 3 of the batch is not JSON serializable: ")
    assert named in message
    assert (caught.value.index, caught.value.retryable) == (3, False)


def test_a_serialization_error_fails_its_batch_and_the_worker_goes_on(
    receiver: Receiver, http_sink: Callable[..., HttpSink], make: Any,
) -> None:
    dispatcher = make(http_sink(receiver.url), delay=0.01, retry=QUICK)
    events = Events(dispatcher, "items_exhausted")
    dispatcher.enqueue({"n": 0})
    dispatcher.enqueue({"at": datetime.date(2024, 5, 1)})
    assert dispatcher.flush(10)
    dispatcher.enqueue({"n": 2})
    assert dispatcher.flush(10)
    (exhausted,) = events.of(ItemsExhausted)
    assert exhausted.attempts == 1
    assert isinstance(exhausted.error, SerializationError)
    assert str(exhausted.error) == "item 1 of the batch is not JSON serializable: date"
    assert receiver.items == [{"n": 2}]
    stats = dispatcher.stats()
    assert (stats.failed, stats.dispatched) == (2, 1)


def test_a_failing_custom_serializer_is_a_serialization_error(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    def broken(batch: List[Any]) -> bytes:
        raise KeyError("boom")

    with pytest.raises(SerializationError) as caught:
        http_sink(receiver.url, serializer=broken)([1])
    assert isinstance(caught.value.__cause__, KeyError)
    with pytest.raises(SerializationError, match="must return bytes"):
        http_sink(receiver.url, serializer=lambda batch: "text")([1])
    assert receiver.request_count == 0


# -- secrets ----------------------------------------------------------------


def test_secrets_and_header_values_stay_out_of_reprs_errors_and_logs(
    make_receiver: Callable[..., Receiver], http_sink: Callable[..., HttpSink],
    webhook_sink: Callable[..., WebhookSink], caplog: pytest.LogCaptureFixture, make: Any,
) -> None:
    caplog.set_level(logging.DEBUG)  # urllib3's connection and request logs included
    receiver = make_receiver(secret=SECRET)
    receiver.respond(Response(401, body=b"denied"), Response(401, body=b"denied"))
    # Credentials in the URL are a bad idea (urllib3's debug log shows the query
    # string), but this library's own reprs, errors and logs still hide them.
    token = "query-token-Pq55"
    url = receiver.url.replace("http://", f"http://user:{SECRET}@") + f"hook?token={token}"
    sink = http_sink(url, secret=SECRET, headers={"Authorization": f"Bearer {API_KEY}"}, retries=None)
    endpoint = Endpoint(url, secret=SECRET, headers={"Authorization": API_KEY})
    hooks = webhook_sink({"ep": endpoint}, headers={"X-Api-Key": API_KEY})
    errors: List[BaseException] = []
    dispatcher = make(sink, delay=0.01, on_error=lambda exc, batch: errors.append(exc))
    dispatcher.enqueue({"n": 1})
    assert dispatcher.flush(10)
    with pytest.raises(DeliveryError) as from_hooks:
        hooks("ep", [2])
    sink([3])  # accepted: logged at DEBUG by batchdispatch.http
    with pytest.raises(ValueError, match="http") as bad_url:
        HttpSink(f"ftp://user:{SECRET}@example.com/?k={SECRET}")
    texts = [repr(sink), repr(endpoint), repr(hooks), str(errors[0]), repr(errors[0]), errors[0].url,
             str(from_hooks.value), from_hooks.value.url, str(bad_url.value), caplog.text]
    for text in texts:
        assert SECRET not in text
        assert API_KEY not in text
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("batchdispatch")]
    assert ours
    for text in [*texts[:-1], *ours]:
        assert token not in text
    assert errors[0].url == f"{receiver.url}hook"
    assert "secret=<set>" in repr(endpoint)
    assert "Authorization" in repr(endpoint)
    assert "Authorization" in repr(sink)
    assert receiver.request_count == 3
    assert "127.0.0.1" in caplog.text  # the logs did run


# -- TLS --------------------------------------------------------------------


def test_tls_verification_is_on_by_default(tls_receiver: Receiver, http_sink: Callable[..., HttpSink],
                                           self_signed: Any) -> None:
    with pytest.raises(DeliveryError) as caught:
        http_sink(tls_receiver.url)([1])
    assert caught.value.retryable is False
    assert "TLS error" in str(caught.value)
    assert isinstance(caught.value.__cause__, requests.exceptions.SSLError)
    assert tls_receiver.request_count == 0
    http_sink(tls_receiver.url, verify=self_signed[0])([2])  # trusting that certificate works
    assert tls_receiver.items == [2]


def test_a_tls_handshake_cut_short_is_retryable(http_sink: Callable[..., HttpSink]) -> None:
    # A server (or a load balancer) restarting closes the connection during the handshake;
    # only a certificate that does not verify is final.
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def cut_short() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)  # the ClientHello
            conn.shutdown(socket.SHUT_WR)
            done.wait(10)

    thread = threading.Thread(target=cut_short)
    thread.start()
    try:
        with pytest.raises(DeliveryError) as caught:
            http_sink(f"https://127.0.0.1:{server.getsockname()[1]}/in", retries=0)([1])
    finally:
        done.set()
        thread.join(10)
        server.close()
    assert "TLS error" in str(caught.value)
    assert caught.value.retryable is True


# -- sessions and configuration ---------------------------------------------


def test_default_retry_matches_the_issue() -> None:
    retry = default_retry()
    assert retry.total == 5
    assert tuple(retry.status_forcelist) == RETRY_STATUSES == (408, 429, 500, 502, 503, 504)
    assert retry.allowed_methods is None  # every method, POST included
    assert retry.respect_retry_after_header is True
    assert retry.raise_on_status is False
    assert retry.backoff_factor > 0


def failed_status(sink: HttpSink, batch: List[Any]) -> Optional[int]:
    """The status of the DeliveryError ``sink(batch)`` raises."""
    with pytest.raises(DeliveryError) as failed:
        sink(batch)
    return failed.value.status


def test_an_error_kept_after_close_holds_no_socket(receiver: Receiver) -> None:
    # stats().last_error keeps the last error for good. Its traceback kept the
    # answer, whose reader held the socket open, the connection ESTABLISHED,
    # after the session had closed it.
    receiver.respond(503)
    sink = HttpSink(receiver.url, retries=0)
    dispatcher = batchdispatch.BackgroundDispatcher(
        sink, delay=0.01, retry=RetryPolicy(max_attempts=1), name="kept-error",
    )
    dispatcher.enqueue(1)
    assert dispatcher.flush(timeout=30)
    assert dispatcher.shutdown(timeout=30)
    sink.close()
    gc.collect()
    error = dispatcher.stats().last_error
    assert isinstance(error, DeliveryError)
    assert error.status == 503
    assert connections_to(receiver.port) == []


def test_the_own_session_mounts_the_retries_and_is_closed(
    receiver: Receiver, tls_receiver: Receiver, self_signed: Any,
) -> None:
    # Seen from the servers and from this process's sockets, not from the session object:
    # *retries* (total=2, no backoff, its status_forcelist) is mounted for http:// and https://.
    retry = fast_retry(total=2)
    for server, options in ((receiver, {}), (tls_receiver, {"verify": self_signed[0]})):
        sink = HttpSink(server.url, retries=retry, **options)
        server.respond(503, 503, 503)
        started = time.monotonic()
        assert failed_status(sink, [1]) == 503
        assert server.request_count == 3  # the first request and its two retries
        assert time.monotonic() - started < 5  # backoff_factor 0: no sleep between them
        server.respond(503)
        sink([2])  # a retry of urllib3's delivers it
        assert server.items == [2]
        assert connections_to(server.port) != []  # the pooled connection, kept for the next call
        sink.close()
        sink.close()  # idempotent
        assert connections_to(server.port) == []  # the session was closed, and its connections
        assert "closed" in repr(sink)
        with pytest.raises(DeliveryError, match="closed") as closed:
            sink([3])
        assert closed.value.retryable is False
        assert server.request_count == 5


def test_the_own_session_sends_back_the_cookies_an_answer_sets(receiver: Receiver) -> None:
    # The own session sends without Session.request (see http/_direct.py), and keeps its jar as it did.
    receiver.respond(Response(200, headers={"Set-Cookie": "lb=node-2; Path=/"}))
    with HttpSink(receiver.url) as sink:
        sink([1])
        sink([2])
    first, second = receiver.requests
    assert "cookie" not in first.headers
    assert second.headers["cookie"] == "lb=node-2"


def test_the_own_session_sends_the_headers_it_always_sent(receiver: Receiver) -> None:
    with HttpSink(receiver.url, headers={"api-key": "k"}) as sink:
        sink([1])
    headers = receiver.requests[0].headers
    assert headers["accept"] == "*/*"  # requests' session defaults, as before
    assert headers["connection"] == "keep-alive"
    assert headers["accept-encoding"] == "identity"
    assert headers["user-agent"] == USER_AGENT
    assert headers["content-type"] == "application/json"
    assert (headers["content-length"], headers["api-key"]) == ("3", "k")


def test_the_own_session_goes_through_the_proxy_of_the_environment(
    receiver: Receiver, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The receiver stands for the proxy: a proxied request names the whole URL as its target.
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", receiver.url)
    with HttpSink("http://ingest.example.invalid/events") as sink:
        sink([1])
    assert receiver.requests[0].path == "http://ingest.example.invalid/events"
    assert receiver.items == [1]


def test_a_user_session_is_used_as_it_is_and_left_open(receiver: Receiver) -> None:
    with requests.Session() as session:
        session.headers["X-From-Session"] = "yes"
        mounts = dict(session.adapters)
        with HttpSink(receiver.url, session=session) as sink:
            sink([1])
        assert dict(session.adapters) == mounts
        assert session.post(receiver.url, json=[2]).status_code == 200  # still open
        assert receiver.requests[0].headers["x-from-session"] == "yes"
    with requests.Session() as session, pytest.raises(ValueError, match="retries"):
        HttpSink(receiver.url, session=session, retries=3)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"url": "ftp://example.com/"}, ValueError, "http"),
        ({"url": "http:///path"}, ValueError, "host"),
        ({"url": 5}, TypeError, "url must be a str"),
        ({"timeout": 0}, ValueError, "timeout"),
        ({"timeout": (1, 2, 3)}, ValueError, "timeout"),
        ({"timeout": None}, TypeError, "timeout"),
        ({"retries": -1}, ValueError, "retries"),
        ({"retries": "3"}, TypeError, "retries"),
        ({"secret": ""}, ValueError, "secret"),
        ({"secret": 5}, TypeError, "secret"),
        ({"headers": {"a": 1}}, TypeError, "headers"),
        ({"gzip": "yes"}, TypeError, "gzip"),
        ({"serializer": 5}, TypeError, "serializer"),
        ({"session": object()}, TypeError, "session"),
        ({"verify": None}, TypeError, "verify"),
    ],
)
def test_bad_arguments_are_rejected_by_name(options: Any, error: type, match: str) -> None:
    options = {"url": "http://127.0.0.1:9/", **options}
    with pytest.raises(error, match=match):
        HttpSink(options.pop("url"), **options)


def test_exceptions_share_the_library_root() -> None:
    assert issubclass(DeliveryError, BatchDispatchError)
    assert issubclass(SerializationError, DeliveryError)
    assert issubclass(UnknownEndpointError, DeliveryError)


# -- WebhookSink ------------------------------------------------------------


def test_webhook_sink_applies_per_endpoint_secrets_headers_and_timeouts(
    make_receiver: Callable[..., Receiver], webhook_sink: Callable[..., WebhookSink], make_keyed: Any,
) -> None:
    a, b, slow = make_receiver(secret="secret-a"), make_receiver(secret="secret-b"), make_receiver()
    slow.respond(Response(delay=5.0))
    sink = webhook_sink(
        {
            "a": Endpoint(a.url, secret="secret-a", headers={"X-Tenant": "a"}),
            "b": Endpoint(b.url + "hooks/b", secret=b"secret-b", headers={"X-Shared": "endpoint"}),
            "slow": Endpoint(slow.url, timeout=(1, 0.3)),
        },
        headers={"X-Shared": "sink", "X-Sink": "yes"}, timeout=30, retries=None,
    )
    hooks = make_keyed(sink, delay=0.01, max_concurrent_batches=3, retry=QUICK.new(max_attempts=1))
    hooks.enqueue("a", {"to": "a"})
    hooks.enqueue("b", {"to": "b"})
    hooks.enqueue("slow", {"to": "slow"})
    assert hooks.flush(timeout=10)
    (to_a,), (to_b,) = a.requests, b.requests
    assert (to_a.verified, to_b.verified) == (True, True)
    headers_a = to_a.headers
    assert (headers_a["x-tenant"], headers_a["x-shared"], headers_a["x-sink"]) == ("a", "sink", "yes")
    assert (to_b.headers["x-shared"], to_b.path) == ("endpoint", "/hooks/b")
    assert "webhook-signature" not in slow.requests[0].headers
    assert "webhook-id" in slow.requests[0].headers
    assert (a.items, b.items, slow.items) == ([{"to": "a"}], [{"to": "b"}], [])
    stats = hooks.stats()
    assert (stats.dispatched, stats.failed) == (2, 1)  # the 0.3 s endpoint timed out, not the sink's 30 s


def test_an_unknown_endpoint_id_is_given_up_at_once_with_the_id(
    webhook_sink: Callable[..., WebhookSink], make_keyed: Any,
) -> None:
    hooks = make_keyed(webhook_sink(), delay=0.01, retry=QUICK)
    events = Events(hooks, "items_exhausted")
    hooks.enqueue("ep-missing", {"n": 1})
    assert hooks.flush(timeout=10)
    (exhausted,) = events.of(ItemsExhausted)
    assert exhausted.attempts == 1
    assert exhausted.key == "ep-missing"
    error = exhausted.error
    assert isinstance(error, UnknownEndpointError)
    assert (error.endpoint_id, error.retryable) == ("ep-missing", False)
    assert "'ep-missing'" in str(error)
    assert hooks.stats().failed == 1


def test_endpoints_can_be_added_and_removed_while_a_keyed_dispatcher_runs(
    receiver: Receiver, webhook_sink: Callable[..., WebhookSink], make_keyed: Any,
) -> None:
    sink = webhook_sink({"ep-1": Endpoint(receiver.url + "1")})
    hooks = make_keyed(sink, delay=0.01, max_concurrent_batches=4)
    errors: List[BaseException] = []
    hooks.on("items_exhausted", lambda e: errors.append(e.error))
    hooks.enqueue("ep-1", "first")
    assert hooks.flush(timeout=10)
    sink.add("ep-2", Endpoint(receiver.url + "2"))
    hooks.enqueue("ep-2", "second")
    assert hooks.flush(timeout=10)
    sink.remove("ep-1")
    sink.remove("never-there")  # no error
    hooks.enqueue("ep-1", "lost")
    assert hooks.flush(timeout=10)
    assert [(r.path, r.items) for r in receiver.requests] == [("/1", ["first"]), ("/2", ["second"])]
    assert [type(e) for e in errors] == [UnknownEndpointError]
    assert set(sink.endpoints) == {"ep-2"}

    # Churn: endpoints come and go on another thread while batches fly.
    stop = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            for n in range(8):
                sink.add(f"ep-{n}", Endpoint(receiver.url + str(n)))
            for n in range(0, 8, 2):
                sink.remove(f"ep-{n}")

    thread = threading.Thread(target=churn)
    thread.start()
    try:
        for i in range(400):
            hooks.enqueue(f"ep-{i % 8}", i)
        assert hooks.flush(timeout=30)
    finally:
        stop.set()
        thread.join()
    stats = hooks.stats()
    assert stats.dispatched + stats.failed == stats.enqueued
    assert all(isinstance(e, UnknownEndpointError) for e in errors)
    assert receiver.item_count == stats.dispatched


def test_endpoint_rejects_bad_values_and_is_immutable() -> None:
    with pytest.raises(ValueError, match="Endpoint url"):
        Endpoint("mailto:x@example.com")
    with pytest.raises(TypeError, match="Endpoint secret"):
        Endpoint("https://a.example/", secret=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be an Endpoint"):
        WebhookSink({"a": "https://a.example/"})  # type: ignore[dict-item]
    headers = {"X-A": "1"}
    endpoint = Endpoint("https://a.example/", headers=headers)
    headers["X-A"] = "2"
    assert endpoint.headers == {"X-A": "1"}


# -- the package, the examples ----------------------------------------------


def test_import_batchdispatch_does_not_import_requests() -> None:
    result = run_python(
        """
        import sys
        import batchdispatch, batchdispatch.testing
        assert "requests" not in sys.modules and "urllib3" not in sys.modules, "imported requests"
        import batchdispatch.http
        assert "requests" in sys.modules
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def _run_example(name: str) -> Any:
    path = os.path.join(ROOT, "examples", name)
    result = run_python(f"import runpy; runpy.run_path({path!r}, run_name='__main__')",
                        env={"PYTHONWARNINGS": "error"})
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_example_signed_webhooks_runs() -> None:
    lines = _run_example("signed_webhooks.py").stdout.splitlines()
    assert lines == [
        "ep-shop: delivered 20 events in 1 request, 2 signatures, verified with the new key",
        "ep-flaky: 503, then delivered 20 events with the same webhook-id",
        "ep-gone: answered 410 to 1 request; disabled ['ep-gone'], 40 events given up",
        "delivered 40, failed 40",
    ]


def test_example_receive_webhooks_runs() -> None:
    lines = _run_example("receive_webhooks.py").stdout.splitlines()
    assert lines == [
        "genuine request: accepted 3 events",
        "tampered body: rejected (401)",
        "replayed under another webhook-id: rejected (401)",
        "replayed after 10 minutes: rejected (401)",
        "duplicate webhook-id: ignored, already processed",
    ]
