"""The Flask extension, with real Flask apps and test clients shipping to a real Receiver."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Tuple

import pytest

flask = pytest.importorskip("flask")

from batchdispatch.contrib.flask import BatchDispatch  # noqa: E402
from batchdispatch.testing import Receiver, Response  # noqa: E402

from ..conftest import run_python  # noqa: E402

AppFactory = Callable[..., Tuple[Any, BatchDispatch]]


def build_app(name: str, ext: BatchDispatch, config: Dict[str, Any]) -> Any:
    """A Flask app with a route that enqueues the JSON body it receives."""
    app = flask.Flask(name)
    app.config.update(TESTING=True, **config)
    ext.init_app(app)

    @app.post("/track")
    def track() -> Any:
        accepted = ext.enqueue(flask.request.get_json())
        return {"accepted": accepted}, 202

    return app


@pytest.fixture
def make_app(make_receiver: Callable[..., Receiver]) -> Iterator[AppFactory]:
    """Build apps whose dispatchers are always shut down (and sinks closed) after the test.

    Depends on make_receiver so that the receivers close after the apps have flushed.
    """
    made: List[Tuple[Any, BatchDispatch]] = []

    def factory(url: str, ext: Any = None, name: str = "shop", **config: Any) -> Tuple[Any, BatchDispatch]:
        ext = ext if ext is not None else BatchDispatch()
        options = {f"BATCHDISPATCH_{key}": value for key, value in config.items()}
        app = build_app(name, ext, {"BATCHDISPATCH_URL": url, **options})
        made.append((app, ext))
        return app, ext

    yield factory
    for app, ext in made:
        with app.app_context():
            assert ext.shutdown(timeout=10)


def post_events(app: Any, events: List[Any]) -> None:
    with app.test_client() as client:
        for event in events:
            response = client.post("/track", json=event)
            assert response.status_code == 202
            assert response.get_json() == {"accepted": True}


# -- delivery -----------------------------------------------------------------


def test_requests_enqueue_and_flush_delivers_exactly_those_items(
    make_app: AppFactory, receiver: Receiver,
) -> None:
    app, ext = make_app(receiver.url, DELAY=60)
    events = [{"event": "page_view", "n": n} for n in range(5)]
    post_events(app, events)
    assert receiver.request_count == 0  # nothing went out before the delay or a flush
    with app.app_context():
        assert ext.flush(timeout=10)
        stats = ext.stats()
    assert receiver.items == events
    assert receiver.request_count == 1
    assert (stats.enqueued, stats.dispatched, stats.pending) == (5, 5, 0)


def test_secret_signs_and_headers_are_sent(
    make_app: AppFactory, make_receiver: Callable[..., Receiver],
) -> None:
    receiver = make_receiver(secret="s3cret")
    app, ext = make_app(
        receiver.url, SECRET="s3cret", HEADERS={"X-Api-Key": "k-123"}, DELAY=60, MAX_BATCH_SIZE=2,
    )
    post_events(app, [1, 2, 3])
    with app.app_context():
        assert ext.flush(timeout=10)
    assert receiver.items == [1, 2, 3]
    requests = receiver.requests
    assert [r.items for r in requests] == [[1, 2], [3]]
    assert all(r.verified is True for r in requests)
    assert all(r.headers["x-api-key"] == "k-123" for r in requests)


def test_signature_and_max_body_bytes_reach_the_sink(
    make_app: AppFactory, make_receiver: Callable[..., Receiver],
) -> None:
    receiver = make_receiver(secret="s3cret", max_body_bytes=40)
    app, ext = make_app(receiver.url, SECRET="s3cret", SIGNATURE="x-webhook", MAX_BODY_BYTES=40, DELAY=60)
    events = [{"n": n, "pad": "xxxxxxxxxx"} for n in range(4)]
    post_events(app, events)
    with app.app_context():
        assert ext.flush(timeout=10)
    assert receiver.items == events
    requests = receiver.requests
    assert len(requests) == 4  # one event per body: two would be over 40 bytes
    assert all(r.verified is True and "x-webhook-signature" in r.headers for r in requests)


def test_a_wrong_secret_is_refused_by_the_receiver(
    make_app: AppFactory, make_receiver: Callable[..., Receiver],
) -> None:
    receiver = make_receiver(secret="s3cret")
    app, ext = make_app(receiver.url, SECRET="not the secret", DELAY=60)
    post_events(app, ["x"])
    with app.app_context():
        assert ext.flush(timeout=10)
        assert ext.stats().failed == 1
    assert receiver.items == []
    assert receiver.requests[0].verified is False


def test_bound_extension_works_outside_a_request(receiver: Receiver) -> None:
    app = flask.Flask("bound")
    app.config["BATCHDISPATCH_URL"] = receiver.url
    ext = BatchDispatch(app)
    assert ext.enqueue("outside")
    assert ext.flush(timeout=10)
    assert receiver.items == ["outside"]
    assert ext.dispatcher is app.extensions["batchdispatch"].dispatcher
    assert ext.shutdown(timeout=10)
    assert not ext.enqueue("after shutdown")
    assert ext.stats().dropped_by_reason == {"closed": 1}
    assert ext.shutdown(timeout=10)  # idempotent


def test_app_factory_pattern_gives_each_app_its_own_dispatcher(
    make_app: AppFactory, make_receiver: Callable[..., Receiver],
) -> None:
    first, second = make_receiver(), make_receiver()
    ext = BatchDispatch()
    app_a, _ = make_app(first.url, ext=ext, name="app_a", DELAY=60)
    app_b, _ = make_app(second.url, ext=ext, name="app_b", DELAY=60)
    post_events(app_a, ["a1", "a2"])
    post_events(app_b, ["b1"])
    with app_a.app_context():
        dispatcher_a = ext.dispatcher
        assert ext.flush(timeout=10)
    with app_b.app_context():
        dispatcher_b = ext.dispatcher
        assert ext.flush(timeout=10)
    assert dispatcher_a is not dispatcher_b
    assert dispatcher_a.name == "flask:app_a"
    assert first.items == ["a1", "a2"]
    assert second.items == ["b1"]


def test_unbound_extension_outside_an_app_context_says_so(make_app: AppFactory, receiver: Receiver) -> None:
    _, ext = make_app(receiver.url)
    with pytest.raises(RuntimeError, match="outside of an application context"):
        ext.enqueue("nowhere")
    other = flask.Flask("other")
    with other.app_context(), pytest.raises(RuntimeError, match="not registered on the app 'other'"):
        ext.enqueue("nowhere")


# -- registration and configuration ----------------------------------------------


def test_a_second_registration_raises(make_app: AppFactory, receiver: Receiver) -> None:
    app, ext = make_app(receiver.url)
    with pytest.raises(RuntimeError, match="already registered on the app 'shop'"):
        ext.init_app(app)
    with pytest.raises(RuntimeError, match="already registered"):
        BatchDispatch(app)


def test_defaults_are_set_in_the_config(make_app: AppFactory, receiver: Receiver) -> None:
    app, ext = make_app(receiver.url)
    assert {k: v for k, v in app.config.items() if k.startswith("BATCHDISPATCH_")} == {
        "BATCHDISPATCH_URL": receiver.url,
        "BATCHDISPATCH_DELAY": 0.1,
        "BATCHDISPATCH_MAX_BATCH_SIZE": None,
        "BATCHDISPATCH_MAX_QUEUE_SIZE": 100_000,
        "BATCHDISPATCH_OVERFLOW": "drop_newest",
        "BATCHDISPATCH_HEADERS": None,
        "BATCHDISPATCH_SECRET": None,
        "BATCHDISPATCH_SIGNATURE": "standard",
        "BATCHDISPATCH_MAX_BODY_BYTES": None,
        "BATCHDISPATCH_EXIT_TIMEOUT": 5.0,
        "BATCHDISPATCH_SPOOL": None,
        "BATCHDISPATCH_SPOOL_DURABLE": False,
    }
    with app.app_context():
        dispatcher = ext.dispatcher
    assert (dispatcher.exit_timeout, dispatcher.flush_on_exit) == (5.0, True)
    # The delay of 0.1 s, by what the dispatcher does (it has no public getter):
    # a lone item goes out once it has waited that long, not sooner, and unflushed.
    started: List[float] = []
    went = threading.Event()
    dispatcher.on("batch_started", lambda event: (started.append(time.monotonic()), went.set()))
    enqueued = time.monotonic()
    dispatcher.enqueue({"n": 1})
    assert went.wait(30)
    assert 0.1 - 1e-3 <= started[0] - enqueued < 1.0  # generous above: a busy machine wakes late
    with app.app_context():
        assert ext.flush(timeout=10)
    assert receiver.items == [{"n": 1}]


@pytest.mark.parametrize(
    ("config", "error", "message"),
    [
        ({}, RuntimeError, "BATCHDISPATCH_URL is required"),
        ({"URL": ""}, RuntimeError, "BATCHDISPATCH_URL is required"),
        ({"URL": "ftp://example.com/"}, ValueError, "BATCHDISPATCH_URL must be an http"),
        ({"URL": 42}, TypeError, "BATCHDISPATCH_URL must be a str"),
        ({"DELAY": 0}, ValueError, "BATCHDISPATCH_DELAY must be a positive number"),
        ({"DELAY": float("inf")}, ValueError, "BATCHDISPATCH_DELAY must be a positive number"),
        ({"DELAY": "0.5"}, TypeError, "BATCHDISPATCH_DELAY must be a number"),
        ({"MAX_BATCH_SIZE": 0}, ValueError, "BATCHDISPATCH_MAX_BATCH_SIZE must be at least 1"),
        ({"MAX_QUEUE_SIZE": "10"}, TypeError, "BATCHDISPATCH_MAX_QUEUE_SIZE must be an int"),
        ({"OVERFLOW": "block"}, ValueError, "BATCHDISPATCH_OVERFLOW must be one of"),
        ({"HEADERS": {"X-Count": 1}}, TypeError, "BATCHDISPATCH_HEADERS must map str to str"),
        ({"HEADERS": ["X-A"]}, TypeError, "BATCHDISPATCH_HEADERS must be a mapping"),
        ({"SECRET": ""}, ValueError, "BATCHDISPATCH_SECRET must not be empty"),
        ({"SECRET": "whsec_!"}, ValueError, "BATCHDISPATCH_SECRET: what follows 'whsec_' is not valid"),
        ({"SECRET": ["a", "b"], "SIGNATURE": "x-webhook"}, ValueError,
         "BATCHDISPATCH_SECRET: signature='x-webhook' signs with one secret"),
        ({"SIGNATURE": "hmac"}, ValueError, "BATCHDISPATCH_SIGNATURE must be 'standard' or 'x-webhook'"),
        ({"MAX_BODY_BYTES": 0}, ValueError, "BATCHDISPATCH_MAX_BODY_BYTES must be at least 1 byte"),
        ({"EXIT_TIMEOUT": -1}, ValueError, "BATCHDISPATCH_EXIT_TIMEOUT must be a non-negative number"),
        ({"SPOOL": "/no/such/dir/events.db"}, ValueError, "BATCHDISPATCH_SPOOL: .*directory /no/such/dir "),
        ({"SPOOL": 3}, TypeError, "BATCHDISPATCH_SPOOL: path must be a str or os.PathLike, got int"),
        ({"SPOOL": ":memory:"}, ValueError, "BATCHDISPATCH_SPOOL: path must name a file"),
        ({"SPOOL_DURABLE": "yes"}, TypeError, "BATCHDISPATCH_SPOOL_DURABLE must be True or False"),
        ({"OVERFLOW": "spill"}, ValueError, "BATCHDISPATCH_OVERFLOW='spill' needs BATCHDISPATCH_SPOOL"),
    ],
)
def test_a_bad_config_raises_at_init_app_naming_the_key(
    receiver: Receiver, config: Dict[str, Any], error: type, message: str,
) -> None:
    app = flask.Flask("misconfigured")
    if config and "URL" not in config:  # {} tests the missing URL
        config = {**config, "URL": receiver.url}
    app.config.update({f"BATCHDISPATCH_{key}": value for key, value in config.items()})
    with pytest.raises(error, match=message):
        BatchDispatch().init_app(app)
    assert "batchdispatch" not in app.extensions


def test_a_header_value_with_crlf_is_refused_at_init_app_by_key_not_value(receiver: Receiver) -> None:
    app = flask.Flask("crlf")
    app.config.update(BATCHDISPATCH_URL=receiver.url,
                      BATCHDISPATCH_HEADERS={"X-Api-Key": "sk_live_Jx40-secret\r\n"})
    with pytest.raises(ValueError, match="BATCHDISPATCH_HEADERS") as caught:
        BatchDispatch().init_app(app)
    assert "'X-Api-Key'" in str(caught.value)
    assert "sk_live_Jx40" not in str(caught.value)
    assert "batchdispatch" not in app.extensions


def test_a_durable_spool_holds_each_item_until_the_receiver_has_it(
    make_app: AppFactory, receiver: Receiver, tmp_path: Any,
) -> None:
    app, ext = make_app(receiver.url, DELAY=60, SPOOL=str(tmp_path / "events.db"), SPOOL_DURABLE=True)
    events = [{"event": "page_view", "n": n} for n in range(5)]
    post_events(app, events)
    with app.app_context():
        spool = ext.dispatcher.spool
        assert spool is not None
        assert spool.count() == 5  # on disk before each request returned
        assert ext.flush(timeout=10)
        assert spool.count() == 0
    assert receiver.items == events


# -- threads ----------------------------------------------------------------------


def test_no_thread_starts_at_init_app(make_app: AppFactory, receiver: Receiver) -> None:
    before = set(threading.enumerate())  # a set: the receiver's handler threads may end meanwhile
    app, ext = make_app(receiver.url, DELAY=60)
    assert set(threading.enumerate()) <= before
    with app.app_context():
        assert not ext.stats().worker_alive
    post_events(app, ["first"])  # the first enqueue starts the worker
    assert "batchdispatch:flask:shop" in [t.name for t in threading.enumerate()]


def test_no_thread_starts_at_import() -> None:
    result = run_python(
        """
        import threading
        before = threading.active_count()
        import batchdispatch.contrib.flask
        print(threading.active_count() - before)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"


def test_exit_flushes_what_requests_enqueued(receiver: Receiver) -> None:
    result = run_python(
        """
        import os
        from flask import Flask
        from batchdispatch.contrib.flask import BatchDispatch

        app = Flask("exiting")
        app.config.update(BATCHDISPATCH_URL=os.environ["BD_URL"], BATCHDISPATCH_DELAY=60)
        events = BatchDispatch(app)

        @app.post("/track")
        def track():
            events.enqueue(app.json.loads(app.json.dumps(os.getpid())))
            return "", 204

        with app.test_client() as client:
            for _ in range(3):
                assert client.post("/track").status_code == 204
        print(os.getpid())
        # no flush, no shutdown: the interpreter's exit delivers
        """,
        env={"BD_URL": receiver.url},
    )
    assert result.returncode == 0, result.stderr
    assert receiver.items == [int(result.stdout)] * 3


# -- CLI --------------------------------------------------------------------------


def test_cli_stats_prints_the_counters(make_app: AppFactory, receiver: Receiver) -> None:
    app, _ = make_app(receiver.url, DELAY=60)
    post_events(app, ["a", "b"])
    result = app.test_cli_runner().invoke(args=["batchdispatch", "stats"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "name: flask:shop" in lines
    assert "enqueued: 2" in lines
    assert "pending: 2" in lines
    assert "dropped_by_reason: {}" in lines
    assert "last_error: None" in lines
    (age,) = [line for line in lines if line.startswith("oldest_pending_age: ")]
    assert float(age.split(": ")[1]) >= 0  # two items wait for the minute's delay
    assert "batch_seconds: count=0" in lines
    assert "batch_sizes: count=0" in lines


def test_cli_flush_delivers_and_reports(make_app: AppFactory, receiver: Receiver) -> None:
    app, _ = make_app(receiver.url, DELAY=60)
    post_events(app, ["a", "b"])
    result = app.test_cli_runner().invoke(args=["batchdispatch", "flush", "--timeout", "10"])
    assert result.exit_code == 0, result.output
    assert result.output == "flushed: 2 items delivered in all\n"
    assert receiver.items == ["a", "b"]


def test_cli_flush_exits_non_zero_when_it_times_out(make_app: AppFactory, receiver: Receiver) -> None:
    receiver.respond(Response(200, delay=1.0))  # slower than the flush may wait
    app, ext = make_app(receiver.url, DELAY=60)
    post_events(app, ["slow"])
    result = app.test_cli_runner().invoke(args=["batchdispatch", "flush", "--timeout", "0.05"])
    assert result.exit_code == 1
    assert "flush timed out after 0.05 s with 1 items pending" in result.output
    with app.app_context():
        assert ext.flush(timeout=10)  # the slow answer came; nothing was lost
    assert receiver.items == ["slow"]


def test_cli_group_is_registered_per_app(make_app: AppFactory, receiver: Receiver) -> None:
    app, _ = make_app(receiver.url)
    result = app.test_cli_runner().invoke(args=["batchdispatch", "--help"])
    assert result.exit_code == 0
    assert "stats" in result.output
    assert "flush" in result.output
    bad = app.test_cli_runner().invoke(args=["batchdispatch", "flush", "--timeout", "-1"])
    assert bad.exit_code == 2
