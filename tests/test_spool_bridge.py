"""The engine's spool bridge against a spool that is not SqliteSpool.

MemorySpool (tests/spools.py) implements the Spool protocol and nothing
more, so these tests show that the engine talks to its spool only
through the protocol: spills, replay, durable appends and their acks,
partial writes and faults.
"""

from __future__ import annotations

import threading
from typing import Any, List

import pytest

from batchdispatch import BackgroundDispatcher, SpoolError
from batchdispatch.spool import Spool

from .conftest import KeyedRecorder, Recorder, poke
from .spools import MemorySpool, MemoryStore


class Held:
    """A dispatch function that records its batches, each once *release* is set;
    *entered* is set when the first call begins."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.recorder = Recorder()

    def __call__(self, batch: List[Any]) -> None:
        self.entered.set()
        self.release.wait(10)
        self.recorder(batch)


def free_pairs(store: MemoryStore) -> int:
    return sum(1 for stored in store.pairs.values() if stored.owner is None)


def test_memory_spool_is_a_spool() -> None:
    assert isinstance(MemorySpool(), Spool)


def test_items_over_the_queue_limit_are_spilled_and_replayed(make: Any) -> None:
    store = MemoryStore()
    held = Held()
    d = make(held, delay=0.01, max_batch_size=1, max_queue_size=2, overflow="spill", spool=MemorySpool(store))
    for n in range(20):
        assert d.enqueue(n)  # none refused: what does not fit goes to the spool
    held.release.set()
    assert d.flush(timeout=10)
    assert sorted(held.recorder.items) == list(range(20))
    stats = d.stats()
    assert stats.spilled > 0
    assert stats.replayed == stats.spilled
    assert stats.dropped == 0
    assert store.pairs == {}  # every replayed row was acked


def test_a_durable_item_is_in_the_spool_before_enqueue_returns_and_acked_once_delivered(make: Any) -> None:
    store = MemoryStore()
    held = Held()
    d = make(held, delay=0.01, spool=MemorySpool(store, durable=True))
    d.enqueue("a")
    assert len(store.pairs) == 1  # appended, held by this owner
    assert free_pairs(store) == 0
    assert held.entered.wait(10)
    held.release.set()
    assert d.flush(timeout=10)
    assert held.recorder.items == ["a"]
    assert store.pairs == {}


def test_rows_left_by_another_owner_are_delivered_first_under_their_keys(make_keyed: Any) -> None:
    store = MemoryStore()
    with MemorySpool(store) as earlier:
        earlier.put([("k", "old-1"), ("k", "old-2"), ("other", "old-3")])
    recorder = KeyedRecorder()
    d = make_keyed(recorder, delay=0.01, spool=MemorySpool(store))
    d.enqueue("k", "new")
    assert d.flush(timeout=10)
    assert recorder.items("k") == ["old-1", "old-2", "new"]
    assert recorder.items("other") == ["old-3"]
    assert d.stats().replayed == 3
    assert store.pairs == {}


def test_an_item_the_spool_cannot_encode_is_dropped_and_the_rest_spilled(make: Any) -> None:
    held = Held()
    d = make(held, delay=0.01, max_batch_size=1, max_queue_size=1, overflow="spill", spool=MemorySpool())
    d.enqueue("first")
    assert held.entered.wait(10)  # taken, and held in dispatch
    assert d.enqueue("queued")
    accepted = [d.enqueue(item) for item in ("fits", {1, 2}, "also fits")]
    assert accepted == [True, False, True]  # a set is not JSON: refused, counted
    held.release.set()
    assert d.flush(timeout=10)
    assert sorted(held.recorder.items) == sorted(["first", "queued", "fits", "also fits"])
    stats = d.stats()
    assert stats.dropped_by_reason == {"queue_full": 1}
    assert stats.spool_faults == {"encode": 1}


class BrokenSpool(MemorySpool):
    """A spool whose writes fail as if its disk were full."""

    def put(self, *args: Any, **kwargs: Any) -> List[int]:
        raise SpoolError("spool memory: no room left", path="memory", kind="full")


def test_a_failing_spool_is_counted_and_the_dispatcher_goes_on(make: Any, caplog: Any) -> None:
    held = Held()
    d = make(held, delay=0.01, max_batch_size=1, max_queue_size=1, overflow="spill", spool=BrokenSpool())
    d.enqueue("first")
    assert held.entered.wait(10)  # taken, and held in dispatch
    assert d.enqueue("queued")
    assert d.enqueue("over") is False  # could not be spilled: dropped, and enqueue says so
    held.release.set()
    assert d.flush(timeout=10)
    assert held.recorder.items == ["first", "queued"]
    stats = d.stats()
    assert stats.spool_faults == {"full": 1}
    assert stats.dropped_by_reason == {"queue_full": 1}
    assert "no room left" in caplog.text  # the spool's own words, not a path it does not have


# -- polling a spool shared by a fleet --------------------------------------------------------


def test_a_spool_with_a_poll_interval_is_claimed_again_while_the_dispatcher_idles(clock: Any) -> None:
    store = MemoryStore()
    spool = MemorySpool(store)
    spool.poll_interval = 5.0  # type: ignore[attr-defined]
    other = MemorySpool(store)  # another host of the fleet
    recorder = Recorder()
    d = BackgroundDispatcher(recorder, delay=0.01, spool=spool, clock=clock)
    try:
        d.enqueue("first")
        clock.advance(1)
        poke(d, clock)
        assert d.flush(timeout=10)
        assert recorder.items == ["first"]
        other.put([(None, "freed by a host that died")])
        clock.advance(2)  # before the interval: not looked at
        poke(d, clock)
        assert recorder.items == ["first"]
        clock.advance(4)  # past it: claimed and delivered, with no flush
        poke(d, clock)
        assert recorder.wait_batches(2)
        assert recorder.items == ["first", "freed by a host that died"]
    finally:
        d.shutdown(timeout=10)
        other.close()
        spool.close()


def test_a_bad_poll_interval_is_refused_naming_it() -> None:
    spool = MemorySpool()
    spool.poll_interval = -1  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"spool\.poll_interval"):
        BackgroundDispatcher(print, spool=spool)
