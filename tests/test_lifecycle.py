"""The lifecycle: every transition function, and a dispatcher driven through them."""

from __future__ import annotations

import threading
from typing import Any, List

import pytest

from batchdispatch import _lifecycle as lifecycle
from batchdispatch._lifecycle import (
    AT_EXIT,
    CLOSED,
    CLOSING,
    DRAINING,
    EXIT_CLOSED,
    EXIT_DRAINING,
    EXIT_GIVEN_UP,
    NEW,
    NO_RETRIES,
    RUNNING,
    SHUT,
    STOPPING,
    State,
)


def state_of(dispatcher: Any) -> str:
    """The state as the dispatcher's repr shows it."""
    return repr(dispatcher).split(" state=")[1].split(" pending=")[0]


def test_close_moves_only_a_new_or_running_dispatcher() -> None:
    assert lifecycle.closed(False, NEW) is CLOSED
    assert lifecycle.closed(True, NEW) is EXIT_CLOSED
    assert lifecycle.closed(False, RUNNING) is CLOSING
    assert lifecycle.closed(True, RUNNING) is EXIT_DRAINING
    for state in State:
        if state not in (NEW, RUNNING):
            assert lifecycle.closed(False, state) is state
            assert lifecycle.closed(True, state) is state  # the exit hook does not retake a closed one


def test_a_passed_deadline_stops_retries_in_every_state_that_had_them() -> None:
    assert lifecycle.stopped(RUNNING) is STOPPING
    assert lifecycle.stopped(CLOSING) is STOPPING
    assert lifecycle.stopped(EXIT_DRAINING) is EXIT_GIVEN_UP
    for state in State:
        after = lifecycle.stopped(state)
        assert after is state or state in (RUNNING, CLOSING, EXIT_DRAINING)
        if state is not NEW:
            assert after in NO_RETRIES


def test_drained_keeps_whether_the_exit_hook_closed_it() -> None:
    for state in State:
        assert lifecycle.drained(state) is (EXIT_CLOSED if state in AT_EXIT else CLOSED)
    assert DRAINING.isdisjoint(SHUT)
    assert SHUT | DRAINING | {NEW, RUNNING} == set(State)


def test_states_read_as_their_names() -> None:
    assert RUNNING == "running"
    assert f"{EXIT_GIVEN_UP}" == str(EXIT_GIVEN_UP) == "exit given up"


def test_new_running_closing_closed(make: Any) -> None:
    entered, release = threading.Event(), threading.Event()
    seen: List[Any] = []

    def dispatch(batch: List[Any]) -> None:
        seen.append(state_of(d))
        entered.set()
        release.wait(10)

    d = make(dispatch, delay=0.01)
    assert state_of(d) == "new"
    d.enqueue(1)
    assert state_of(d) == "running"
    assert entered.wait(10)
    closer = threading.Thread(target=d.shutdown, kwargs={"timeout": 10})
    closer.start()
    while state_of(d) != "closing":  # shutdown closes at once, then waits for the batch
        closer.join(0.01)
        assert closer.is_alive(), "shutdown returned before its batch was released"
    release.set()
    closer.join(10)
    assert state_of(d) == "closed"
    assert seen == ["running"]


def test_shutdown_before_any_enqueue_closes_at_once(make: Any) -> None:
    d = make(lambda batch: None)
    assert d.shutdown(timeout=1)
    assert state_of(d) == "closed"
    assert d.enqueue(1) is False
    assert d.stats().dropped_by_reason == {"closed": 1}


@pytest.mark.parametrize("keyed", [False, True])
def test_a_shutdown_deadline_that_passes_stops_retries(make: Any, make_keyed: Any, keyed: bool) -> None:
    from batchdispatch import RetryPolicy

    entered, release = threading.Event(), threading.Event()

    def dispatch(*args: Any) -> None:
        entered.set()
        release.wait(10)
        raise ConnectionError("down")

    retry = RetryPolicy(max_attempts=5, backoff=0.01)
    d = make_keyed(dispatch, delay=0.01, retry=retry) if keyed else make(dispatch, delay=0.01, retry=retry)
    if keyed:
        d.enqueue("k", 1)
    else:
        d.enqueue(1)
    assert entered.wait(10)
    assert d.shutdown(timeout=0.05) is False  # the batch is still in dispatch
    assert state_of(d) == "stopping"
    release.set()
    assert d.shutdown(timeout=10)
    assert state_of(d) == "closed"
    stats = d.stats()
    assert (stats.batches, stats.retried, stats.failed) == (1, 0, 1)  # failed once, never retried
