"""Bodies within a byte limit: max_body_bytes, 413 splits, and each body's webhook-id, over real HTTP.

Receivers on 127.0.0.1 that refuse bodies above N bytes with 413, as
ingest APIs do (PostHog, Segment, Datadog, CloudWatch); the sinks in front
of them; dispatchers (with a spool where items must become dead letters).
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any, Callable, Dict, List

import pytest

from batchdispatch import PartialFailure, RetryPolicy
from batchdispatch.exceptions import DeliveryError, ItemTooLargeError
from batchdispatch.http import Endpoint, HttpSink, WebhookSink, json_serializer
from batchdispatch.spool import SqliteSpool
from batchdispatch.testing import Receiver, Response

QUICK = RetryPolicy(max_attempts=4, backoff=0.01, jitter=False)
LIMIT = 1_000


def event(key: str, n: int, size: int) -> Dict[str, Any]:
    return {"key": key, "n": n, "pad": "x" * size}


def ndjson(batch: List[Any]) -> bytes:
    return b"".join(json.dumps(item, separators=(",", ":")).encode() + b"\n" for item in batch)


def accepted(receiver: Receiver) -> List[Any]:
    return [r for r in receiver.requests if 200 <= r.status < 300]


# -- max_body_bytes ------------------------------------------------------------


@pytest.mark.parametrize("sink_limit", [LIMIT, None])  # the sink knows the limit, or learns it from 413s
def test_a_receiver_that_refuses_bodies_above_n_bytes_gets_every_item_in_order_per_key(
    make_receiver: Callable[..., Receiver], webhook_sink: Callable[..., WebhookSink], make_keyed: Any,
    sink_limit: Any,
) -> None:
    keys = ["ep-a", "ep-b", "ep-c"]
    receivers = {key: make_receiver(max_body_bytes=LIMIT) for key in keys}
    sink = webhook_sink({key: Endpoint(r.url) for key, r in receivers.items()}, max_body_bytes=sink_limit)
    hooks = make_keyed(sink, delay=0.01, max_batch_size=40, max_concurrent_batches=3, retry=QUICK)
    sizes = random.Random(15)
    sent: Dict[str, List[Any]] = {key: [] for key in keys}
    for n in range(120):
        for key in keys:
            item = event(key, n, sizes.randrange(0, 300))
            sent[key].append(item)
            hooks.enqueue(key, item)
    assert hooks.flush(timeout=30)
    for key, receiver in receivers.items():
        assert receiver.items == sent[key]  # every item, once, in order
        assert all(len(r.body) <= LIMIT for r in accepted(receiver))
        if sink_limit is not None:
            assert receiver.request_count == len(accepted(receiver))  # no 413: the sink stayed within
    stats, sink_stats = hooks.stats(), sink.stats()
    assert (stats.dispatched, stats.failed) == (360, 0)
    if sink_limit is None:
        assert sink_stats.splits > 0
        assert sink_stats.splits == sum(r.status == 413 for rs in receivers.values() for r in rs.requests)
    else:
        assert sink_stats.splits == 0
        assert sink_stats.chunked > 0
    assert sink_stats.posts == sum(rs.request_count for rs in receivers.values())


def test_bodies_are_packed_in_order_and_as_json_serializer_writes_them(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    batch = [event("k", n, 50 + n) for n in range(30)]
    sink = http_sink(receiver.url, max_body_bytes=LIMIT)
    sink(batch)
    requests = receiver.requests
    assert receiver.items == batch
    assert all(len(r.body) <= LIMIT for r in requests)
    assert [r.body for r in requests] == [json_serializer(r.items) for r in requests]
    # Greedy: each body but the last could not take the next item too.
    for request, following in zip(requests, requests[1:]):
        assert len(json_serializer([*request.items, following.items[0]])) > LIMIT
    assert len(json_serializer(batch)) > LIMIT
    assert sink.stats().chunked == 1


def test_a_batch_within_the_limit_is_one_body_as_before(
    receiver: Receiver, http_sink: Callable[..., HttpSink], make: Any,
) -> None:
    dispatcher = make(http_sink(receiver.url, max_body_bytes=LIMIT), delay=0.01)
    batch = [event("k", n, 10) for n in range(10)]
    for item in batch:
        dispatcher.enqueue(item)
    assert dispatcher.flush(10)
    (request,) = receiver.requests
    assert request.body == json_serializer(batch)


def test_another_serializer_is_halved_until_each_body_fits(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    batch = [event("k", n, 90) for n in range(25)]
    sink = http_sink(receiver.url, serializer=ndjson, headers={"Content-Type": "application/x-ndjson"},
                     max_body_bytes=LIMIT)
    sink(batch)
    bodies = [r.body for r in receiver.requests]
    assert all(len(body) <= LIMIT for body in bodies)
    assert b"".join(bodies) == ndjson(batch)  # in order, nothing lost or repeated
    assert len(bodies) > 1


def test_the_limit_applies_to_the_body_before_gzip(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    batch = [event("k", n, 200) for n in range(20)]  # compresses very well
    http_sink(receiver.url, gzip=True, max_body_bytes=LIMIT)(batch)
    requests = receiver.requests
    assert receiver.items == batch
    assert len(requests) > 1
    assert all(len(r.body) <= LIMIT for r in requests)  # decoded bodies within the limit
    assert all(int(r.headers["content-length"]) < LIMIT / 4 for r in requests)  # much less on the wire


def test_an_item_too_large_alone_fails_by_itself_naming_its_index_and_size(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    small, big = event("k", 0, 10), event("k", 1, 2 * LIMIT)
    batch = [small, big, event("k", 2, 10), big, event("k", 4, 10)]
    sink = http_sink(receiver.url, max_body_bytes=LIMIT)
    with pytest.raises(PartialFailure) as raised:
        sink(batch)
    assert raised.value.failed_items == [big, big]
    assert raised.value.retryable is False
    error = raised.value.cause
    assert isinstance(error, ItemTooLargeError)
    size = len(json_serializer([big]))
    assert (error.oversized, error.limit, error.index, error.size) == (((1, size), (3, size)), LIMIT, 1, size)
    assert str(error) == (f"items 1 ({size:,} bytes), 3 ({size:,} bytes) of the batch are over"
                          f" max_body_bytes ({LIMIT:,}): not sent")
    assert receiver.items == [small, batch[2], batch[4]]  # the rest, in order, in one body
    assert receiver.request_count == 1
    with pytest.raises(ItemTooLargeError, match=rf"item 0 of the batch is {size:,} bytes, over"):
        sink([big])  # alone: the error itself, no request
    assert receiver.request_count == 1
    assert sink.stats().too_large == 3


def test_an_item_too_large_is_given_up_at_once_and_kept_as_a_dead_letter(
    receiver: Receiver, http_sink: Callable[..., HttpSink], make: Any, path: str,
) -> None:
    big = event("k", 1, 2 * LIMIT)
    batch = [event("k", 0, 10), big, event("k", 2, 10)]
    with SqliteSpool(path) as spool:
        dispatcher = make(http_sink(receiver.url, max_body_bytes=LIMIT), delay=0.01, max_batch_size=3,
                          retry=QUICK, spool=spool)
        exhausted: List[Any] = []
        dispatcher.on("items_exhausted", exhausted.append)
        for item in batch:
            dispatcher.enqueue(item)
        assert dispatcher.flush(10)
        stats = dispatcher.stats()
        assert (stats.dispatched, stats.failed, stats.dead_lettered, stats.retried) == (2, 1, 1, 0)
        assert receiver.items == [batch[0], batch[2]]
        (letter,) = spool.dead_letters()
        assert letter.item == big
        assert "ItemTooLargeError: item 1 of the batch is" in letter.error
        assert [(e.items, e.attempts) for e in exhausted] == [((big,), 1)]
        assert dispatcher.shutdown(10)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "1000", True])
def test_a_bad_max_body_bytes_is_refused_by_name(bad: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="max_body_bytes"):
        HttpSink("http://127.0.0.1:9/", max_body_bytes=bad)
    with pytest.raises((TypeError, ValueError), match="Endpoint max_body_bytes"):
        Endpoint("http://127.0.0.1:9/", max_body_bytes=bad)
    with pytest.raises((TypeError, ValueError), match="max_body_bytes"):
        WebhookSink(max_body_bytes=bad)


def test_an_endpoints_limit_is_over_the_sinks(
    make_receiver: Callable[..., Receiver], webhook_sink: Callable[..., WebhookSink],
) -> None:
    tight, loose = make_receiver(max_body_bytes=300), make_receiver()
    sink = webhook_sink({"tight": Endpoint(tight.url, max_body_bytes=300), "loose": Endpoint(loose.url)},
                        max_body_bytes=LIMIT)
    batch = [event("k", n, 100) for n in range(6)]
    sink("tight", batch)
    sink("loose", batch)
    assert (tight.items, loose.items) == (batch, batch)
    assert all(len(r.body) <= 300 for r in tight.requests)
    assert all(len(r.body) <= LIMIT for r in loose.requests)
    assert tight.request_count > loose.request_count == 1
    assert "max_body_bytes=300" in repr(sink.endpoints["tight"])


# -- 413 --------------------------------------------------------------------------


def test_a_413_halves_in_order_and_a_part_that_fails_later_holds_back_the_rest(
    make_receiver: Callable[..., Receiver], http_sink: Callable[..., HttpSink], make: Any,
) -> None:
    # The whole batch draws 413 ("[0,1,2,3,4,5]" is 13 bytes), its first half
    # a 503: the second half must not overtake it. The dispatcher retries the
    # batch, which is split again, in order.
    receiver = make_receiver(max_body_bytes=10)
    receiver.respond(503)
    dispatcher = make(http_sink(receiver.url, retries=None), delay=0.01, max_batch_size=6, retry=QUICK)
    for n in range(6):
        dispatcher.enqueue(n)
    assert dispatcher.flush(10)
    assert receiver.items == [0, 1, 2, 3, 4, 5]
    requests = receiver.requests
    assert [(r.status, r.items) for r in requests] == [
        (413, [0, 1, 2, 3, 4, 5]), (503, [0, 1, 2]),
        (413, [0, 1, 2, 3, 4, 5]), (200, [0, 1, 2]), (200, [3, 4, 5]),
    ]
    assert requests[1].headers["webhook-id"] == requests[3].headers["webhook-id"]
    assert dispatcher.stats().failed == 0


def test_a_413_split_is_counted_and_logged_once_a_minute_with_the_advice(
    receiver: Receiver, http_sink: Callable[..., HttpSink], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="batchdispatch.http")
    sink = http_sink(receiver.url)
    receiver.respond(413, 413)  # the batch, then its first half
    sink(list(range(8)))
    receiver.respond(413)
    sink(list(range(8)))
    assert sink.stats().splits == 3
    assert receiver.items == list(range(8)) * 2
    warnings = [r.getMessage() for r in caplog.records if r.name == "batchdispatch.http"]
    assert len(warnings) == 1
    assert "answered 413 to a body of 17 bytes (8 items): sending it in halves" in warnings[0]
    assert "max_body_bytes" in warnings[0]


# -- webhook-id of each body ---------------------------------------------------------


def test_each_body_has_its_own_id_and_keeps_it_when_the_dispatcher_retries_it(
    receiver: Receiver, http_sink: Callable[..., HttpSink], make: Any,
) -> None:
    # Three bodies of two items; the second is answered 503 (after the receiver
    # processed it, say: the answer was lost). The dispatcher retries the rest
    # as a new batch; the body sent again carries the id it had.
    receiver.respond(200, 503)
    batch = [event("k", n, 300) for n in range(6)]
    dispatcher = make(http_sink(receiver.url, retries=None, max_body_bytes=700), delay=0.01, max_batch_size=6,
                      retry=QUICK)
    for item in batch:
        dispatcher.enqueue(item)
    assert dispatcher.flush(10)
    requests = receiver.requests
    assert [(r.status, [i["n"] for i in r.items]) for r in requests] == [
        (200, [0, 1]), (503, [2, 3]), (200, [2, 3]), (200, [4, 5]),
    ]
    ids = [r.headers["webhook-id"] for r in requests]
    assert ids[1] == ids[2]  # the same body, the same id
    assert len({ids[0], ids[1], ids[3]}) == 3  # different bodies, different ids
    base = ids[0].split(".")[0]
    assert ids == [f"{base}.0-2", f"{base}.2-4", f"{base}.2-4", f"{base}.4-6"]
    assert receiver.items == batch


def test_a_413_half_retried_by_the_dispatcher_keeps_its_id(
    receiver: Receiver, http_sink: Callable[..., HttpSink], make: Any,
) -> None:
    receiver.respond(413, 200, Response(503))  # whole: 413; first half: 200; second half: 503
    dispatcher = make(http_sink(receiver.url, retries=None), delay=0.01, max_batch_size=4, retry=QUICK)
    for n in range(4):
        dispatcher.enqueue(n)
    assert dispatcher.flush(10)
    requests = receiver.requests
    assert [(r.status, r.items) for r in requests] == [
        (413, [0, 1, 2, 3]), (200, [0, 1]), (503, [2, 3]), (200, [2, 3]),
    ]
    assert requests[2].headers["webhook-id"] == requests[3].headers["webhook-id"]
    assert len({r.headers["webhook-id"] for r in requests}) == 3


def test_a_whole_batch_retried_keeps_the_batch_id(
    receiver: Receiver, http_sink: Callable[..., HttpSink], make: Any,
) -> None:
    receiver.respond(503)
    dispatcher = make(http_sink(receiver.url, retries=None, max_body_bytes=LIMIT), delay=0.01, retry=QUICK)
    dispatcher.enqueue(1)
    assert dispatcher.flush(10)
    first, second = receiver.requests
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert "." not in first.headers["webhook-id"]  # the batch id itself


def test_a_call_that_fails_entirely_raises_its_own_error(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    receiver.respond(400)
    with pytest.raises(DeliveryError) as raised:
        http_sink(receiver.url, max_body_bytes=LIMIT)([1, 2])
    assert not isinstance(raised.value, PartialFailure)
    assert (raised.value.status, raised.value.retryable) == (400, False)


def test_after_a_final_failure_of_one_body_the_others_are_still_sent(
    receiver: Receiver, http_sink: Callable[..., HttpSink],
) -> None:
    receiver.respond(200, 422, 200)
    batch = [event("k", n, 300) for n in range(6)]
    with pytest.raises(PartialFailure) as raised:
        http_sink(receiver.url, max_body_bytes=700)(batch)
    assert raised.value.failed_items == batch[2:4]
    assert raised.value.retryable is False
    assert receiver.items == batch[:2] + batch[4:]
