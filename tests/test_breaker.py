"""The Breaker alone: when durable writes skip a spool, and for how long.

Its clock is injected: a spool's slow failure is a write that began
earlier on that clock. The breaker at work in a dispatcher, against a
real server that stops answering, is in test_server_spools."""

from __future__ import annotations

from typing import List

from batchdispatch._breaker import FIRST_COOLDOWN, MOST_COOLDOWN, SLOW, Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def failed_after(breaker: Breaker, clock: Clock, waited: float, kind: str = "unreachable") -> object:
    """A write that waited *waited* seconds, then failed."""
    started = clock.now
    clock.now += waited
    return breaker.failed(started, kind)


def test_a_write_that_fails_fast_never_opens_it() -> None:
    clock = Clock()
    breaker = Breaker(clock)
    for _ in range(100):
        assert failed_after(breaker, clock, SLOW / 2) is None
    assert not breaker.until
    assert not breaker.skips()


def test_a_slow_failure_opens_it_for_the_first_cooldown_then_the_spool_is_tried() -> None:
    clock = Clock()
    breaker = Breaker(clock)
    assert failed_after(breaker, clock, 5.0) == FIRST_COOLDOWN
    assert (breaker.kind, breaker.waited) == ("unreachable", 5.0)
    assert breaker.skips()
    assert breaker.skips()
    clock.now += FIRST_COOLDOWN - 0.01
    assert breaker.skips()
    clock.now += 0.02
    assert not breaker.skips()  # tried again
    assert breaker.stored() == 3  # closed: three writes were skipped
    assert not breaker.until
    assert breaker.stored() is None


def test_slow_failures_in_a_row_double_the_cooldown_up_to_the_most() -> None:
    clock = Clock()
    breaker = Breaker(clock)
    cooldowns: List[object] = []
    for _ in range(8):
        cooldowns.append(failed_after(breaker, clock, 1.0))
        clock.now = breaker.until  # the cooldown is over: the next write tries
        assert not breaker.skips()
    assert cooldowns == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0, 10.0]
    assert cooldowns[0] == FIRST_COOLDOWN
    assert cooldowns[-1] == MOST_COOLDOWN
    breaker.stored()
    assert failed_after(breaker, clock, 1.0) == FIRST_COOLDOWN  # a stored write started it over


def test_writes_that_shared_one_wait_open_it_once() -> None:
    # Four threads' appends went in one group commit and failed together: the
    # first to report opens the breaker; the others began before it opened.
    clock = Clock()
    breaker = Breaker(clock)
    started = clock.now
    clock.now += 5.0
    assert breaker.failed(started, "unreachable") == FIRST_COOLDOWN
    for _ in range(3):
        assert breaker.failed(started, "unreachable") is None
    clock.now = breaker.until
    assert failed_after(breaker, clock, 5.0) == 2 * FIRST_COOLDOWN  # not 16: opened once per wait
