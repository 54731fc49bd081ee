"""flush_after: flush when a unit of work ends, as a decorator and as a context manager."""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from typing import Any, Callable, Iterator, List

import pytest

from batchdispatch import BackgroundDispatcher, KeyedDispatcher
from batchdispatch._deadlines import monotonic
from batchdispatch._unit import flush_after

from .conftest import KeyedRecorder, Recorder, run_python

#: A delay no test waits for: only a flush delivers.
NEVER = 60.0


@pytest.fixture
def events(make: Callable[..., BackgroundDispatcher[Any]], recorder: Recorder) -> BackgroundDispatcher[Any]:
    return make(recorder, delay=NEVER)


class Boom(Exception):
    pass


class FailingFlush:
    """An object with a flush that raises."""

    def __init__(self) -> None:
        self.calls: List[Any] = []

    def flush(self, timeout: Any = None) -> bool:
        self.calls.append(timeout)
        raise RuntimeError("flush broke")


# -- delivery ---------------------------------------------------------------


def test_decorator_delivers_when_the_function_returns(
    events: BackgroundDispatcher[Any], recorder: Recorder,
) -> None:
    @flush_after(events, timeout=5)
    def handler(event: str, *, count: int = 1) -> str:
        """The handler."""
        for n in range(count):
            events.enqueue({"event": event, "n": n})
        return "ok"

    assert handler("signup", count=3) == "ok"
    assert recorder.items == [{"event": "signup", "n": n} for n in range(3)]
    assert handler.__name__ == "handler"
    assert handler.__doc__ == "The handler."
    assert handler.__wrapped__("again") == "ok"  # type: ignore[attr-defined]
    assert events.stats().pending == 1  # the undecorated call was not flushed


def test_context_manager_delivers_at_the_end_of_the_block(
    events: BackgroundDispatcher[Any], recorder: Recorder,
) -> None:
    with flush_after(events, timeout=5) as unit:
        events.enqueue("a")
        events.enqueue("b")
        assert recorder.items == []
    assert recorder.items == ["a", "b"]
    assert unit.dispatcher is events
    assert unit.timeout == 5.0


def test_decorator_delivers_and_reraises_when_the_function_raises(
    events: BackgroundDispatcher[Any], recorder: Recorder,
) -> None:
    @flush_after(events)
    def task() -> None:
        events.enqueue("before the error")
        raise Boom("task failed")

    with pytest.raises(Boom, match="task failed"):
        task()
    assert recorder.items == ["before the error"]


def test_context_manager_delivers_and_reraises_when_the_block_raises(
    events: BackgroundDispatcher[Any], recorder: Recorder,
) -> None:
    def body() -> None:
        with flush_after(events, timeout=5):
            events.enqueue("x")
            raise Boom

    with pytest.raises(Boom):
        body()
    assert recorder.items == ["x"]


def test_one_object_decorates_many_functions_and_nests(
    events: BackgroundDispatcher[Any], recorder: Recorder,
) -> None:
    unit = flush_after(events, timeout=5)

    @unit
    def first() -> None:
        events.enqueue(1)

    @unit
    def second() -> None:
        with unit:
            events.enqueue(2)
        first()

    second()
    assert recorder.items == [2, 1]
    assert recorder.batches == [[2], [1]]


def test_works_with_a_keyed_dispatcher(
    make_keyed: Callable[..., KeyedDispatcher[Any]],
) -> None:
    recorder = KeyedRecorder()
    hooks = make_keyed(recorder, delay=NEVER)
    with flush_after(hooks, timeout=5):
        hooks.enqueue("ep-1", "a")
        hooks.enqueue("ep-2", "b")
    assert recorder.items("ep-1") == ["a"]
    assert recorder.items("ep-2") == ["b"]


def test_passes_its_timeout_to_flush() -> None:
    seen: List[Any] = []

    class Flushable:
        def flush(self, timeout: Any = 5.0) -> bool:
            seen.append(timeout)
            return True

    with flush_after(Flushable(), timeout=0):
        pass
    with flush_after(Flushable(), timeout=None):
        pass
    flush_after(Flushable())(lambda: None)()
    assert seen == [0.0, None, 5.0]


# -- bounded waits ----------------------------------------------------------


@pytest.fixture
def hung() -> Iterator[Any]:
    """A dispatcher whose dispatch blocks until the test ends, then is shut down."""
    release = threading.Event()
    started = threading.Event()

    def dispatch(batch: List[Any]) -> None:
        started.set()
        release.wait(30)

    dispatcher: BackgroundDispatcher[Any] = BackgroundDispatcher(dispatch, delay=NEVER, name="hung")
    try:
        yield dispatcher, started
    finally:
        release.set()
        assert dispatcher.shutdown(timeout=10)


def test_a_hung_dispatch_does_not_hold_the_block_past_its_timeout(
    hung: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    dispatcher, started = hung

    def body() -> None:
        with flush_after(dispatcher, timeout=0.2):
            dispatcher.enqueue("stuck")
            dispatcher.enqueue("behind it")
            raise Boom

    began = monotonic()
    with caplog.at_level(logging.WARNING, logger="batchdispatch"), pytest.raises(Boom):
        body()
    elapsed = monotonic() - began
    assert started.is_set()
    assert 0.2 <= elapsed < 5
    warning = [r for r in caplog.records if r.name == "batchdispatch" and "flush_after" in r.getMessage()]
    assert len(warning) == 1
    assert "timed out after 0.2 s with 2 items pending" in warning[0].getMessage()


def test_a_hung_dispatch_does_not_hold_the_decorated_function(hung: Any) -> None:
    dispatcher, _ = hung

    @flush_after(dispatcher, timeout=0.1)
    def handler() -> str:
        dispatcher.enqueue("stuck")
        return "answered"

    began = monotonic()
    assert handler() == "answered"
    assert monotonic() - began < 5


# -- a failing flush ----------------------------------------------------------


def test_a_failing_flush_does_not_mask_the_body_exception(caplog: pytest.LogCaptureFixture) -> None:
    target = FailingFlush()

    @flush_after(target, timeout=1)
    def task() -> None:
        raise Boom("the real error")

    with caplog.at_level(logging.ERROR, logger="batchdispatch"), pytest.raises(Boom, match="the real error"):
        task()
    assert target.calls == [1.0]
    (record,) = [r for r in caplog.records if r.name == "batchdispatch"]
    assert "failed while an exception propagated" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


def test_a_failing_flush_raises_when_the_body_succeeded() -> None:
    with pytest.raises(RuntimeError, match="flush broke"), flush_after(FailingFlush()):
        pass


# -- arguments --------------------------------------------------------------


@pytest.mark.parametrize(
    ("timeout", "error"),
    [(-1, ValueError), (math.nan, ValueError), (math.inf, ValueError), ("1", TypeError), (True, TypeError)],
)
def test_rejects_a_bad_timeout(events: BackgroundDispatcher[Any], timeout: Any, error: type) -> None:
    with pytest.raises(error, match=r"^timeout "):
        flush_after(events, timeout=timeout)


@pytest.mark.parametrize("dispatcher", [None, object(), "flush", type("NotCallable", (), {"flush": 3})()])
def test_rejects_something_without_a_flush_method(dispatcher: Any) -> None:
    with pytest.raises(TypeError, match=r"^dispatcher must have a callable flush"):
        flush_after(dispatcher)


def test_rejects_what_it_cannot_wrap(events: BackgroundDispatcher[Any]) -> None:
    unit = flush_after(events)

    async def coroutine() -> None:
        pass

    def generator() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="async function"):
        unit(coroutine)
    with pytest.raises(TypeError, match="generator function"):
        unit(generator)
    with pytest.raises(TypeError, match="decorates a callable"):
        unit(42)  # type: ignore[type-var]
    assert repr(unit) == f"flush_after({events!r}, timeout=5.0)"


# -- a real multiprocessing fork pool ---------------------------------------

POOL = """
    import json, multiprocessing, os, sys, warnings

    # 3.12+ warns that forking a process with threads may deadlock the child;
    # the pool's own threads are what it sees. Only in this subprocess.
    warnings.filterwarnings("ignore", category=DeprecationWarning)

    from batchdispatch import BackgroundDispatcher
    from batchdispatch._unit import flush_after

    OUT = os.environ["BD_OUT"]
    TASKS = 40

    def write(batch):
        with open(OUT, "a", encoding="utf-8") as out:
            out.write("".join(json.dumps(item) + "\\n" for item in batch))

    # Module level, as a Celery task module would have it. A delay no child
    # lives to see: only a flush delivers.
    events = BackgroundDispatcher(write, delay=60, name="pool-events")

    def plain(n):
        events.enqueue({"task": "plain", "n": n, "pid": os.getpid()})
        return os.getpid()

    @flush_after(events, timeout=10)
    def flushed(n):
        events.enqueue({"task": "flushed", "n": n, "pid": os.getpid()})
        return os.getpid()

    if __name__ == "__main__":
        context = multiprocessing.get_context("fork")
        pids = {}
        for task in (plain, flushed):
            with context.Pool(4) as pool:
                pids[task.__name__] = pool.map(task, range(TASKS), chunksize=1)
                pool.close()
                pool.join()
        print(json.dumps({"parent": os.getpid(), "pids": pids, "parent_pending": events.stats().pending}))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_pool_child_delivers_only_with_flush_after(tmp_path: Any) -> None:
    out = tmp_path / "items.jsonl"
    result = run_python(POOL, env={"BD_OUT": str(out)})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    report = json.loads(result.stdout)
    items = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []

    # Every task ran, in pool children, not in the parent.
    for task in ("plain", "flushed"):
        assert len(report["pids"][task]) == 40
        assert report["parent"] not in report["pids"][task]
    assert report["parent_pending"] == 0

    # The trap: children leave with os._exit, no atexit, and the queue is lost.
    assert [item for item in items if item["task"] == "plain"] == []
    # With flush_after, every item arrives, exactly once, from the child that enqueued it.
    flushed = sorted((item for item in items if item["task"] == "flushed"), key=lambda item: item["n"])
    assert [item["n"] for item in flushed] == list(range(40))
    assert [item["pid"] for item in flushed] == report["pids"]["flushed"]
