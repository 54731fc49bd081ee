"""RetryPolicy, and retries and events on BackgroundDispatcher."""

from __future__ import annotations

import dataclasses
import random
from typing import Any, List

import pytest

from batchdispatch import PartialFailure, RetryPolicy, current_batch_id


def test_backoff_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(backoff=1.0, multiplier=2.0, max_backoff=5.0, jitter=False)
    assert [policy.backoff_for(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_full_jitter_stays_between_zero_and_the_capped_backoff() -> None:
    policy = RetryPolicy(backoff=1.0, multiplier=3.0, max_backoff=10.0, jitter=True)
    rng = random.Random(7)
    for failures in range(1, 8):
        ceiling = min(10.0, 3.0 ** (failures - 1))
        draws = [policy.backoff_for(failures, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling * 0.8  # spread over the range, not stuck at 0


def test_gives_up_after_max_attempts_or_on_a_non_retryable_error() -> None:
    policy = RetryPolicy(max_attempts=3)

    class Permanent(Exception):
        retryable = False

    assert not policy.gives_up(2, ConnectionError())
    assert policy.gives_up(3, ConnectionError())
    assert policy.gives_up(1, Permanent())
    assert policy.gives_up(1, PartialFailure([1], Permanent()))
    assert not policy.gives_up(1, PartialFailure([1], ConnectionError()))


def test_the_policy_is_immutable_and_new_returns_a_checked_copy() -> None:
    policy = RetryPolicy()
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.max_attempts = 9  # type: ignore[misc]
    assert policy.new(max_attempts=9).max_attempts == 9
    assert policy.max_attempts == 3
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        policy.new(max_attempts=0)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_attempts": 0}, ValueError, "max_attempts must be at least 1"),
        ({"max_attempts": 1.5}, TypeError, "max_attempts must be an int"),
        ({"backoff": 0}, ValueError, "backoff must be a positive finite number"),
        ({"backoff": float("nan")}, ValueError, "backoff must be"),
        ({"multiplier": 0.5}, ValueError, "multiplier must be at least 1"),
        ({"max_backoff": -1}, ValueError, "max_backoff must be"),
        ({"backoff": "1"}, TypeError, "backoff must be a number"),
    ],
)
def test_bad_policies_name_the_parameter(options: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        RetryPolicy(**options)


def test_partial_failure_carries_its_items_and_cause() -> None:
    cause = ConnectionError("reset")
    exc = PartialFailure((1, 2), cause)
    assert exc.failed_items == [1, 2]
    assert exc.cause is cause
    assert str(exc) == "2 items of the batch failed: ConnectionError: reset"


def test_background_dispatcher_retries_and_emits_events(make) -> None:
    attempts: List[Any] = []
    events: List[str] = []

    def send(batch: List[Any]) -> None:
        attempts.append(list(batch))
        if len(attempts) == 1:
            raise ConnectionError("blip")

    d = make(send, delay=0.01, on_error=lambda e, b: None,
             retry=RetryPolicy(max_attempts=2, backoff=0.001, jitter=False))
    for name in ("batch_started", "batch_failed", "batch_retry_scheduled", "batch_succeeded"):
        d.on(name, lambda e, name=name: events.append(f"{name}:{e.attempt}"))
    d.enqueue("a")
    assert d.flush(timeout=10)
    d.enqueue("b")  # later items waited behind the retry, then go on
    assert d.flush(timeout=10)
    assert attempts == [["a"], ["a"], ["b"]]
    assert events[:5] == [
        "batch_started:1", "batch_failed:1", "batch_retry_scheduled:2",
        "batch_started:2", "batch_succeeded:2",
    ]
    stats = d.stats()
    assert (stats.dispatched, stats.failed, stats.retried) == (2, 0, 1)


def test_current_batch_id_is_kept_across_retries_and_renewed_after_a_partial_failure(make: Any) -> None:
    seen: List[Any] = []

    def dispatch(batch: List[int]) -> None:
        seen.append((current_batch_id(), list(batch)))
        if len(seen) == 1:
            raise RuntimeError("first attempt fails")
        if len(seen) == 2:
            raise PartialFailure([batch[0]], RuntimeError("one item refused"))

    dispatcher = make(dispatch, retry=RetryPolicy(max_attempts=5, backoff=0.01), on_error=lambda e, b: None)
    dispatcher.enqueue(1)
    dispatcher.enqueue(2)
    assert dispatcher.flush(timeout=10)
    assert [items for _, items in seen] == [[1, 2], [1, 2], [1]]
    first, second, third = (batch_id for batch_id, _ in seen)
    assert first is not None
    assert len(first) == 32
    assert second == first  # a retry of the same batch: a receiver can deduplicate
    assert third not in (None, first)  # other items than the receiver saw under that id
    assert current_batch_id() is None  # outside dispatch
