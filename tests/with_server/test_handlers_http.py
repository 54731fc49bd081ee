"""BatchHandler over real HTTP: a failing endpoint, and the url= handler.

Every request goes to a batchdispatch.testing.Receiver on 127.0.0.1;
nothing here mocks requests or urllib3.
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Callable, Iterator, List, Optional

import pytest

from batchdispatch import BackgroundDispatcher, RetryPolicy
from batchdispatch.handlers import BatchHandler
from batchdispatch.http import HttpSink
from batchdispatch.testing import Receiver

from ..conftest import run_python
from .conftest import fast_retry


@pytest.fixture
def attach() -> Iterator[Callable[..., logging.Logger]]:
    """Attach a handler to a logger (root by default); restore handlers and levels afterwards."""
    saved: List[Any] = []

    def attach_(handler: logging.Handler, name: Optional[str] = None) -> logging.Logger:
        logger = logging.getLogger(name)
        saved.append((logger, handler, logger.level))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        return logger

    yield attach_
    for logger, handler, level in reversed(saved):
        logger.removeHandler(handler)
        logger.setLevel(level)
        handler.close()


@pytest.fixture
def verbose_urllib3() -> Iterator[None]:
    """Let urllib3 log every connection, request and retry at DEBUG, as during a real incident."""
    logger = logging.getLogger("urllib3")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield
    logger.setLevel(level)


def test_a_failing_endpoint_gets_only_the_apps_records_and_no_storm(
    receiver: Receiver, http_sink: Callable[..., HttpSink], make, attach, verbose_urllib3
) -> None:
    records, per_batch = 30, 10
    urllib3_attempts, policy_attempts = 2, 2  # per dispatch call, per batch
    # Far more 500s than the app's records can use: a storm would find them.
    receiver.respond(*[500] * 1000)
    sink = http_sink(receiver.url, retries=fast_retry(total=urllib3_attempts - 1))
    dispatcher = make(
        sink, delay=60, max_batch_size=per_batch,
        retry=RetryPolicy(max_attempts=policy_attempts, backoff=0.01),
    )
    handler = BatchHandler(dispatcher)
    attach(handler)  # the root logger: urllib3's and batchdispatch's records reach it too
    app = logging.getLogger("app")
    for n in range(records):
        app.info("order %d paid", n)
    assert dispatcher.shutdown(timeout=30)

    stats = dispatcher.stats()
    assert (stats.enqueued, stats.dispatched, stats.failed, stats.dropped) == (records, 0, records, 0)
    requests = receiver.requests
    assert all(request.status == 500 for request in requests)
    # Each dispatch call made exactly urllib3's attempts; nothing else was posted.
    assert len(requests) == stats.batches * urllib3_attempts
    # Every app record was posted once per attempt, and nothing but app records.
    posted = collections.Counter(
        (item["logger"], item["message"]) for request in requests for item in request.items
    )
    assert posted == {("app", f"order {n} paid"): policy_attempts * urllib3_attempts for n in range(records)}
    assert len(requests) <= -(-records // per_batch) * policy_attempts * urllib3_attempts
    # The handler did see what was logged during delivery, and let it go.
    assert handler.skipped > 0


def test_a_url_handler_owns_its_dispatcher_and_sink(receiver: Receiver, attach) -> None:
    handler = BatchHandler(
        url=receiver.url,
        sink_options={"retries": 0, "headers": {"api-key": "k-1"}},
        dispatcher_options={"delay": 60},
    )
    logger = attach(handler, "app.url")
    logger.warning("disk %d%% full", 91, extra={"host": "db-1"})
    dispatcher = handler.dispatcher
    assert isinstance(dispatcher, BackgroundDispatcher)
    assert dispatcher.name == "BatchHandler"
    handler.close()  # shuts the dispatcher down (within flush_timeout) and closes the sink
    [request] = receiver.requests
    assert request.headers["api-key"] == "k-1"
    [item] = request.items
    assert (item["level"], item["logger"], item["message"]) == ("WARNING", "app.url", "disk 91% full")
    assert item["extra"] == {"host": "db-1"}
    assert not dispatcher.stats().worker_alive
    assert not dispatcher.enqueue({"late": True})  # shut down: refused and counted
    handler.close()  # idempotent


def test_dict_config_with_a_url_needs_no_code(receiver: Receiver) -> None:
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "ship": {
                "class": "batchdispatch.handlers.BatchHandler",
                "url": receiver.url,
                "sink_options": {"retries": 0, "headers": "ext://__main__.HEADERS"},
                "dispatcher_options": {"delay": 60, "max_batch_size": 2},
                "level": "INFO",
            },
        },
        "root": {"handlers": ["ship"], "level": "DEBUG"},
    }
    result = run_python(
        f"""
        import logging, logging.config
        HEADERS = {{"api-key": "k-2"}}
        logging.config.dictConfig({config!r})
        logging.getLogger("urllib3").setLevel(logging.DEBUG)
        for n in range(5):
            logging.getLogger("app").info("event %d", n)
        logging.getLogger("app").debug("below the handler's level")
        # No shutdown call: logging.shutdown() at exit closes the handler,
        # which shuts its own dispatcher down.
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert receiver.wait_for_items(5, timeout=10)
    assert [item["message"] for item in receiver.items] == [f"event {n}" for n in range(5)]
    assert [len(request.items) for request in receiver.requests] == [2, 2, 1]
    assert {request.headers["api-key"] for request in receiver.requests} == {"k-2"}
