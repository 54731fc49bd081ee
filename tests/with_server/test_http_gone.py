"""410 Gone: a WebhookSink disables the endpoint, and only that one; an HttpSink fails the batch, final.

Real receivers on 127.0.0.1, real KeyedDispatchers (and a SqliteSpool
where the items must become dead letters).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, List

import pytest

from batchdispatch import PartialFailure, RetryPolicy
from batchdispatch.events import ItemsExhausted
from batchdispatch.exceptions import DeliveryError, EndpointGoneError
from batchdispatch.http import Endpoint, HttpSink, WebhookSink
from batchdispatch.spool import SqliteSpool
from batchdispatch.testing import Receiver, Response

QUICK = RetryPolicy(max_attempts=5, backoff=0.01, jitter=False)


def test_a_410_stops_requests_to_that_endpoint_while_the_others_go_on(
    make_receiver: Callable[..., Receiver], webhook_sink: Callable[..., WebhookSink], make_keyed: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="batchdispatch.http")
    ok, gone, other = make_receiver(), make_receiver(), make_receiver()
    gone.respond(Response(410, body=b"deleted"))
    sink = webhook_sink({"ep-ok": Endpoint(ok.url), "ep-gone": Endpoint(gone.url),
                         "ep-other": Endpoint(other.url)})
    # Batches of 5: the endpoint's pending batches are given up after the first one's 410.
    hooks = make_keyed(sink, delay=0.01, max_batch_size=5, max_concurrent_batches=3, retry=QUICK)
    exhausted: List[ItemsExhausted] = []
    hooks.on("items_exhausted", exhausted.append)
    for wave in range(3):
        for n in range(20):
            for key in ("ep-ok", "ep-gone", "ep-other"):
                hooks.enqueue(key, {"wave": wave, "n": n})
        assert hooks.flush(timeout=20)
    expected = [{"wave": w, "n": n} for w in range(3) for n in range(20)]
    assert (ok.items, other.items) == (expected, expected)
    assert gone.request_count == 1  # no request after the 410
    assert (gone.requests[0].status, gone.items) == (410, [])
    stats, sink_stats = hooks.stats(), sink.stats()
    assert (stats.dispatched, stats.failed, stats.retried) == (120, 60, 0)
    assert (sink_stats.endpoint_gone, sink_stats.disabled) == (60, ("ep-gone",))
    assert sink.disabled == ("ep-gone",)
    assert {e.key for e in exhausted} == {"ep-gone"}
    assert sum(len(e.items) for e in exhausted) == 60
    assert all(e.attempts == 1 for e in exhausted)
    errors = [e.error for e in exhausted]
    assert all(isinstance(e, EndpointGoneError) and e.reason == "endpoint_gone" for e in errors)
    assert all(e.endpoint_id == "ep-gone" and e.retryable is False for e in errors)
    assert [e.status for e in errors] == [410] + [None] * (len(errors) - 1)
    assert "deleted" in str(errors[0])
    assert "sink.enable('ep-gone')" in str(errors[-1])
    warnings = [r.getMessage() for r in caplog.records if r.name == "batchdispatch.http"]
    assert len(warnings) == 1
    assert warnings[0].startswith("endpoint 'ep-gone' (")
    assert "410 Gone: disabled" in warnings[0]


def test_enable_turns_the_endpoint_back_on(
    receiver: Receiver, webhook_sink: Callable[..., WebhookSink], make_keyed: Any,
) -> None:
    receiver.respond(410)
    sink = webhook_sink({"ep": Endpoint(receiver.url)})
    hooks = make_keyed(sink, delay=0.01)
    hooks.enqueue("ep", "first")
    assert hooks.flush(timeout=10)
    hooks.enqueue("ep", "while disabled")
    assert hooks.flush(timeout=10)
    assert receiver.request_count == 1
    assert sink.enable("ep") is True
    assert sink.enable("ep") is False  # already on
    assert sink.disabled == ()
    hooks.enqueue("ep", "after enable")
    assert hooks.flush(timeout=10)
    assert receiver.items == ["after enable"]
    assert hooks.stats().failed == 2
    assert sink.stats().disabled == ()


def test_with_a_spool_the_items_of_a_gone_endpoint_become_dead_letters(
    receiver: Receiver, webhook_sink: Callable[..., WebhookSink], make_keyed: Any, path: str,
) -> None:
    receiver.respond(410)
    with SqliteSpool(path) as spool:
        hooks = make_keyed(webhook_sink({"ep": Endpoint(receiver.url)}), delay=0.01, max_batch_size=2,
                           retry=QUICK, spool=spool)
        for n in range(6):
            hooks.enqueue("ep", n)
        assert hooks.flush(timeout=10)
        assert hooks.stats().dead_lettered == 6
        letters = spool.dead_letters()
        assert sorted(letter.item for letter in letters) == list(range(6))
        assert all(letter.error.startswith("EndpointGoneError: ") for letter in letters)
        assert all(letter.key == "ep" for letter in letters)
        assert receiver.request_count == 1
        assert hooks.shutdown(timeout=10)


def test_replacing_a_disabled_endpoint_with_another_enables_it_and_the_same_one_does_not(
    make_receiver: Callable[..., Receiver], webhook_sink: Callable[..., WebhookSink],
) -> None:
    old, new = make_receiver(), make_receiver()
    old.respond(410)
    sink = webhook_sink({"ep": Endpoint(old.url)})
    with pytest.raises(EndpointGoneError):
        sink("ep", [1])
    sink.add("ep", Endpoint(old.url))  # equal: still gone
    with pytest.raises(EndpointGoneError):
        sink("ep", [2])
    sink.add("ep", Endpoint(new.url))
    sink("ep", [3])
    assert (old.request_count, new.items) == (1, [3])
    old.respond(410)
    sink.add("ep", Endpoint(old.url))
    with pytest.raises(EndpointGoneError):
        sink("ep", [4])
    sink.remove("ep")  # forgotten altogether
    sink.add("ep", Endpoint(new.url))
    sink("ep", [5])
    assert new.items == [3, 5]


def test_a_410_in_the_middle_of_a_batch_gives_up_the_rest_without_sending_it(
    receiver: Receiver, webhook_sink: Callable[..., WebhookSink],
) -> None:
    receiver.respond(200, 410)
    sink = webhook_sink({"ep": Endpoint(receiver.url, max_body_bytes=60)})
    batch = [{"n": n, "pad": "x" * 20} for n in range(6)]  # one item per body
    with pytest.raises(PartialFailure) as raised:
        sink("ep", batch)
    assert raised.value.failed_items == batch[1:]
    assert isinstance(raised.value.cause, EndpointGoneError)
    assert raised.value.retryable is False
    assert receiver.request_count == 2
    assert receiver.items == batch[:1]
    assert sink.stats().endpoint_gone == 5


def test_an_http_sink_fails_a_410_for_good_but_does_not_disable_anything(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    receiver.respond(410)
    sink = http_sink(receiver.url)
    with pytest.raises(DeliveryError) as raised:
        sink([1])
    assert (raised.value.status, raised.value.retryable) == (410, False)
    assert not isinstance(raised.value, EndpointGoneError)
    sink([2])  # sent: an HttpSink has no endpoint to disable
    assert receiver.items == [2]
    assert (sink.stats().endpoint_gone, sink.stats().disabled) == (1, ())


def test_a_disabled_endpoints_repr_and_stats_say_so(
    receiver: Receiver, webhook_sink: Callable[..., WebhookSink],
) -> None:
    receiver.respond(410)
    sink = webhook_sink({"ep": Endpoint(receiver.url), "other": Endpoint(receiver.url)})
    with pytest.raises(EndpointGoneError):
        sink("ep", [1])
    assert repr(sink) == "<WebhookSink 2 endpoints, 1 disabled>"
    assert sink.stats().posts == 1
