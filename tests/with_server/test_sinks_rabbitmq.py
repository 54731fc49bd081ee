"""RabbitMQSink against the real RabbitMQ: confirms, returns, lost connections, forks, secrets."""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import time
import urllib.parse
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Tuple

import pytest

from batchdispatch import PartialFailure, RetryPolicy
from batchdispatch.exceptions import DeliveryError, SerializationError

from ..services import HOST, RABBITMQ_PORT, need_program, unique_name
from ..test_fork import collect, fork
from .conftest import wait_for
from .deadline import under_shutdown_deadline
from .proxy import Proxy
from .sockets import connections_to

pika = pytest.importorskip("pika")
from batchdispatch.sinks.rabbitmq import RabbitMQSink  # noqa: E402 - after the skip when pika is missing

FAST_RETRY = RetryPolicy(max_attempts=1000, backoff=0.02, multiplier=2.0, max_backoff=0.2, jitter=False)


class Broker:
    """The test's own view of the broker: queues and exchanges it declares (deleted after), reads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queues: List[str] = []
        self.exchanges: List[str] = []
        self.connection: Any = None
        self.channel: Any = None
        self.connect()

    def connect(self) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self.channel = self.connection.channel()

    def queue(self, **options: Any) -> str:
        name = unique_name("queue")
        options.setdefault("durable", True)
        self.channel.queue_declare(name, **options)
        self.queues.append(name)
        return name

    def exchange(self, kind: str) -> str:
        name = unique_name("exchange")
        self.channel.exchange_declare(name, exchange_type=kind)
        self.exchanges.append(name)
        return name

    def again(self, action: Callable[[], Any]) -> Any:
        """*action*(), on a new connection if the broker closed this one."""
        try:
            if self.connection.is_open:
                return action()
        except (pika.exceptions.AMQPConnectionError, pika.exceptions.AMQPChannelError):
            pass
        self.connect()
        return action()

    def count(self, queue: str) -> int:
        return int(self.again(lambda: self.channel.queue_declare(queue, passive=True).method.message_count))

    def messages(self, queue: str) -> List[Tuple[Any, Any]]:
        """Every message of *queue*, taken off it in order: (properties, body)."""
        self.again(lambda: self.channel.queue_declare(queue, passive=True))
        taken = []
        while True:
            method, properties, body = self.channel.basic_get(queue, auto_ack=True)
            if method is None:
                return taken
            taken.append((properties, body))

    def items(self, queue: str) -> List[Any]:
        return [json.loads(body) for _, body in self.messages(queue)]

    def close(self) -> None:
        self.again(lambda: None)
        for queue in self.queues:
            self.channel.queue_delete(queue)
        for exchange in self.exchanges:
            self.channel.exchange_delete(exchange)
        self.connection.close()


@pytest.fixture
def broker(rabbitmq_url: str) -> Iterator[Broker]:
    made = Broker(rabbitmq_url)
    yield made
    made.close()


@pytest.fixture
def close_connections(connections: Callable[[str], Dict[str, Listed]]) -> Callable[[str], int]:
    """Have the broker close the connections named *name*, as its restart would
    (``rabbitmqctl close_connection``); return how many. Only those: the
    broker is shared, and everyone else's connections are left alone.

    ``rabbitmqctl`` is looked for before the test starts: without it the
    test skips, or fails where the services are required (see need_program).
    """
    rabbitmqctl = need_program("rabbitmqctl", "the broker's connections cannot be closed as a restart would")

    def close(name: str) -> int:
        ports = {str(each.peer_port) for each in live(connections(name)).values()}
        # close_connection takes a pid as the table lists it (<rabbit@host.N.N.N>), not as JSON does.
        table = subprocess.run(
            [rabbitmqctl, "list_connections", "--quiet", "--no-table-headers", "pid", "peer_port"],
            check=True, capture_output=True, text=True, timeout=60,
        ).stdout
        rows = (line.split("\t") for line in table.splitlines() if line)
        pids = [pid for pid, port in rows if port in ports]
        for pid in pids:
            subprocess.run([rabbitmqctl, "close_connection", pid, "batchdispatch test: as a restart would"],
                           check=True, capture_output=True, timeout=60)
        return len(pids)

    return close


def named(url: str) -> Tuple[str, str]:
    """*url* with a unique ``connection_name`` (pika's ``client_properties``), and that name: the
    broker lists every connection the sink opens under it, apart from everyone else's."""
    name = unique_name("sink")
    return f"{url}?client_properties={urllib.parse.quote(repr({'connection_name': name}))}", name


class Listed(NamedTuple):
    """A connection as the broker lists it."""

    state: str  # "running"; "closed" once the broker has closed it (while it waits for close-ok)
    peer_port: int  # the client's port: the local port of the client's socket


#: The states of a connection the broker has closed, or is closing.
CLOSED = ("closing", "closed")


@pytest.fixture
def connections() -> Callable[[str], Dict[str, Listed]]:
    """The broker's own list of connections (``rabbitmqctl list_connections``): those named *name*,
    by their pid on the broker. Usable in a forked child, too.

    ``rabbitmqctl`` is looked for before the test starts (see need_program).
    """
    rabbitmqctl = need_program("rabbitmqctl", "the broker's list of connections cannot be read")

    def listed(name: str) -> Dict[str, Listed]:
        result = subprocess.run(
            [rabbitmqctl, "list_connections", "--formatter", "json", "pid", "state", "peer_port",
             "client_properties"],
            check=True, capture_output=True, text=True, timeout=60,
        )
        found = {}
        for each in json.loads(result.stdout):
            properties = {key: value for key, _, value in each["client_properties"]}
            if properties.get("connection_name") == name:
                found[each["pid"]] = Listed(each["state"], int(each["peer_port"]))
        return found

    return listed


def live(listed: Dict[str, Listed]) -> Dict[str, Listed]:
    """The connections of *listed* that the broker has not closed."""
    return {pid: each for pid, each in listed.items() if each.state not in CLOSED}


def still_held(old: Dict[str, Listed], new: Dict[str, Listed]) -> List[int]:
    """The local ports of the *old* connections whose sockets this process still holds
    (ports the *new* ones took again aside)."""
    kept = {each.peer_port for each in old.values()} - {each.peer_port for each in new.values()}
    return [each.local_port for each in connections_to(RABBITMQ_PORT) if each.local_port in kept]


def links_kept(sink: RabbitMQSink) -> int:
    """How many connections the sink keeps track of, dead ones included.

    White-box on purpose, and only here: pika closes the socket of a
    connection the broker closed as soon as it reads the close, so one that
    the sink failed to forget (kept in its registry until close(), a leak)
    shows neither on the broker nor in /proc.
    """
    return len(sink._links)


@pytest.fixture
def sinks(rabbitmq_url: str) -> Iterator[Callable[..., RabbitMQSink]]:
    """Build sinks on the shared broker (or another URL), always closed after the test."""
    made: List[RabbitMQSink] = []

    def factory(*args: Any, **options: Any) -> RabbitMQSink:
        sink = RabbitMQSink(*(args or (rabbitmq_url,)), **options)
        made.append(sink)
        return sink

    yield factory
    for sink in made:
        sink.close()


def first_occurrences(values: List[Any]) -> List[Any]:
    seen: List[Any] = []
    for value in values:
        if value not in seen:
            seen.append(value)
    return seen



# -- delivery ------------------------------------------------------------------------------------


def test_each_item_is_a_persistent_json_message_in_order(make: Any, broker: Broker, sinks: Any) -> None:
    queue = broker.queue()
    dispatcher = make(sinks(routing_key=queue), delay=0.01, max_batch_size=100)
    items = [{"n": n, "text": "é 🎉"} for n in range(1000)]
    for item in items:
        dispatcher.enqueue(item)
    assert dispatcher.flush(timeout=60)
    messages = broker.messages(queue)
    assert [json.loads(body) for _, body in messages] == items
    properties, body = messages[0]
    assert body == json.dumps(items[0], separators=(",", ":"), ensure_ascii=False).encode()
    assert (properties.content_type, properties.delivery_mode) == ("application/json", 2)
    stats = dispatcher.stats()
    assert (stats.dispatched, stats.failed) == (1000, 0)


def test_the_key_is_the_routing_key_by_default(make_keyed: Any, broker: Broker, sinks: Any) -> None:
    queues = [broker.queue() for _ in range(3)]
    dispatcher = make_keyed(sinks(), delay=0.01, max_batch_size=40, max_concurrent_batches=3)
    for n in range(300):
        dispatcher.enqueue(queues[n % 3], n)
    assert dispatcher.flush(timeout=60)
    for index, queue in enumerate(queues):
        assert broker.items(queue) == [n for n in range(300) if n % 3 == index]


def test_a_routing_key_made_of_the_key_on_a_topic_exchange(
    make_keyed: Any, broker: Broker, sinks: Any,
) -> None:
    exchange = broker.exchange("topic")
    acme, other = broker.queue(), broker.queue()
    broker.channel.queue_bind(acme, exchange, routing_key="audit.acme")
    broker.channel.queue_bind(other, exchange, routing_key="audit.*")
    sink = sinks(exchange=exchange, routing_key=lambda tenant: f"audit.{tenant}")
    dispatcher = make_keyed(sink, delay=0.01)
    dispatcher.enqueue("acme", {"n": 1})
    dispatcher.enqueue("globex", {"n": 2})
    assert dispatcher.flush(timeout=60)
    assert broker.items(acme) == [{"n": 1}]
    assert sorted(broker.items(other), key=lambda item: item["n"]) == [{"n": 1}, {"n": 2}]


def test_a_fanout_exchange_with_no_key(broker: Broker, sinks: Any) -> None:
    exchange = broker.exchange("fanout")
    first, second = broker.queue(), broker.queue()
    for queue in (first, second):
        broker.channel.queue_bind(queue, exchange)
    sinks(exchange=exchange)([1, 2])
    assert broker.items(first) == broker.items(second) == [1, 2]


def test_properties_and_a_serializer_of_your_own(broker: Broker, sinks: Any) -> None:
    queue = broker.queue()
    fixed = pika.BasicProperties(headers={"source": "web"}, delivery_mode=1)
    sinks(routing_key=queue, properties=fixed)([{"n": 1}])
    properties, _ = broker.messages(queue)[0]
    assert (properties.headers, properties.delivery_mode, properties.content_type) == (
        {"source": "web"}, 1, "application/json",
    )
    assert fixed.content_type is None  # yours is not changed

    def per_item(item: Any) -> Any:
        return pika.BasicProperties(message_id=f"m-{item}", content_type="text/plain")

    sinks(routing_key=queue, properties=per_item, serializer=lambda item: str(item).encode())([7, 8])
    taken = broker.messages(queue)
    assert [(p.message_id, p.content_type, p.delivery_mode, body) for p, body in taken] == [
        ("m-7", "text/plain", 2, b"7"), ("m-8", "text/plain", 2, b"8"),
    ]
    sinks(routing_key=queue, serializer=lambda item: b"raw")([1])
    properties, body = broker.messages(queue)[0]
    assert (properties.content_type, body) == (None, b"raw")  # not JSON: no content type unless you set one


def test_without_confirms_the_batch_still_ends_routed(broker: Broker, sinks: Any) -> None:
    queue = broker.queue()
    sink = sinks(routing_key=queue, confirm=False)
    sink(list(range(500)))
    assert broker.items(queue) == list(range(500))
    with pytest.raises(DeliveryError, match="unroutable"):
        sinks(routing_key=unique_name("nowhere"), confirm=False)([1])


# -- what fails, and whether it is retried ---------------------------------------------------------


def test_unroutable_messages_fail_alone_and_for_good(make: Any, broker: Broker, sinks: Any) -> None:
    """A headers exchange routes some messages of a batch and returns the others: only those fail."""
    exchange = broker.exchange("headers")
    queue = broker.queue()
    broker.channel.queue_bind(queue, exchange, arguments={"x-match": "all", "route": "yes"})

    def properties(item: Any) -> Any:
        return pika.BasicProperties(headers={"route": "yes" if item % 3 else "no"})

    sink = sinks(exchange=exchange, properties=properties)
    batch = list(range(30))
    with pytest.raises(PartialFailure) as caught:
        sink(batch)
    assert caught.value.failed_items == [n for n in batch if n % 3 == 0]
    assert caught.value.retryable is False
    assert "unroutable" in str(caught.value.cause)
    assert "NO_ROUTE" in str(caught.value.cause)
    assert broker.items(queue) == [n for n in batch if n % 3]

    given_up: List[Any] = []
    dispatcher = make(sink, delay=0.01, retry=FAST_RETRY)
    dispatcher.on("items_exhausted", lambda event: given_up.extend(event.items))
    for n in range(6):
        dispatcher.enqueue(n)
    assert dispatcher.flush(timeout=60)
    stats = dispatcher.stats()
    assert (stats.dispatched, stats.failed, stats.retried) == (4, 2, 0)
    assert given_up == [0, 3]


def test_a_routing_key_with_no_queue_fails_the_batch(sinks: Any) -> None:
    with pytest.raises(DeliveryError) as caught:
        sinks()(unique_name("nowhere"), [1, 2])
    assert caught.value.retryable is False
    assert "returned the message" in str(caught.value)


def test_an_item_that_cannot_be_encoded_fails_alone(broker: Broker, sinks: Any) -> None:
    queue = broker.queue()
    with pytest.raises(PartialFailure) as caught:
        sinks(routing_key=queue)([1, {2}, 3])
    assert caught.value.failed_items == [{2}]
    assert caught.value.retryable is False
    assert isinstance(caught.value.cause, SerializationError)
    assert caught.value.cause.index == 1
    assert broker.items(queue) == [1, 3]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"serializer": lambda item: 1 / 0}, "the serializer raised ZeroDivisionError on item 0"),
        ({"serializer": lambda item: "text"}, "the serializer must return bytes"),
        ({"properties": lambda item: {"headers": {}}}, "properties() must return a pika.BasicProperties"),
        ({"properties": lambda item: item["x"]}, "properties() raised TypeError on item 0"),
    ],
)
def test_your_callables_failing_fail_the_item(broker: Broker, sinks: Any, options: Any, message: str) -> None:
    queue = broker.queue()
    with pytest.raises(SerializationError) as caught:
        sinks(routing_key=queue, **options)([5])
    assert message in str(caught.value)
    assert caught.value.retryable is False
    assert broker.count(queue) == 0


def test_a_missing_exchange_is_final(make: Any, sinks: Any) -> None:
    sink = sinks(exchange=unique_name("missing"), routing_key="x")
    with pytest.raises(DeliveryError, match="NOT_FOUND") as caught:
        sink([1, 2])
    assert caught.value.retryable is False
    dispatcher = make(sink, delay=0.01, retry=FAST_RETRY)
    dispatcher.enqueue(3)
    assert dispatcher.flush(timeout=60)
    stats = dispatcher.stats()
    assert (stats.failed, stats.retried) == (1, 0)


def test_routing_keys_that_cannot_be_made_are_final(sinks: Any) -> None:
    cases = [
        (sinks(routing_key=lambda key: "x"), (["no key"],), "routing_key is a callable of the key"),
        (sinks(), (42, [1]), "routing_key=None routes by the dispatcher's key, which must then be a str"),
        (sinks(routing_key=lambda key: "k" * 256), ("a", [1]), "routing_key must be at most 255 bytes"),
        (sinks(routing_key=lambda key: key["x"]), ("a", [1]), r"routing_key('a') raised TypeError"),
    ]
    for sink, args, message in cases:
        with pytest.raises(DeliveryError) as caught:
            sink(*args)
        assert message in str(caught.value)
        assert caught.value.retryable is False


def test_no_confirm_in_time_is_retryable_and_a_retry_delivers(broker: Broker, sinks: Any) -> None:
    """The proxy passes nothing back once the batch is published: no confirm comes, the call gives up
    at its timeout, and the retry, on a new connection, delivers; the lost batch had reached the queue,
    so its messages are there twice (at least once)."""
    queue = broker.queue()
    with Proxy(RABBITMQ_PORT) as proxy:
        proxy.swallow_after(b"\x00\x3c\x00\x28")  # the method frame of basic.publish
        sink = sinks(f"amqp://guest:guest@{HOST}:{proxy.port}/%2F", routing_key=queue, timeout=2)
        started = time.monotonic()
        with pytest.raises(DeliveryError, match="no confirm from the broker in time") as caught:
            sink([1, 2, 3])
        assert 1.5 < time.monotonic() - started < 10
        assert caught.value.retryable
        assert proxy.broken.is_set()
        sink([1, 2, 3])
    assert wait_for(lambda: broker.count(queue) == 6)
    assert broker.items(queue) == [1, 2, 3, 1, 2, 3]


def test_the_dispatchers_deadline_bounds_the_wait(broker: Broker, sinks: Any) -> None:
    queue = broker.queue()
    with Proxy(RABBITMQ_PORT) as proxy:
        proxy.swallow_after(b"\x00\x3c\x00\x28")
        sink = sinks(f"amqp://guest:guest@{HOST}:{proxy.port}/%2F", routing_key=queue, timeout=60)
        took, error = under_shutdown_deadline(lambda: sink([1]), timeout=1.0)  # as at exit, too
    assert took < 5  # the deadline, not the sink's timeout of 60 s
    assert isinstance(error, DeliveryError)
    assert "no confirm" in str(error)
    assert error.retryable


def test_a_deadline_already_passed_sends_nothing(broker: Broker, sinks: Any) -> None:
    queue = broker.queue()
    sink = sinks(routing_key=queue)
    _, error = under_shutdown_deadline(lambda: sink([1]), timeout=0)  # passed when the call starts
    assert isinstance(error, DeliveryError)
    assert "not sent, the dispatcher's deadline has passed" in str(error)
    assert error.retryable
    assert broker.count(queue) == 0


def test_a_broker_that_does_not_answer_is_retryable(sinks: Any) -> None:
    with Proxy(RABBITMQ_PORT) as proxy:
        proxy.swallow_after(b"AMQP")  # the protocol header: not even the handshake comes back
        sink = sinks(f"amqp://guest:guest@{HOST}:{proxy.port}/%2F", routing_key="x", timeout=1)
        with pytest.raises(DeliveryError, match="could not connect") as caught:
            sink([1])
    assert caught.value.retryable


def test_nothing_is_lost_when_the_broker_closes_the_connection_mid_run(
    make: Any, broker: Broker, sinks: Any, close_connections: Callable[[str], int],
    rabbitmq_url: str, connections: Callable[[str], Dict[str, Listed]],
) -> None:
    queue = broker.queue()
    url, name = named(rabbitmq_url)
    sink = sinks(url, routing_key=queue)
    dispatcher = make(sink, delay=0.005, max_batch_size=50, retry=FAST_RETRY)
    items = list(range(6000))
    for item in items[:3000]:
        dispatcher.enqueue(item)
    assert wait_for(lambda: broker.count(queue) >= 300)
    before = live(connections(name))
    assert close_connections(name) == 1
    for item in items[3000:]:
        dispatcher.enqueue(item)
    assert dispatcher.flush(timeout=120)
    assert len(before) == 1  # the worker's
    after = live(connections(name))
    assert len(after) == 1  # opened again
    assert not set(after) & set(before)  # after the broker closed it
    assert not still_held(before, after)  # and the closed one was let go of here
    assert links_kept(sink) == 1  # and forgotten: the sink keeps the new one only
    stats = dispatcher.stats()
    assert (stats.failed, stats.dispatched) == (0, 6000)
    received = broker.items(queue)
    assert first_occurrences(received) == items  # every item, in order
    assert len(received) - len(items) <= 50  # duplicates: at most the unconfirmed part of one batch


# -- connections, threads, fork --------------------------------------------------------------------


def test_each_thread_publishes_on_a_connection_of_its_own(
    broker: Broker, sinks: Any, rabbitmq_url: str, connections: Callable[[str], Dict[str, Listed]],
) -> None:
    queues = [broker.queue() for _ in range(4)]
    url, name = named(rabbitmq_url)
    sink = sinks(url)
    errors: List[BaseException] = []

    def publish(queue: str) -> None:
        try:
            for start in range(0, 200, 20):
                sink(queue, list(range(start, start + 20)))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(queue,)) for queue in queues]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    threads = set(live(connections(name)))
    assert len(threads) == 4  # one each, still open: their threads' ends were not noticed yet
    for queue in queues:
        assert broker.items(queue) == list(range(200))
    # A new thread's first batch closes the connections of threads that have ended.
    sink(queues[0], [1])
    assert wait_for(lambda: len(live(connections(name))) == 1)
    assert not set(live(connections(name))) & threads  # this thread's own


def test_a_forked_child_publishes_on_a_connection_of_its_own(
    broker: Broker, sinks: Any, rabbitmq_url: str, connections: Callable[[str], Dict[str, Listed]],
) -> None:
    queue = broker.queue()
    url, name = named(rabbitmq_url)
    sink = sinks(url, routing_key=queue)
    sink([{"who": "parent", "n": 0}])
    parent = set(live(connections(name)))
    assert len(parent) == 1

    def child() -> Any:
        sink([{"who": "child", "n": 0}, {"who": "child", "n": 1}])
        return sorted(live(connections(name)))

    seen = set(collect(fork(child)))
    assert len(seen - parent) == 1  # the child opened a connection of its own
    assert parent <= seen  # and left the parent's open
    # The parent's connection still works: the child neither published on it nor closed it.
    sink([{"who": "parent", "n": 1}])
    assert wait_for(lambda: set(live(connections(name))) == parent)  # the child's went with it
    assert broker.items(queue) == [
        {"who": "parent", "n": 0}, {"who": "child", "n": 0}, {"who": "child", "n": 1},
        {"who": "parent", "n": 1},
    ]


def test_an_idle_link_closed_by_the_broker_is_opened_again_without_failing(
    broker: Broker, sinks: Any, close_connections: Callable[[str], int],
    rabbitmq_url: str, connections: Callable[[str], Dict[str, Listed]],
) -> None:
    queue = broker.queue()
    url, name = named(rabbitmq_url)
    sink = sinks(url, routing_key=queue)
    sink([1])
    ((first, listed),) = connections(name).items()
    assert close_connections(name) == 1

    def close_arrived() -> bool:
        # The broker has closed it, and its connection.close waits, unread, in this process's socket.
        if connections(name).get(first, listed).state not in CLOSED:
            return False
        mine = [each for each in connections_to(RABBITMQ_PORT)
                if each.local_port == listed.peer_port]
        return not mine or mine[0].unread > 0 or mine[0].state != "ESTABLISHED"

    assert wait_for(close_arrived)
    sink([2])  # no failure: the closed connection is noticed before publishing
    now = live(connections(name))
    assert len(now) == 1
    assert first not in now  # opened again
    assert not still_held({first: listed}, now)  # and the closed one was let go of here
    assert broker.items(queue) == [1, 2]


def test_close_leaves_a_delivering_threads_connection_to_it(broker: Broker, sinks: Any) -> None:
    queue = broker.queue()
    with Proxy(RABBITMQ_PORT) as proxy:
        proxy.swallow_after(b"\x00\x3c\x00\x28")  # the batch waits for confirms that never come
        sink = sinks(f"amqp://guest:guest@{HOST}:{proxy.port}/%2F", routing_key=queue, timeout=3)
        errors: List[BaseException] = []

        def deliver() -> None:
            try:
                sink([1])
            except BaseException as exc:  # noqa: BLE001 - checked below
                errors.append(exc)

        thread = threading.Thread(target=deliver)
        thread.start()
        assert proxy.broken.wait(30)  # published: the thread waits for its confirm
        (link,) = connections_to(proxy.port)  # the sink's socket to the broker (through the proxy)
        sink.close()
        assert connections_to(proxy.port) == [link]  # busy: left open, to its thread
        thread.join(30)
        assert not thread.is_alive()
        assert wait_for(lambda: connections_to(proxy.port) == [])  # closed by its thread once done
    assert len(errors) == 1
    assert isinstance(errors[0], DeliveryError)
    assert "no confirm" in str(errors[0])


# -- secrets, arguments, closing -------------------------------------------------------------------


def test_the_password_never_shows(make: Any, sinks: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = sinks(f"amqp://guest:hunter2-wrong@{HOST}:{RABBITMQ_PORT}/%2F", routing_key="x")
    where = f"amqp://{HOST}:{RABBITMQ_PORT}/%2F"
    assert repr(wrong) == f"<RabbitMQSink {where} exchange='' routing_key='x' confirm>"
    with pytest.raises(DeliveryError) as refused:
        wrong([1])
    assert refused.value.retryable is False  # a refused login does not heal by itself
    with Proxy(RABBITMQ_PORT) as proxy:
        proxy.swallow_after(b"AMQP")
        silent = sinks(f"amqp://guest:hunter2-other@{HOST}:{proxy.port}/%2F", routing_key="x", timeout=1)
        with pytest.raises(DeliveryError) as lost:
            silent([1])
    dispatcher = make(wrong, delay=0.01)  # logs the failure with its traceback
    dispatcher.enqueue(2)
    assert dispatcher.flush(timeout=60)
    texts = [str(refused.value), str(refused.value.__cause__), str(lost.value), caplog.text, repr(silent)]
    for text in texts:
        assert "hunter2" not in text
    assert any("dispatch of 1 items failed" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("args", "options", "error", "message"),
    [
        ((42,), {}, TypeError, "url must be a str, got int"),
        (("http://u:pw@h/",), {}, ValueError, "url must be a URL starting with amqp://, amqps://"),
        (("amqp://u:pw@h/?heartbeat=soon",), {}, ValueError, "url is not a valid AMQP URL"),
        (("amqp://h/",), {"exchange": 1}, TypeError, "exchange must be a str, got int"),
        (("amqp://h/",), {"exchange": "e" * 256}, ValueError, "exchange must be at most 255 bytes"),
        (("amqp://h/",), {"routing_key": b"k"}, TypeError, "routing_key must be a str, got bytes"),
        (("amqp://h/",), {"properties": {}}, TypeError, "properties must be a pika.BasicProperties"),
        (("amqp://h/",), {"confirm": "yes"}, TypeError, "confirm must be a bool"),
        (("amqp://h/",), {"serializer": b"x"}, TypeError, "serializer must be callable or None"),
        (("amqp://h/",), {"timeout": 0}, ValueError, "timeout must be a positive number of seconds"),
        (("amqp://h/",), {"timeout": "5"}, TypeError, "timeout must be a number"),
    ],
)
def test_bad_arguments_are_refused_by_name(args: Any, options: Any, error: Any, message: str) -> None:
    with pytest.raises(error) as caught:
        RabbitMQSink(*args, **options)
    assert message in str(caught.value)
    assert "pw" not in str(caught.value)


def test_close_closes_every_connection_and_later_calls_fail(
    broker: Broker, sinks: Any, rabbitmq_url: str, connections: Callable[[str], Dict[str, Listed]],
) -> None:
    queue = broker.queue()
    url, name = named(rabbitmq_url)
    sink = sinks(url, routing_key=queue)
    sink([1])
    thread = threading.Thread(target=sink, args=([2],))
    thread.start()
    thread.join(60)  # ended, but its connection is left open until a new thread's first batch
    assert len(live(connections(name))) == 2
    sink.close()
    sink.close()  # idempotent
    assert wait_for(lambda: live(connections(name)) == {})  # this thread's, and the ended thread's
    with pytest.raises(DeliveryError, match="is closed") as caught:
        sink([2])
    assert caught.value.retryable is False
    assert repr(sink).endswith(" closed>")
    assert broker.items(queue) == [1, 2]
