"""BatchHandler: what a record becomes, feedback protection, flushing, dictConfig.

These need no HTTP: records go to a Recorder through a real
BackgroundDispatcher, or to a plain object with enqueue and flush. The
failing-endpoint test over real HTTP is in tests/with_server/.
"""

from __future__ import annotations

import datetime
import enum
import inspect
import json
import logging
import os
import re
import sys
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest
from freezegun import freeze_time

from batchdispatch import BackgroundDispatcher, QueueFullError
from batchdispatch.handlers import BatchHandler

from .conftest import ROOT, Recorder, run_python


class Target:
    """The least a handler needs: enqueue(item) and flush(timeout=...)."""

    def __init__(self) -> None:
        self.items: List[Dict[str, Any]] = []
        self.flushes: List[Optional[float]] = []

    def enqueue(self, item: Dict[str, Any]) -> bool:
        self.items.append(item)
        return True

    def flush(self, timeout: Optional[float] = 5.0) -> bool:
        self.flushes.append(timeout)
        return True


@pytest.fixture
def attach() -> Iterator[Callable[..., logging.Logger]]:
    """Attach a handler to a logger (root by default); undo it all afterwards."""
    saved: List[Any] = []

    def attach_(handler: logging.Handler, name: Optional[str] = None) -> logging.Logger:
        logger = logging.getLogger(name)
        saved.append((logger, handler, logger.level, logger.propagate))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
        if name is not None:
            logger.propagate = False  # keep the test's records to this handler
        return logger

    yield attach_
    for logger, handler, level, propagate in reversed(saved):
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
        handler.close()


def messages(handler: BatchHandler) -> List[str]:
    """The messages a handler over a Target has enqueued so far."""
    target = handler.dispatcher
    assert isinstance(target, Target)
    return [item["message"] for item in target.items]


def last(handler: BatchHandler) -> Dict[str, Any]:
    target = handler.dispatcher
    assert isinstance(target, Target)
    return target.items[-1]


def shipped(handler: BatchHandler, logger: logging.Logger, *args: Any, **kwargs: Any) -> Dict[str, Any]:
    """Log one INFO record and return what the handler made of it."""
    target = handler.dispatcher
    assert isinstance(target, Target)
    before = len(target.items)
    logger.info(*args, **kwargs)
    assert len(target.items) == before + 1
    return target.items[-1]


# -- what a record becomes -------------------------------------------------------


def test_a_record_becomes_a_dict_with_a_utc_timestamp_and_where_it_came_from(attach) -> None:
    handler = BatchHandler(Target())
    logger = attach(handler, "app.fields")
    with freeze_time("2026-12-01 10:00:00.123456"):
        line = sys._getframe().f_lineno + 1
        logger.info("user %s bought %d items", "ada", 3)
    item = last(handler)
    assert item == {
        "timestamp": "2026-12-01T10:00:00.123456+00:00",
        "level": "INFO",
        "logger": "app.fields",
        "message": "user ada bought 3 items",
        "module": "test_handlers",
        "function": "test_a_record_becomes_a_dict_with_a_utc_timestamp_and_where_it_came_from",
        "line": line,
        "thread": threading.current_thread().name,
        "process": os.getpid(),
    }
    json.dumps(item, allow_nan=False)


def test_the_timestamp_is_utc_with_microseconds_whatever_the_record_time() -> None:
    handler = BatchHandler(Target())
    # Midnight, on a whole second: isoformat would drop the fraction without timespec.
    record = logging.makeLogRecord({"created": 1796083200.0, "levelname": "ERROR", "levelno": 40})
    item = handler.record_to_dict(record)
    assert item["timestamp"] == "2026-12-01T00:00:00.000000+00:00"
    assert datetime.datetime.fromisoformat(item["timestamp"]).utcoffset() == datetime.timedelta(0)
    assert item["level"] == "ERROR"


def test_the_traceback_and_the_stack_get_fields_of_their_own(attach) -> None:
    handler = BatchHandler(Target())
    logger = attach(handler, "app.exc")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("charge %s failed", "ch_1")
    item = last(handler)
    assert item["level"] == "ERROR"
    assert item["message"] == "charge ch_1 failed"  # no traceback in the message
    assert item["exception"].startswith("Traceback (most recent call last):")
    assert item["exception"].endswith("ValueError: boom")
    assert "stack" not in item

    item = shipped(handler, logger, "where am I", stack_info=True)
    assert item["stack"].startswith("Stack (most recent call last):")
    assert "test_the_traceback_and_the_stack_get_fields_of_their_own" in item["stack"]
    assert "exception" not in item


def test_extra_fields_are_shipped_under_extra_and_only_when_given(attach) -> None:
    handler = BatchHandler(Target())
    logger = attach(handler, "app.extra")
    item = shipped(handler, logger, "signed in", extra={"user_id": 7, "plan": "pro", "tags": ["a", "b"]})
    assert item["extra"] == {"user_id": 7, "plan": "pro", "tags": ["a", "b"]}
    # Extra keys may shadow the handler's own names: nested, they cannot clash.
    item = shipped(handler, logger, "x", extra={"level": "custom", "timestamp": 1})
    assert item["level"] == "INFO"
    assert item["extra"] == {"level": "custom", "timestamp": 1}
    item = shipped(handler, logger, "plain")
    assert "extra" not in item
    assert "exception" not in item


class Color(enum.IntEnum):
    RED = 1


class Mood(str, enum.Enum):
    HAPPY = "happy"


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class OnlyRepr:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        return "<OnlyRepr>"


class BadMapping(dict):  # type: ignore[type-arg]
    def items(self) -> Any:
        raise RuntimeError("cannot iterate")

    def __str__(self) -> str:
        return "<BadMapping>"


def test_values_json_cannot_hold_are_made_safe_and_never_raise(attach) -> None:
    handler = BatchHandler(Target())
    logger = attach(handler, "app.unsafe")
    cyclic: List[Any] = [1]
    cyclic.append(cyclic)
    when = datetime.datetime(2026, 12, 1, 10, 0, tzinfo=datetime.timezone.utc)
    extra = {
        "when": when,
        "day": datetime.date(2026, 12, 1),
        "point": (1, 2),
        "ids": {5},
        "by_id": {1: "one", None: "none"},
        "ratio": float("nan"),
        "big": float("inf"),
        "color": Color.RED,
        "mood": Mood.HAPPY,
        "raw": b"\x00\xff",
        "exc": ValueError("bad"),
        "nope": Unprintable(),
        "only_repr": OnlyRepr(),
        "bad_mapping": BadMapping(a=1),
        "cyclic": cyclic,
    }
    item = shipped(handler, logger, "odd values", extra=extra)
    text = json.dumps(item, allow_nan=False)  # strict JSON: no NaN, no Infinity
    safe = json.loads(text)["extra"]
    assert safe["when"] == "2026-12-01T10:00:00+00:00"
    assert safe["day"] == "2026-12-01"
    assert safe["point"] == [1, 2]
    assert safe["ids"] == [5]
    assert safe["by_id"] == {"1": "one", "None": "none"}
    assert safe["ratio"] == "nan"
    assert safe["big"] == "inf"
    assert safe["color"] == 1
    assert type(item["extra"]["color"]) is int
    assert safe["mood"] == "happy"
    assert type(item["extra"]["mood"]) is str
    assert safe["raw"] == "b'\\x00\\xff'"
    assert safe["exc"] == "bad"
    assert safe["nope"] == "<unrepresentable Unprintable>"
    assert safe["only_repr"] == "<OnlyRepr>"
    assert safe["bad_mapping"] == "<BadMapping>"
    depth, node = 0, safe["cyclic"]
    while isinstance(node, list):  # cut at a bounded depth, as text
        depth, node = depth + 1, node[1]
    assert 1 < depth <= 10
    assert isinstance(node, str)


def test_extra_values_are_copied_when_logged(attach) -> None:
    handler = BatchHandler(Target())
    logger = attach(handler, "app.snapshot")
    cart = {"items": ["apple"]}
    item = shipped(handler, logger, "cart", extra={"cart": cart})
    cart["items"].append("pear")  # after the call: delivery happens later, on another thread
    assert item["extra"]["cart"] == {"items": ["apple"]}


def test_a_formatter_sets_the_message_layout_but_not_the_traceback(attach) -> None:
    handler = BatchHandler(Target())
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = attach(handler, "app.fmt")
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logger.error("failed %d", 1, exc_info=True)
    item = last(handler)
    assert item["message"] == "ERROR app.fmt: failed 1"
    assert item["exception"].endswith("ZeroDivisionError: division by zero")

    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%Y"))
    with freeze_time("2026-12-01 10:00:00"):
        item = shipped(handler, logger, "dated")
    assert item["message"] == "2026 dated"


# -- errors follow logging's conventions -------------------------------------------


class Gate:
    """A dispatch callable that holds its first batch until opened."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.recorder = Recorder()

    def __call__(self, batch: List[Any]) -> None:
        self.entered.set()
        assert self.opened.wait(30), "gate never opened"
        self.recorder(batch)


@pytest.fixture
def gate(make) -> Iterator[Gate]:
    """A Gate, opened before the dispatchers are shut down."""
    gate = Gate()
    yield gate
    gate.opened.set()


def full_queue(make, gate: Gate, attach, name: str) -> Tuple[BackgroundDispatcher[Any], logging.Logger]:
    """A handler's dispatcher with one batch in flight and its one-item queue full."""
    dispatcher = make(gate, delay=60, max_queue_size=1, overflow="raise")
    logger = attach(BatchHandler(dispatcher), name)
    logger.info("in flight")  # a full queue wakes the worker at once
    assert gate.entered.wait(10)
    logger.info("queued")
    return dispatcher, logger


def test_a_full_queue_under_overflow_raise_goes_to_handle_error(attach, make, gate, capsys) -> None:
    dispatcher, logger = full_queue(make, gate, attach, "app.full")
    logger.info("does not fit")  # does not raise to the caller
    err = capsys.readouterr().err
    assert "--- Logging error ---" in err
    assert "QueueFullError: queue is full" in err
    gate.opened.set()
    assert dispatcher.flush(timeout=10)
    assert [item["message"] for item in gate.recorder.items] == ["in flight", "queued"]
    assert dispatcher.stats().dropped_by_reason == {"queue_full": 1}


def test_handle_error_is_silent_when_logging_raise_exceptions_is_off(
    attach, make, gate, capsys, monkeypatch
) -> None:
    monkeypatch.setattr(logging, "raiseExceptions", False)
    dispatcher, logger = full_queue(make, gate, attach, "app.quiet")
    logger.info("does not fit")
    assert capsys.readouterr().err == ""
    with pytest.raises(QueueFullError):  # the dispatcher itself did refuse it
        dispatcher.enqueue({})


def test_a_message_that_does_not_format_goes_to_handle_error(attach, capsys) -> None:
    handler = BatchHandler(Target())
    logger = attach(handler, "app.badfmt")
    logger.info("%d apples", "many")
    assert "--- Logging error ---" in capsys.readouterr().err
    assert messages(handler) == []


# -- feedback protection -------------------------------------------------------------


def test_records_of_the_librarys_own_loggers_are_skipped(attach) -> None:
    handler = BatchHandler(Target())
    attach(handler)  # on the root logger, where the library's records propagate
    logging.getLogger("batchdispatch").warning("batch failed")
    logging.getLogger("batchdispatch.http").warning("POST failed")
    logging.getLogger("batchdispatchers").warning("not ours: a different name")
    logging.getLogger("app.batchdispatch").warning("not ours either")
    assert [last(handler)["logger"], *messages(handler)] == [
        "app.batchdispatch",
        "not ours: a different name",
        "not ours either",
    ]
    assert handler.skipped == 2


def test_records_logged_inside_dispatch_on_error_and_listeners_are_skipped(attach, make) -> None:
    recorder = Recorder()
    inside = logging.getLogger("inside")

    def dispatch(batch: List[Dict[str, Any]]) -> None:
        inside.warning("delivering %d records", len(batch))  # e.g. urllib3's debug logs
        if any(item["message"] == "fail" for item in batch):
            raise RuntimeError("endpoint down")
        recorder(batch)

    def on_error(exc: BaseException, batch: List[Any]) -> None:
        inside.error("gave up %d records", len(batch), exc_info=exc)

    dispatcher = make(dispatch, delay=60, on_error=on_error)
    dispatcher.on("batch_succeeded", lambda event: inside.info("succeeded"))
    handler = BatchHandler(dispatcher)
    attach(handler)  # the root logger: what dispatch logs reaches the handler too
    logging.getLogger("app").info("one")
    logging.getLogger("app").info("two")
    assert dispatcher.flush(timeout=10)
    logging.getLogger("app").info("fail")
    assert dispatcher.flush(timeout=10)
    logging.getLogger("app").info("three")
    assert dispatcher.flush(timeout=10)

    assert [item["message"] for item in recorder.items] == ["one", "two", "three"]
    # dispatch x3 and listener x2, on_error once: all seen, none shipped.
    assert handler.skipped == 6
    stats = dispatcher.stats()
    assert (stats.enqueued, stats.dispatched, stats.failed) == (4, 3, 1)


def test_another_thread_logging_during_a_delivery_is_still_shipped(attach, make) -> None:
    entered, release = threading.Event(), threading.Event()
    recorder = Recorder()

    def dispatch(batch: List[Any]) -> None:
        recorder(batch)
        entered.set()
        assert release.wait(30)

    dispatcher = make(dispatch, delay=60)
    handler = BatchHandler(dispatcher)
    logger = attach(handler, "app.concurrent")
    logger.info("first")
    flusher = threading.Thread(target=dispatcher.flush, kwargs={"timeout": 30})
    flusher.start()
    assert entered.wait(30)  # the worker is inside dispatch now
    logger.info("second")  # this thread is not delivering: shipped
    release.set()
    flusher.join(30)
    assert dispatcher.flush(timeout=10)
    assert [item["message"] for item in recorder.items] == ["first", "second"]
    assert handler.skipped == 0


def test_emit_does_not_wait_for_the_handler_lock(attach) -> None:
    handler = BatchHandler(Target())
    logger = attach(handler, "app.nolock")
    # logging.shutdown() holds this lock while it flushes: logging must go on.
    assert handler.lock is not None
    with handler.lock:
        thread = threading.Thread(target=logger.info, args=("while locked",))
        thread.start()
        thread.join(10)
        finished = not thread.is_alive()
    thread.join(10)
    assert finished, "emit waited for the handler's lock"
    assert messages(handler) == ["while locked"]


def test_filters_still_apply(attach) -> None:
    handler = BatchHandler(Target())
    handler.addFilter(lambda record: record.getMessage() != "secret")
    logger = attach(handler, "app.filters")
    logger.info("secret")
    logger.info("public")
    assert messages(handler) == ["public"]
    assert handler.skipped == 0  # filtered out, not skipped for feedback


@pytest.mark.skipif(sys.version_info < (3, 12), reason="filters may return a record from Python 3.12")
def test_a_filter_may_replace_the_record(attach) -> None:
    def redact(record: logging.LogRecord) -> logging.LogRecord:
        return logging.makeLogRecord({**vars(record), "msg": "[redacted]", "args": ()})

    handler = BatchHandler(Target())
    handler.addFilter(redact)
    logger = attach(handler, "app.redact")
    logger.info("card %s", "4242")
    assert messages(handler) == ["[redacted]"]


def test_the_handler_level_applies(attach) -> None:
    handler = BatchHandler(Target(), logging.WARNING)
    logger = attach(handler, "app.level")
    logger.info("too low")
    logger.warning("high enough")
    assert messages(handler) == ["high enough"]


# -- flush and close -------------------------------------------------------------------


def test_close_delivers_what_is_waiting_and_leaves_a_passed_dispatcher_running(
    attach, make, recorder
) -> None:
    dispatcher = make(recorder, delay=60)  # nothing would go out for a minute
    handler = BatchHandler(dispatcher)
    logger = attach(handler, "app.close")
    for n in range(3):
        logger.info("record %d", n)
    handler.close()
    assert [item["message"] for item in recorder.items] == ["record 0", "record 1", "record 2"]
    assert dispatcher.enqueue({"still": "open"})  # shared: not shut down
    assert dispatcher.shutdown(timeout=10)
    assert recorder.items[-1] == {"still": "open"}


def test_flush_delivers_what_is_waiting(attach, make, recorder) -> None:
    dispatcher = make(recorder, delay=60)
    handler = BatchHandler(dispatcher)
    logger = attach(handler, "app.flush")
    logger.warning("now")
    handler.flush()
    assert [item["message"] for item in recorder.items] == ["now"]


def test_flush_and_close_pass_flush_timeout_and_close_is_idempotent() -> None:
    target = Target()
    handler = BatchHandler(target, flush_timeout=1.5)
    handler.flush()
    handler.close()
    handler.close()
    assert target.flushes == [1.5, 1.5]
    assert BatchHandler(target, flush_timeout=None).flush_timeout is None


def test_close_returns_within_flush_timeout_when_delivery_hangs(attach, make) -> None:
    release = threading.Event()
    dispatcher = make(lambda batch: release.wait(30), delay=60)
    handler = BatchHandler(dispatcher, flush_timeout=0.05)
    logger = attach(handler, "app.hang")
    logger.info("stuck")
    handler.close()  # returns after about 0.05 s: the test's timeout guards a hang
    release.set()
    assert dispatcher.shutdown(timeout=10)


# -- construction ------------------------------------------------------------------------


def test_exactly_one_of_dispatcher_and_url_is_required() -> None:
    with pytest.raises(TypeError, match=r"exactly one of dispatcher= .* and url= .*got neither"):
        BatchHandler()
    with pytest.raises(TypeError, match=r"exactly one of dispatcher=.*got both"):
        BatchHandler(Target(), url="http://127.0.0.1:9/")
    with pytest.raises(TypeError, match="apply only with url="):
        BatchHandler(Target(), sink_options={"gzip": True})


def test_bad_arguments_with_url_fail_before_anything_is_left_open(monkeypatch) -> None:
    from batchdispatch.http import HttpSink

    closed: List[HttpSink] = []
    close = HttpSink.close

    def counting_close(self: HttpSink) -> None:
        closed.append(self)
        close(self)

    monkeypatch.setattr(HttpSink, "close", counting_close)
    url = "http://127.0.0.1:9/"
    with pytest.raises(ValueError, match="Unknown level"):
        BatchHandler(url=url, level="LOUD")
    with pytest.raises(TypeError, match="url must be a str"):
        BatchHandler(url=b"http://127.0.0.1:9/")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sink_options must be a mapping"):
        BatchHandler(url=url, sink_options=["gzip"])  # type: ignore[arg-type]
    assert closed == []  # no sink was built for those
    # The sink is built first, then the dispatcher refuses: the sink is closed again.
    with pytest.raises(ValueError, match="delay must be a positive"):
        BatchHandler(url=url, dispatcher_options={"delay": -1})
    assert len(closed) == 1


def test_a_dispatcher_without_enqueue_and_flush_is_rejected_with_a_hint(make_keyed) -> None:
    with pytest.raises(TypeError, match=r"enqueue\(\) and flush\(\).*got str \(in dictConfig.*ext://"):
        BatchHandler("myapp.dispatcher")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a KeyedDispatcher's enqueue takes a key"):
        BatchHandler(make_keyed(lambda key, batch: None))


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (-1, ValueError, "flush_timeout must be a non-negative"),
        ("5", TypeError, "flush_timeout must be a number"),
    ],
)
def test_flush_timeout_is_checked(value: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        BatchHandler(Target(), flush_timeout=value)


DICT_CONFIG = """
    import json, logging, logging.config
    from batchdispatch import BackgroundDispatcher

    shipped = []
    dispatcher = BackgroundDispatcher(shipped.extend, delay=60)

    logging.config.dictConfig({
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"short": {"format": "%(name)s| %(message)s"}},
        "handlers": {
            "ship": {
                "class": "batchdispatch.handlers.BatchHandler",
                "dispatcher": "ext://__main__.dispatcher",
                "level": "INFO",
                "formatter": "short",
                "flush_timeout": 2.5,
            },
        },
        "loggers": {"app": {"handlers": ["ship"], "level": "DEBUG"}},
    })
    handler = logging.getLogger("app").handlers[0]
    log = logging.getLogger("app")
    log.debug("below the handler's level")
    log.info("order %s paid", "o-1", extra={"amount": 12.5})
    logging.shutdown()  # closes the handler: that flushes the dispatcher
    print(json.dumps({"flush_timeout": handler.flush_timeout, "shipped": shipped}))
    dispatcher.shutdown()
"""


def test_dict_config_builds_the_handler_with_an_ext_dispatcher() -> None:
    result = run_python(DICT_CONFIG)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["flush_timeout"] == 2.5
    [item] = report["shipped"]
    assert item["logger"] == "app"
    assert item["message"] == "app| order o-1 paid"
    assert item["extra"] == {"amount": 12.5}


def test_dict_config_reports_a_missing_dispatcher_by_name() -> None:
    result = run_python(
        """
        import logging.config
        logging.config.dictConfig({"version": 1, "handlers": {"ship": {
            "class": "batchdispatch.handlers.BatchHandler", "dispatcher": "myapp.dispatcher"}}})
        """
    )
    assert result.returncode == 1
    assert re.search(r"Unable to configure handler 'ship'", result.stderr)
    assert "in dictConfig, name it as 'ext://module.attribute'" in result.stderr


def test_the_class_docstring_example_runs() -> None:
    # cleandoc: Python 3.13 strips docstring indentation at compile time, older versions do not.
    doc = inspect.cleandoc(BatchHandler.__doc__ or "").split(".. code-block:: python\n", 1)[1]
    lines = []
    for line in doc.splitlines():
        if line.strip() and not line.startswith(" " * 4):
            break  # the end of the indented block
        lines.append(line)
    result = run_python("\n".join(lines))
    assert result.returncode == 0, result.stderr
    assert "'message': 'user ada signed in'" in result.stdout
    assert "'extra': {'user_id': 7}" in result.stdout


def test_the_ship_logs_example_delivers_the_apps_records_and_skips_urllib3s() -> None:
    path = os.path.join(ROOT, "examples", "ship_logs.py")
    result = run_python(f"import runpy; runpy.run_path({path!r}, run_name='__main__')")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00"
    expected = [
        r"INFO    shop\.checkout: order o-1001 paid \{'amount_cents': 1250, 'currency': 'EUR'\}",
        r"WARNING shop\.checkout: stock low for sku-42 \{'left': 3\}",
        r"ERROR   shop\.checkout: refund of o-0999 failed",
        r"    ConnectionError: payment provider unreachable",
        r"DEBUG   shop\.checkout: cart c-77 recalculated",
    ]
    assert len(lines) == len(expected) + 1, result.stdout
    for line, pattern in zip(lines, expected):
        prefix = "" if pattern.startswith("    ") else stamp + " "
        assert re.fullmatch(prefix + pattern, line), line
    summary = re.fullmatch(
        r"2 requests \(503, 200\); 4 records arrived; (\d+) records logged during delivery were not shipped",
        lines[-1],
    )
    assert summary, lines[-1]
    assert int(summary[1]) > 0  # urllib3's debug logs reached the handler and were skipped
