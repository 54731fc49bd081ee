"""RedisStreamSink against a real Redis: the shared one, private ones killed at will, a proxy that cuts."""

from __future__ import annotations

import datetime
import json
import logging
import subprocess
import threading
from typing import Any, Callable, Dict, Iterator, List, Set, Tuple

import pytest

from batchdispatch import PartialFailure, RetryPolicy
from batchdispatch.exceptions import DeliveryError, SerializationError

from ..services import HOST, RedisServer, unique_name
from ..test_fork import collect, fork
from .conftest import wait_for
from .deadline import under_shutdown_deadline
from .proxy import Proxy

redis = pytest.importorskip("redis")
from batchdispatch.sinks.redis import RedisStreamSink  # noqa: E402 - after the skip when redis is missing

FAST_RETRY = RetryPolicy(max_attempts=1000, backoff=0.02, multiplier=2.0, max_backoff=0.2, jitter=False)


@pytest.fixture
def client(redis_url: str) -> Iterator[Any]:
    """A client of the shared Redis; every key a test names with ``keys()`` is deleted after it."""
    made = redis.Redis.from_url(redis_url, socket_timeout=10)
    made.test_keys = []
    yield made
    if made.test_keys:
        made.delete(*made.test_keys)
    made.close()


@pytest.fixture
def stream(client: Any) -> str:
    name = unique_name("stream")
    client.test_keys.append(name)
    return name


@pytest.fixture
def sinks() -> Iterator[Callable[..., RedisStreamSink]]:
    made: List[RedisStreamSink] = []

    def factory(*args: Any, **options: Any) -> RedisStreamSink:
        sink = RedisStreamSink(*args, **options)
        made.append(sink)
        return sink

    yield factory
    for sink in made:
        sink.close()


def read(client: Any, stream: str) -> List[Any]:
    """The items of *stream*, in order, from their ``data`` field."""
    return [json.loads(fields[b"data"]) for _, fields in client.xrange(stream)]


def first_occurrences(values: List[Any]) -> List[Any]:
    seen: List[Any] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen



# -- delivery ------------------------------------------------------------------------------------


def test_each_item_is_an_entry_with_its_json_in_order(make: Any, client: Any, stream: str, redis_url: str,
                                                      sinks: Any) -> None:
    sink = sinks(redis_url, stream)
    dispatcher = make(sink, delay=0.01, max_batch_size=100)
    items = [{"n": n, "text": "é ü 🎉"} for n in range(1000)]
    for item in items:
        dispatcher.enqueue(item)
    assert dispatcher.flush(timeout=30)
    assert read(client, stream) == items
    raw = client.xrange(stream, count=1)[0][1]
    assert raw == {b"data": json.dumps(items[0], separators=(",", ":"), ensure_ascii=False).encode()}
    stats = dispatcher.stats()
    assert (stats.dispatched, stats.failed) == (1000, 0)
    assert stats.batches >= 10


def test_a_keyed_dispatcher_writes_each_key_to_its_stream_in_order(
    make_keyed: Any, client: Any, sinks: Any,
) -> None:
    prefix = unique_name("tenant")
    keys = ["a", "b", "c"]
    client.test_keys += [f"{prefix}:{key}" for key in keys]
    sink = sinks(client, lambda key: f"{prefix}:{key}")
    dispatcher = make_keyed(sink, delay=0.01, max_batch_size=50, max_concurrent_batches=3)
    for n in range(300):
        dispatcher.enqueue(keys[n % 3], {"key": keys[n % 3], "n": n})
    assert dispatcher.flush(timeout=30)
    for key in keys:
        expected = [{"key": key, "n": n} for n in range(300) if keys[n % 3] == key]
        assert read(client, f"{prefix}:{key}") == expected


def test_a_str_stream_serves_every_key(make_keyed: Any, client: Any, stream: str, sinks: Any) -> None:
    dispatcher = make_keyed(sinks(client, stream), delay=0.01)
    dispatcher.enqueue("x", 1)
    dispatcher.enqueue("y", 2)
    assert dispatcher.flush(timeout=30)
    assert sorted(read(client, stream)) == [1, 2]


def test_fields_replace_the_data_field(client: Any, stream: str, sinks: Any) -> None:
    def fields(item: Any) -> Dict[Any, Any]:
        return {"user": item["user"], b"score": item["score"], "raw": b"\xff"}

    sink = sinks(client, stream, fields=fields)
    sink([{"user": "ana", "score": 1.5}, {"user": "bo", "score": 7}])
    assert [fields for _, fields in client.xrange(stream)] == [
        {b"user": b"ana", b"score": b"1.5", b"raw": b"\xff"},
        {b"user": b"bo", b"score": b"7", b"raw": b"\xff"},
    ]


@pytest.mark.parametrize("approximate", [False, True])
def test_maxlen_trims_the_stream(client: Any, stream: str, sinks: Any, approximate: bool) -> None:
    sink = sinks(client, stream, maxlen=10, approximate=approximate)
    for start in range(0, 1000, 100):
        sink(list(range(start, start + 100)))
    length = client.xlen(stream)
    if approximate:
        assert 10 <= length < 1000  # whole nodes are trimmed: about 10, never fewer
    else:
        assert length == 10
        assert read(client, stream) == list(range(990, 1000))


def test_an_empty_batch_sends_nothing(client: Any, stream: str, sinks: Any) -> None:
    sinks(client, stream)([])
    assert client.exists(stream) == 0


# -- what fails, and whether it is retried ---------------------------------------------------------


def test_an_item_json_cannot_hold_fails_alone_and_for_good(
    make: Any, client: Any, stream: str, sinks: Any,
) -> None:
    sink = sinks(client, stream)
    with pytest.raises(PartialFailure) as caught:
        sink([{"n": 0}, {"at": datetime.datetime(2024, 1, 1)}, {"n": 2}, float("nan")])
    assert len(caught.value.failed_items) == 2
    assert caught.value.failed_items[0] == {"at": datetime.datetime(2024, 1, 1)}
    assert not caught.value.retryable
    assert isinstance(caught.value.cause, SerializationError)
    assert caught.value.cause.index == 1
    assert "item 1 of the batch is not JSON serializable: datetime" in str(caught.value.cause)
    assert read(client, stream) == [{"n": 0}, {"n": 2}]

    # Through a dispatcher with retries: given up at once, the others delivered once.
    failed: List[Any] = []
    dispatcher = make(sink, delay=0.01, retry=FAST_RETRY)
    dispatcher.on("items_exhausted", lambda event: failed.extend(event.items))
    for item in ({"n": 3}, {1, 2}, {"n": 4}):
        dispatcher.enqueue(item)
    assert dispatcher.flush(timeout=30)
    stats = dispatcher.stats()
    assert (stats.dispatched, stats.failed, stats.retried) == (2, 1, 0)
    assert failed == [{1, 2}]
    assert read(client, stream) == [{"n": 0}, {"n": 2}, {"n": 3}, {"n": 4}]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (lambda item: 1 / 0, "fields() raised ZeroDivisionError on item 0"),
        (lambda item: {}, "returned an empty mapping"),
        (lambda item: ["data", item], "returned list"),
        (lambda item: {"ok": None}, "a field value of type NoneType"),
        (lambda item: {"ok": True}, "a field value of type bool"),
        (lambda item: {1: "x"}, "a field name of type int"),
        (lambda item: {"x": "\ud800"}, "a field value of type str"),
    ],
)
def test_fields_that_cannot_make_an_entry_fail_the_item(
    client: Any, stream: str, sinks: Any, fields: Any, message: str,
) -> None:
    sink = sinks(client, stream, fields=fields)
    with pytest.raises(SerializationError) as caught:
        sink(["secret-value"])
    assert message in str(caught.value)
    assert caught.value.index == 0
    assert caught.value.retryable is False
    assert "secret-value" not in str(caught.value)
    assert client.exists(stream) == 0


def test_a_key_of_another_type_fails_for_good_and_names_the_stream(
    make: Any, client: Any, stream: str, sinks: Any,
) -> None:
    client.set(stream, "not a stream")
    sink = sinks(client, stream)
    with pytest.raises(DeliveryError) as caught:
        sink([1, 2, 3])  # one reason for the whole batch: the error itself, not a PartialFailure
    assert caught.value.retryable is False
    assert "WRONGTYPE" in str(caught.value)
    assert repr(stream) in str(caught.value)
    assert isinstance(caught.value.__cause__, redis.ResponseError)

    dispatcher = make(sink, delay=0.01, retry=FAST_RETRY)
    dispatcher.enqueue(4)
    assert dispatcher.flush(timeout=30)
    stats = dispatcher.stats()
    assert (stats.failed, stats.retried, stats.batches) == (1, 0, 1)


def test_one_bad_key_does_not_hold_the_others_back(make_keyed: Any, client: Any, sinks: Any) -> None:
    good, bad = unique_name("good"), unique_name("bad")
    client.test_keys += [good, bad]
    client.set(bad, "x")
    dispatcher = make_keyed(sinks(client, lambda key: key), delay=0.01, retry=FAST_RETRY)
    for n in range(10):
        dispatcher.enqueue(good, n)
        dispatcher.enqueue(bad, n)
    assert dispatcher.flush(timeout=30)
    assert read(client, good) == list(range(10))
    assert dispatcher.stats().failed == 10


def test_a_stream_callable_needs_a_key_and_its_failures_are_final(
    client: Any, stream: str, sinks: Any,
) -> None:
    sink = sinks(client, lambda key: stream)
    with pytest.raises(DeliveryError, match="stream is a callable of the key") as caught:
        sink([1])
    assert caught.value.retryable is False

    def broken(key: Any) -> str:
        raise LookupError("no such tenant")

    with pytest.raises(DeliveryError, match=r"stream\('acme'\) raised LookupError") as caught:
        sinks(client, broken)("acme", [1])
    assert caught.value.retryable is False
    assert isinstance(caught.value.__cause__, LookupError)
    with pytest.raises(DeliveryError, match="must return a non-empty str, got int") as caught:
        sinks(client, lambda key: 42)("acme", [1])
    assert caught.value.retryable is False
    assert client.exists(stream) == 0


def test_replies_that_refuse_some_entries_retry_only_those(sinks: Any) -> None:
    """Out of memory halfway through a batch: the entries that landed are not added again."""
    with RedisServer() as server:
        admin = redis.Redis.from_url(server.url)
        try:
            stream = unique_name("stream")
            sink = sinks(server.url, stream)
            sink([{"warm": "up"}])
            used = admin.info("memory")["used_memory"]
            admin.config_set("maxmemory", used + 64 * 1024)
            batch = [{"n": n, "pad": "x" * 1000} for n in range(1000)]
            with pytest.raises(PartialFailure) as caught:
                sink(batch)
            failed = caught.value.failed_items
            assert 0 < len(failed) < len(batch)
            assert failed == batch[len(batch) - len(failed):]  # the server refused from some entry on
            assert caught.value.retryable
            assert "OOM" in str(caught.value.cause)
            landed = admin.xlen(stream) - 1
            assert landed == len(batch) - len(failed)

            admin.config_set("maxmemory", 0)
            sink(failed)  # as the dispatcher's retry would
            assert [json.loads(fields[b"data"]) for _, fields in admin.xrange(stream)][1:] == batch
        finally:
            admin.close()


def test_a_connection_lost_mid_replies_retries_only_the_unanswered_entries(
    client: Any, stream: str, sinks: Any,
) -> None:
    """The proxy passes 300 replies of the batch's 1000, then cuts: the other 700 entries are retried.
    The server may have added some of them already (those it had received): those are there twice, at
    least once; the first 300 are there once."""
    with Proxy(6379) as proxy:
        proxy.cut_after_replies(b"XADD", 300, requests=1000)
        sink = sinks(f"redis://{HOST}:{proxy.port}/0", stream)
        batch = list(range(1000))
        with pytest.raises(PartialFailure) as caught:
            sink(batch)
        assert proxy.broken.is_set()
        assert caught.value.failed_items == batch[300:]
        assert caught.value.retryable
        assert "a reply was lost" in str(caught.value.cause)
        sink(caught.value.failed_items)  # a new connection, through the proxy, not cut
    entries = read(client, stream)
    landed = len(entries) - 700  # what the server had added before the cut: 300 or more
    assert 300 <= landed <= 1000
    assert entries == batch[:landed] + batch[300:]
    assert first_occurrences(entries) == batch


def test_nothing_is_refused_when_the_server_is_away_but_retried(sinks: Any) -> None:
    with RedisServer() as server:
        sink = sinks(server.url, "events")
        server.kill()
        with pytest.raises(DeliveryError) as caught:
            sink([1, 2])
        assert caught.value.retryable
        assert "could not connect" in str(caught.value)
        server.start()
        sink([3])
        admin = redis.Redis.from_url(server.url)
        assert [json.loads(fields[b"data"]) for _, fields in admin.xrange("events")] == [3]
        admin.close()


class DurableRedisServer(RedisServer):
    """A private Redis that writes every change to its append-only file before answering it,
    so that what it acknowledged survives a SIGKILL (the shared servers keep nothing)."""

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "yes",
             "--appendfsync", "always", "--dir", self.directory],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.wait_until_it_answers()


def test_nothing_is_lost_when_the_server_is_killed_and_started_mid_run(make: Any, sinks: Any) -> None:
    with DurableRedisServer() as server:
        sink = sinks(server.url, "events")
        dispatcher = make(sink, delay=0.005, max_batch_size=50, retry=FAST_RETRY)
        failed = threading.Event()
        dispatcher.on("batch_failed", lambda event: failed.set())
        admin = redis.Redis.from_url(server.url, socket_timeout=5)
        items = [{"n": n} for n in range(4000)]
        for item in items[:2000]:
            dispatcher.enqueue(item)
        assert wait_for(lambda: admin.xlen("events") >= 200)
        server.kill()
        for item in items[2000:]:
            dispatcher.enqueue(item)
        assert failed.wait(30), "no batch failed while the server was down"
        server.start()
        assert dispatcher.flush(timeout=60)
        entries = [json.loads(fields[b"data"]) for _, fields in admin.xrange("events")]
        admin.close()
    stats = dispatcher.stats()
    assert stats.failed == 0
    assert stats.dispatched == 4000
    assert first_occurrences(entries) == items  # every item, in order
    assert len(entries) - len(items) <= 50  # duplicates: at most the unanswered end of one batch


def test_a_deadline_already_passed_sends_nothing(client: Any, stream: str, sinks: Any) -> None:
    sink = sinks(client, stream)
    _, error = under_shutdown_deadline(lambda: sink([1]), timeout=0)  # passed when the call starts
    assert isinstance(error, DeliveryError)
    assert "not sent, the dispatcher's deadline has passed" in str(error)
    assert error.retryable
    assert client.exists(stream) == 0


# -- fork ------------------------------------------------------------------------------------------


def named(url: str) -> Tuple[str, str]:
    """*url* with a unique ``client_name``, and that name: redis-py names each connection it opens
    for the client the sink makes (``CLIENT SETNAME``), so the server lists the sink's own."""
    name = unique_name("sink")
    return f"{url}?client_name={name}", name


def ids_named(client: Any, name: str) -> Set[int]:
    """The ids of the server's connections named *name* (``CLIENT LIST``)."""
    return {int(entry["id"]) for entry in client.client_list() if entry.get("name") == name}


def test_a_forked_child_writes_through_a_connection_of_its_own(client: Any, stream: str, redis_url: str,
                                                                sinks: Any) -> None:
    url, name = named(redis_url)
    own = sinks(url, stream)  # a client the sink makes
    yours = sinks(client, stream)  # a client of yours
    own([{"who": "parent", "n": 0}])
    yours([{"who": "parent", "n": 1}])
    parent_own, parent_yours = ids_named(client, name), client.client_id()
    assert len(parent_own) == 1

    def child() -> Dict[str, Any]:
        own([{"who": "child", "n": 0}])
        yours([{"who": "child", "n": 1}])
        return {"own": sorted(ids_named(client, name)), "yours": client.client_id()}

    result = collect(fork(child))
    # The child's own connections, not the parent's (which stayed open meanwhile).
    child_own = set(result["own"]) - parent_own
    assert len(child_own) == 1
    assert parent_own <= set(result["own"])
    assert result["yours"] not in parent_own | {parent_yours}

    # The parent's connections still work: the child neither used nor closed them.
    own([{"who": "parent", "n": 2}])
    yours([{"who": "parent", "n": 3}])
    assert wait_for(lambda: ids_named(client, name) == parent_own)  # the child's went with it
    assert client.client_id() == parent_yours
    assert read(client, stream) == [
        {"who": "parent", "n": 0}, {"who": "parent", "n": 1}, {"who": "child", "n": 0},
        {"who": "child", "n": 1}, {"who": "parent", "n": 2}, {"who": "parent", "n": 3},
    ]


# -- secrets, arguments, closing -------------------------------------------------------------------


def test_the_password_never_shows(make: Any, sinks: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with RedisServer() as server:
        admin = redis.Redis.from_url(server.url)
        admin.config_set("requirepass", "hunter2-right")
        admin.close()
        wrong = sinks(f"redis://:hunter2-wrong@{HOST}:{server.port}/0", "events")
        right = sinks(f"redis://:hunter2-right@{HOST}:{server.port}/0", "events", maxlen=5)
        assert repr(right) == f"<RedisStreamSink redis://{HOST}:{server.port}/0 stream='events' maxlen~5>"
        with pytest.raises(DeliveryError) as caught:
            wrong([1])
        assert caught.value.retryable is False  # a refused password does not heal by itself
        right([1])
        dispatcher = make(wrong, delay=0.01)  # logs the failure with its traceback
        dispatcher.enqueue(2)
        assert dispatcher.flush(timeout=30)
        server.kill()
        with pytest.raises(DeliveryError) as lost:
            right([3])
    texts = [str(caught.value), repr(caught.value), str(lost.value), str(caught.value.__cause__),
             str(lost.value.__cause__), caplog.text, repr(wrong), repr(right)]
    for text in texts:
        assert "hunter2" not in text
    assert any("dispatch of 1 items failed" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("args", "options", "error", "message"),
    [
        ((42, "s"), {}, TypeError, "client must be a redis.Redis or a redis:// URL, got int"),
        (("http://:pw@h/0", "s"), {}, ValueError, "client must be a URL starting with redis://"),
        (("redis://:pw@h:99999/0", "s"), {}, ValueError, "client is not a valid URL"),
        (("redis://h/0", 42), {}, TypeError, "stream must be a str or a callable of the key, got int"),
        (("redis://h/0", ""), {}, ValueError, "stream must not be empty"),
        (("redis://h/0", "s"), {"fields": "data"}, TypeError, "fields must be callable or None"),
        (("redis://h/0", "s"), {"maxlen": 0}, ValueError, "maxlen must be at least 1, got 0"),
        (("redis://h/0", "s"), {"maxlen": 1.5}, TypeError, "maxlen must be an int or None"),
        (("redis://h/0", "s"), {"maxlen": True}, TypeError, "maxlen must be an int or None"),
        (("redis://h/0", "s"), {"approximate": 1}, TypeError, "approximate must be a bool"),
    ],
)
def test_bad_arguments_are_refused_by_name(args: Any, options: Any, error: Any, message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        RedisStreamSink(*args, **options)
    assert "pw" not in str(caught.value)


def test_a_url_redis_py_cannot_parse_is_refused_without_its_password() -> None:
    with pytest.raises(ValueError, match="client is not a valid Redis URL") as caught:
        RedisStreamSink("redis://:pw-secret@h/0?socket_timeout=soon", "s")
    assert "pw-secret" not in str(caught.value)
    assert caught.value.__cause__ is None


def test_close_closes_only_the_client_it_made(client: Any, stream: str, redis_url: str) -> None:
    url, name = named(redis_url)
    own = RedisStreamSink(url, stream)
    yours = RedisStreamSink(client, stream)
    own([1])
    yours([2])
    assert ids_named(client, name)  # the connection of the client the sink made
    yours_id = client.client_id()
    own.close()
    own.close()  # idempotent
    yours.close()
    assert wait_for(lambda: not ids_named(client, name))
    assert client.client_id() == yours_id  # yours still open, on the same connection
    assert client.xlen(stream) == 2  # and it works
    for sink in (own, yours):
        with pytest.raises(DeliveryError, match="is closed") as caught:
            sink([3])
        assert caught.value.retryable is False
        assert repr(sink).endswith(" closed>")
    with RedisStreamSink(client, stream) as scoped:
        scoped([4])
    with pytest.raises(DeliveryError, match="is closed"):
        scoped([5])
    assert read(client, stream) == [1, 2, 4]


def test_the_sink_is_called_as_dispatch_or_deliver_only(client: Any, stream: str, sinks: Any) -> None:
    sink = sinks(client, stream)
    with pytest.raises(TypeError, match=r"takes \(batch\) or \(key, batch\), got 3 arguments"):
        sink("a", "b", [1])
    with pytest.raises(TypeError, match=r"got 0 arguments"):
        sink()
    assert client.exists(stream) == 0
