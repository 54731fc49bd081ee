"""What the sinks send verifies with the Standard Webhooks reference library, over real HTTP.

The sinks POST to a Receiver on 127.0.0.1; each recorded request is then
checked with ``standardwebhooks.Webhook(secret).verify(body, headers)``,
the library a receiver built on the specification uses, with no code of
ours. The signing primitives are tested in ``tests/test_webhooks.py``.
"""

from __future__ import annotations

import base64
from typing import Any, Callable, List

import pytest
import requests
from standardwebhooks import Webhook, WebhookVerificationError

from batchdispatch import RetryPolicy
from batchdispatch.exceptions import EndpointGoneError
from batchdispatch.http import Endpoint, HttpSink, WebhookSink, verify_webhook
from batchdispatch.testing import Receiver

NEW = "whsec_" + base64.b64encode(b"the new key, 32 bytes long......").decode()
OLD = "whsec_" + base64.b64encode(b"the old key, rotated out........").decode()
QUICK = RetryPolicy(max_attempts=3, backoff=0.01, jitter=False)


def library_verifies(request: Any, secret: Any) -> bool:
    try:
        items = Webhook(secret).verify(request.body, request.headers)
    except WebhookVerificationError:
        return False
    assert items == request.items
    return True


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (NEW, NEW),  # whsec_<base64>: the same string on both sides
        (b"raw key bytes", b"raw key bytes"),
        ("raw key text", b"raw key text"),  # the library reads a str as base64: give it the bytes
    ],
)
@pytest.mark.parametrize("gzip", [False, True])
def test_the_reference_library_verifies_what_a_webhook_sink_sent(
    make_receiver: Callable[..., Receiver], webhook_sink: Callable[..., WebhookSink], make_keyed: Any,
    ours: Any, theirs: Any, gzip: bool,
) -> None:
    receiver = make_receiver(secret=ours)
    receiver.respond(503)  # retried by urllib3: the same id and body, a new timestamp at most
    sink = webhook_sink({"ep": Endpoint(receiver.url, secret=ours)}, gzip=gzip)
    hooks = make_keyed(sink, delay=0.01, max_batch_size=10)
    events = [{"event": "invoice.paid", "n": n, "text": "é"} for n in range(25)]
    for item in events:
        hooks.enqueue("ep", item)
    assert hooks.flush(timeout=10)
    assert receiver.items == events
    accepted = [r for r in receiver.requests if r.status == 200]
    assert len(accepted) == 3
    for request in accepted:
        assert request.verified is True
        assert library_verifies(request, theirs)
    first, retried = receiver.requests[:2]
    assert (first.status, first.headers["webhook-id"]) == (503, retried.headers["webhook-id"])


def test_with_two_secrets_a_receiver_on_either_key_verifies_and_one_on_a_third_does_not(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    http_sink(receiver.url, secret=[OLD, NEW])([{"n": 1}])
    (request,) = receiver.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert library_verifies(request, OLD)
    assert library_verifies(request, NEW)
    third = "whsec_" + base64.b64encode(b"a third key").decode()
    assert not library_verifies(request, third)
    assert verify_webhook(request.body, request.headers, [third, NEW])
    assert not verify_webhook(request.body, request.headers, third)


def test_rotating_a_key_without_downtime(
    make_receiver: Callable[..., Receiver], webhook_sink: Callable[..., WebhookSink], make_keyed: Any,
) -> None:
    # The procedure of the docs: the sender signs with both keys, each receiver
    # moves to the new one whenever it likes, then the sender drops the old.
    # One receiver is on each key throughout, to see each phase from both.
    on_old, on_new = make_receiver(secret=OLD), make_receiver(secret=NEW)
    sink = webhook_sink({"old": Endpoint(on_old.url, secret=OLD), "new": Endpoint(on_new.url, secret=OLD)})
    hooks = make_keyed(sink, delay=0.01, retry=QUICK.new(max_attempts=1))
    sent: List[Any] = []

    def step(n: int) -> None:
        sent.append(n)
        hooks.enqueue("old", n)
        hooks.enqueue("new", n)
        assert hooks.flush(timeout=10)

    step(1)  # the sender on the old key: a receiver that moved first would refuse
    assert (on_old.items, on_new.items) == ([1], [])
    sink.add("old", Endpoint(on_old.url, secret=[OLD, NEW]))
    sink.add("new", Endpoint(on_new.url, secret=[OLD, NEW]))
    step(2)  # signed with both: a receiver on either key accepts
    sink.add("old", Endpoint(on_old.url, secret=NEW))
    sink.add("new", Endpoint(on_new.url, secret=NEW))
    step(3)  # the old key dropped: only a receiver on the new key accepts
    assert on_old.items == [1, 2]
    assert on_new.items == [2, 3]


def test_each_body_of_a_split_batch_verifies_with_its_own_id(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    batch = [{"n": n, "pad": "x" * 100} for n in range(10)]
    http_sink(receiver.url, secret=NEW, max_body_bytes=400)(batch)
    requests_seen = receiver.requests
    assert len(requests_seen) > 2
    assert len({r.headers["webhook-id"] for r in requests_seen}) == len(requests_seen)
    assert all(library_verifies(r, NEW) for r in requests_seen)
    assert receiver.items == batch


def test_a_captured_request_replayed_under_a_fresh_id_is_refused(
    make_receiver: Callable[..., Receiver], http_sink: Callable[..., HttpSink],
) -> None:
    # Issue 15: the id is signed, so a receiver that deduplicates on it cannot
    # be made to process a captured request twice within the window.
    capture = make_receiver()
    http_sink(capture.url, secret=NEW)([{"event": "invoice.paid"}])
    (captured,) = capture.requests
    target = make_receiver(secret=NEW)
    with requests.Session() as session:
        as_sent = session.post(target.url, data=captured.body, headers=captured.headers)
        fresh = {**captured.headers, "webhook-id": "fresh"}
        replayed = session.post(target.url, data=captured.body, headers=fresh)
    assert (as_sent.status_code, replayed.status_code) == (200, 401)
    assert not library_verifies(target.requests[1], NEW)
    assert target.items == [{"event": "invoice.paid"}]


def test_the_scheme_of_0_1_does_not_cover_the_id(
    make_receiver: Callable[..., Receiver], http_sink: Callable[..., HttpSink],
) -> None:
    # Why signature="x-webhook" is weaker: the same replay goes through.
    capture = make_receiver()
    http_sink(capture.url, secret=NEW, signature="x-webhook")([{"event": "invoice.paid"}])
    (captured,) = capture.requests
    target = make_receiver(secret=NEW)
    with requests.Session() as session:
        replayed = session.post(target.url, data=captured.body,
                                headers={**captured.headers, "x-webhook-id": "fresh"})
    assert replayed.status_code == 200
    assert target.items == [{"event": "invoice.paid"}]


def test_the_receiver_refuses_unsigned_and_wrongly_signed_requests_in_either_scheme(
    make_receiver: Callable[..., Receiver], http_sink: Callable[..., HttpSink],
) -> None:
    receiver = make_receiver(secret=[OLD, NEW])
    for signature in ("standard", "x-webhook"):
        http_sink(receiver.url, secret=NEW, signature=signature)([signature])
        with pytest.raises(Exception, match="401"):
            http_sink(receiver.url, secret=b"wrong", signature=signature, retries=None)(["wrong"])
    with pytest.raises(Exception, match="401"):
        http_sink(receiver.url, retries=None)(["unsigned"])
    assert receiver.items == ["standard", "x-webhook"]
    assert [r.verified for r in receiver.requests] == [True, False, True, False, False]


def test_new_secrets_and_errors_never_show_a_secret(
    receiver: Receiver, webhook_sink: Callable[..., WebhookSink], caplog: pytest.LogCaptureFixture,
) -> None:
    bad = "whsec_Zz9!-not-base64-do-not-leak"
    raised: List[BaseException] = []
    for build in (lambda: HttpSink("http://127.0.0.1:9/", secret=bad),
                  lambda: Endpoint("http://127.0.0.1:9/", secret=[NEW, bad], signature="standard"),
                  lambda: WebhookSink({"ep": Endpoint("http://127.0.0.1:9/", secret=bad)}),
                  lambda: HttpSink("http://127.0.0.1:9/", secret=[NEW, OLD], signature="x-webhook"),
                  lambda: Receiver(secret=bad),
                  lambda: verify_webhook(b"[]", {}, bad)):
        with pytest.raises(ValueError, match="secret") as caught:
            build()
        raised.append(caught.value)
    receiver.respond(410)
    endpoint = Endpoint(receiver.url, secret=[OLD, NEW])
    sink = webhook_sink({"ep": endpoint})
    with pytest.raises(EndpointGoneError) as gone:
        sink("ep", [1])
    texts = [str(e) for e in raised] + [str(gone.value), repr(endpoint), repr(sink), caplog.text]
    for secret in (bad, NEW, OLD, NEW[6:], OLD[6:]):
        assert all(secret not in text for text in texts)
    assert "secret=<2 set>" in repr(endpoint)
    assert "secret[1]" in str(raised[1])  # the one that is wrong, by its position
