"""batchdispatch.testing's recording sinks, and what importing the module costs.

The Receiver is tested against real requests in tests/with_server/test_receiver.py,
and the pytest plugin in tests/with_server/test_pytest_plugin.py.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, List

import pytest

from batchdispatch import BackgroundDispatcher, KeyedDispatcher, PartialFailure, RetryPolicy
from batchdispatch.testing import KeyedRecordingSink, RecordingSink

from .conftest import run_python

FAST_RETRY = RetryPolicy(max_attempts=3, backoff=0.001, max_backoff=0.001)


def test_it_records_a_copy_of_each_batch_and_the_delivered_items() -> None:
    sink: RecordingSink[int] = RecordingSink()
    batch = [1, 2]
    sink(batch)
    batch.append(3)  # the caller reusing its list changes nothing recorded
    sink([3])
    assert sink.batches == [[1, 2], [3]]
    assert sink.items == [1, 2, 3]
    sink.batches[0].append(99)  # and neither does the test changing what it read
    assert sink.batches == [[1, 2], [3]]


def test_with_a_dispatcher_it_holds_every_item_after_flush(
    make: Callable[..., BackgroundDispatcher[Any]], recording_sink: RecordingSink[Any],
) -> None:
    # recording_sink comes from the plugin registered by the pytest11 entry point.
    dispatcher = make(recording_sink, delay=0.01, max_batch_size=10)
    for n in range(25):
        dispatcher.enqueue(n)
    assert dispatcher.flush(timeout=10)
    assert recording_sink.items == list(range(25))
    assert [len(b) for b in recording_sink.batches] == [10, 10, 5]


def test_fail_raises_for_the_next_calls_then_the_retry_delivers(
    make: Callable[..., BackgroundDispatcher[Any]],
) -> None:
    sink: RecordingSink[str] = RecordingSink()
    sink.fail(ConnectionError("down"), times=2)
    errors: List[BaseException] = []
    dispatcher = make(sink, delay=0.01, retry=FAST_RETRY, on_error=lambda exc, batch: errors.append(exc))
    dispatcher.enqueue("a")
    dispatcher.enqueue("b")
    assert dispatcher.flush(timeout=10)
    assert sink.batches == [["a", "b"]] * 3  # failed calls are recorded too
    assert sink.items == ["a", "b"]
    assert [str(e) for e in errors] == ["down", "down"]
    assert dispatcher.stats().dispatched == 2


def test_failing_for_ever_until_succeed() -> None:
    sink: RecordingSink[int] = RecordingSink()
    sink.fail(ValueError("no"), times=None)
    for n in range(3):
        with pytest.raises(ValueError, match="no"):
            sink([n])
    sink.succeed()
    sink([3])
    assert sink.items == [3]
    assert len(sink.batches) == 4


def test_failures_are_raised_in_the_order_they_were_told() -> None:
    sink: RecordingSink[int] = RecordingSink()
    sink.fail(KeyError("first"))
    sink.fail(TimeoutError("second"), times=2)
    raised = []
    for n in range(4):
        try:
            sink([n])
        except Exception as exc:  # noqa: BLE001 - collecting what was raised
            raised.append(type(exc).__name__)
    assert raised == ["KeyError", "TimeoutError", "TimeoutError"]
    assert sink.items == [3]


def test_the_same_exception_raised_again_gets_a_fresh_traceback() -> None:
    sink: RecordingSink[int] = RecordingSink()
    error = RuntimeError("again")
    sink.fail(error, times=None)
    depths = []
    for n in range(3):
        with pytest.raises(RuntimeError) as info:
            sink([n])
        depth, tb = 0, info.value.__traceback__
        while tb is not None:
            depth, tb = depth + 1, tb.tb_next
        depths.append(depth)
    assert depths[0] == depths[1] == depths[2]


def test_a_partial_failure_delivers_the_rest_and_the_retry_only_the_failed_items(
    make: Callable[..., BackgroundDispatcher[Any]],
) -> None:
    sink: RecordingSink[dict] = RecordingSink()
    sink.fail(lambda batch: PartialFailure(batch[1:], ConnectionError("half")))
    dispatcher = make(sink, delay=0.01, retry=FAST_RETRY)
    items = [{"n": n} for n in range(3)]
    for item in items:
        dispatcher.enqueue(item)
    assert dispatcher.flush(timeout=10)
    assert sink.batches == [items, items[1:]]
    assert sink.items == items  # n=0 from the first call, the rest from the retry
    assert dispatcher.stats().dispatched == 3


def test_a_failure_function_gets_a_copy_of_the_batch() -> None:
    sink: RecordingSink[int] = RecordingSink()
    seen: List[List[int]] = []

    def failure(batch: List[int]) -> Exception:
        seen.append(batch)
        batch.clear()
        return PartialFailure([2])

    sink.fail(failure)
    with pytest.raises(PartialFailure):
        sink([1, 2])
    assert seen == [[]]
    assert sink.batches == [[1, 2]]
    assert sink.items == [1]


@pytest.mark.parametrize(
    ("failure", "times", "error", "message"),
    [
        ("boom", 1, TypeError, "failure must be an exception or a callable, got str"),
        (ValueError(), 0, ValueError, "times must be None or an int >= 1, got 0"),
        (ValueError(), True, ValueError, "times must be None or an int >= 1, got True"),
        (ValueError(), 1.5, ValueError, "times must be None or an int >= 1, got 1.5"),
    ],
)
def test_fail_rejects_bad_arguments(failure: Any, times: Any, error: type, message: str) -> None:
    sink: RecordingSink[int] = RecordingSink()
    with pytest.raises(error, match=message.replace("(", r"\(")):
        sink.fail(failure, times=times)
    sink([1])  # nothing was scripted
    assert sink.items == [1]


def test_waits_are_sync_points_with_a_timeout() -> None:
    sink: RecordingSink[int] = RecordingSink()
    assert sink.wait_for_batches(1, timeout=0.01) is False
    assert sink.wait_for_items(1, timeout=0.01) is False
    sink.fail(OSError("x"))
    calls = threading.Thread(target=_call_twice, args=(sink,))
    calls.start()
    assert sink.wait_for_batches(2, timeout=10)
    assert sink.wait_for_items(2, timeout=10)  # the first call failed: only [2, 3] counts
    calls.join()
    assert sink.items == [2, 3]
    sink.clear()
    assert (sink.batches, sink.items) == ([], [])
    assert sink.wait_for_items(1, timeout=0.01) is False  # counts start again after clear()


def _call_twice(sink: RecordingSink[int]) -> None:
    try:
        sink([1])
    except OSError:
        pass
    sink([2, 3])


def test_repr_counts_batches_items_and_scripted_failures() -> None:
    sink: RecordingSink[int] = RecordingSink()
    sink([1, 2])
    sink.fail(OSError(), times=None)
    assert repr(sink) == "<RecordingSink batches=1 delivered=2 failures_scripted=1>"
    keyed: KeyedRecordingSink[int] = KeyedRecordingSink()
    assert repr(keyed) == "<KeyedRecordingSink batches=0 delivered=0 failures_scripted=0>"


# -- keyed ---------------------------------------------------------------------


def test_keyed_records_key_and_batch_and_fails_one_key_only(
    make_keyed: Callable[..., KeyedDispatcher[Any]],
) -> None:
    sink: KeyedRecordingSink[int] = KeyedRecordingSink()
    sink.fail(ConnectionError("b is down"), key="b", times=None)
    hooks = make_keyed(sink, delay=0.01, max_concurrent_batches=2)
    for n in range(3):
        hooks.enqueue("a", n)
        hooks.enqueue("b", 10 + n)
    assert hooks.flush(timeout=10)
    assert sink.items_for("a") == [0, 1, 2]
    assert sink.items_for("b") == []
    assert sorted(sink.batches) == [("a", [0, 1, 2]), ("b", [10, 11, 12])]
    assert sink.items == [0, 1, 2]
    assert hooks.stats().failed == 3


def test_keyed_failures_without_a_key_match_any_key_in_order() -> None:
    sink: KeyedRecordingSink[int] = KeyedRecordingSink()
    sink.fail(KeyError("for x"), key="x")
    sink.fail(ValueError("anyone"))
    with pytest.raises(ValueError, match="anyone"):
        sink("y", [1])
    with pytest.raises(KeyError):
        sink("x", [2])
    sink("x", [3])
    sink.fail(lambda batch: PartialFailure(batch[:1]), key="z")
    with pytest.raises(PartialFailure):
        sink("z", [4, 5])
    assert sink.items == [3, 5]
    assert sink.batches == [("y", [1]), ("x", [2]), ("x", [3]), ("z", [4, 5])]
    assert sink.wait_for_batches(4, timeout=0.01)
    assert sink.wait_for_items(2, timeout=0.01)
    sink.clear()
    assert (sink.batches, sink.items, sink.items_for("x")) == ([], [], [])


def test_keyed_is_thread_safe_under_parallel_delivery(
    make_keyed: Callable[..., KeyedDispatcher[Any]],
) -> None:
    sink: KeyedRecordingSink[int] = KeyedRecordingSink()
    hooks = make_keyed(sink, delay=0.001, max_batch_size=7, max_concurrent_batches=4)

    def produce(worker: int) -> None:
        for n in range(500):
            hooks.enqueue(n % 20, worker * 1000 + n)

    producers = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join()
    assert hooks.flush(timeout=30)
    assert sink.wait_for_items(2000, timeout=0.01)
    assert sorted(sink.items) == sorted(w * 1000 + n for w in range(4) for n in range(500))
    for key in range(20):  # within a key, each producer's items keep their order
        for worker in range(4):
            mine = [i for i in sink.items_for(key) if i // 1000 == worker]
            assert mine == sorted(mine)


# -- the module ----------------------------------------------------------------


def test_importing_it_does_not_import_pytest_until_a_fixture_is_asked_for() -> None:
    result = run_python(
        """
        import sys
        import batchdispatch.testing
        from batchdispatch.testing import *
        assert "pytest" not in sys.modules, "imported pytest"
        assert sorted(batchdispatch.testing.__all__) == [
            "KeyedRecordingSink", "ReceivedRequest", "Receiver", "RecordingSink", "Response"]
        try:
            batchdispatch.testing.no_such_thing
        except AttributeError as exc:
            assert "no_such_thing" in str(exc)
        else:
            raise AssertionError("no AttributeError")
        from batchdispatch.testing import receiver, recording_sink
        assert "pytest" in sys.modules
        import batchdispatch._pytest_plugin as plugin
        assert (receiver, recording_sink) == (plugin.receiver, plugin.recording_sink)
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
