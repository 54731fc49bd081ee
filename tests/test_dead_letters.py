"""Dead letters: with a spool, what a dispatcher gives up is kept, not deleted.

Each test runs a real dispatcher on a real SqliteSpool file and reads the
outcome back through the spool's public operations (and, across a
restart, through a second dispatcher on the same file).
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any, List

import pytest

from batchdispatch import BackgroundDispatcher, KeyedDispatcher, PartialFailure, RetryPolicy
from batchdispatch.events import ItemsExhausted
from batchdispatch.spool import SqliteSpool

from .conftest import Recorder


class Refused(Exception):
    """What a receiver's 400 looks like: trying again cannot help."""

    retryable = False


def refuse(batch: List[Any]) -> None:
    raise Refused(f"400 Bad Request: {len(batch)} items")


def exhausted_events(dispatcher: Any) -> List[ItemsExhausted]:
    seen: List[ItemsExhausted] = []
    dispatcher.on("items_exhausted", seen.append)
    return seen


@pytest.mark.parametrize("durable", [False, True])
def test_items_refused_for_good_become_dead_letters_and_are_not_replayed(
    make: Any, spools: Any, durable: bool
) -> None:
    spool = spools(durable=durable)
    d = make(refuse, delay=60, spool=spool)
    seen = exhausted_events(d)
    for n in range(3):
        d.enqueue({"n": n})
    assert d.flush(timeout=10)
    stats = d.stats()
    assert (stats.failed, stats.dead_lettered, stats.pending) == (3, 3, 0)
    items = ({"n": 0}, {"n": 1}, {"n": 2})
    assert [(e.items, e.attempts, e.dead_lettered) for e in seen] == [(items, 1, True)]
    d.shutdown(timeout=10)
    letters = spool.dead_letters()
    assert [letter.item for letter in letters] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert {(letter.key, letter.attempts, letter.error) for letter in letters} == {
        (None, 1, "Refused: 400 Bad Request: 3 items"),
    }
    assert spool.count() == 0  # nothing waits: the next start replays nothing
    recorder = Recorder()
    spool = spools()
    again = make(recorder, delay=60, spool=spool)
    again.enqueue("new")
    assert again.flush(timeout=10)
    assert recorder.items == ["new"]
    assert spool.count(dead=True) == 3


def test_retries_run_out_into_the_dead_letters_unless_spill_exhausted_parks_them(
    make: Any, spools: Any
) -> None:
    def unavailable(batch: List[Any]) -> None:
        raise ConnectionError("503 Service Unavailable")

    policy = RetryPolicy(max_attempts=3, backoff=0.01, jitter=False)
    spool = spools()
    d = make(unavailable, delay=60, spool=spool, retry=policy)
    d.enqueue("a")
    assert d.flush(timeout=10)
    assert [(letter.item, letter.attempts) for letter in spool.dead_letters()] == [("a", 3)]
    parked = make(unavailable, delay=60, spool=spool, retry=policy, spill_exhausted=True, name="parks")
    parked.enqueue("b")
    assert parked.flush(timeout=10)
    assert parked.stats().dead_lettered == 0
    assert [letter.item for letter in spool.dead_letters()] == ["a"]  # "b" waits for the next start
    assert spool.count() == 1


def test_dead_letters_false_deletes_what_is_given_up_as_before(make: Any, spools: Any) -> None:
    spool = spools(durable=True)
    d = make(refuse, delay=60, spool=spool, dead_letters=False)
    seen = exhausted_events(d)
    d.enqueue("x")
    assert d.flush(timeout=10)
    assert (d.stats().failed, d.stats().dead_lettered) == (1, 0)
    assert [e.dead_lettered for e in seen] == [False]
    d.shutdown(timeout=10)
    assert (spool.count(), spool.count(dead=True)) == (0, 0)


def test_replayed_rows_given_up_move_to_the_dead_letters(make: Any, spools: Any) -> None:
    spool = spools()
    spool.put([("k", "old-1"), ("k", "old-2")])
    d = make(refuse, delay=60, spool=spool)
    assert d.flush(timeout=10)  # claims the backlog and tries it
    assert d.stats().replayed == 2
    assert [letter.item for letter in spool.dead_letters()] == ["old-1", "old-2"]
    assert spool.count() == 0


def test_a_partial_failure_buries_only_the_failed_items_with_their_keys(make_keyed: Any, spools: Any) -> None:
    def deliver(key: str, batch: List[Any]) -> None:
        raise PartialFailure([item for item in batch if item % 2], Refused("odd ones refused"))

    spool = spools(durable=True)
    d = make_keyed(deliver, delay=60, spool=spool)
    for n in range(4):
        d.enqueue("tenant-1", n)
    assert d.flush(timeout=10)
    stats = d.stats()
    assert (stats.dispatched, stats.failed, stats.dead_lettered) == (2, 2, 2)
    d.shutdown(timeout=10)
    letters = [(letter.key, letter.item) for letter in spool.dead_letters()]
    assert letters == [("tenant-1", 1), ("tenant-1", 3)]
    assert spool.count() == 0  # the delivered ones acked, the failed ones moved


def test_requeued_dead_letters_are_delivered_by_the_next_start(make: Any, spools: Any) -> None:
    spool = spools()
    d = make(refuse, delay=60, spool=spool)
    d.enqueue("fixed later")
    assert d.flush(timeout=10)
    d.shutdown(timeout=10)
    assert spool.requeue() == 1
    recorder = Recorder()
    spool = spools()
    d = make(recorder, delay=60, spool=spool)
    assert d.flush(timeout=10)
    assert recorder.items == ["fixed later"]
    assert (spool.count(), spool.count(dead=True)) == (0, 0)


def test_without_a_spool_nothing_changes(make: Any) -> None:
    d = make(refuse, delay=60)
    seen = exhausted_events(d)
    d.enqueue("x")
    assert d.flush(timeout=10)
    assert (d.stats().failed, d.stats().dead_lettered) == (1, 0)
    assert [e.dead_lettered for e in seen] == [False]


def test_dead_letters_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="dead_letters must be a bool"):
        BackgroundDispatcher(print, dead_letters="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="dead_letters must be a bool"):
        KeyedDispatcher(print, dead_letters=None)  # type: ignore[arg-type]


def test_a_spool_that_cannot_keep_them_counts_a_fault_and_the_rows_stay_for_a_later_start(
    make: Any, path: str
) -> None:
    entered, release = threading.Event(), threading.Event()

    def blocked_refuse(batch: List[Any]) -> None:
        entered.set()
        release.wait(10)
        refuse(batch)

    with SqliteSpool(path, durable=True, timeout=0.2) as spool:
        d = make(blocked_refuse, delay=60, spool=spool)
        d.enqueue("x")
        d.flush(timeout=0)
        assert entered.wait(10)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the file: the burial fails as "locked"
        try:
            release.set()
            assert d.flush(timeout=10)
        finally:
            other.execute("ROLLBACK")
            other.close()
        stats = d.stats()
        assert (stats.failed, stats.dead_lettered) == (1, 0)
        assert stats.spool_faults.get("locked", 0) >= 1  # the burial (a flush's claim may fail too)
        d.shutdown(timeout=10)
    with SqliteSpool(path) as spool:
        # The appended record stayed in the log: the next start has the item again.
        assert [item for _, _, item in spool.claim(10)] == ["x"]


# -- the spool's own operations on dead letters ---------------------------------------------


def test_purge_deletes_dead_letters_by_key_and_age(path: str) -> None:
    with SqliteSpool(path) as spool:
        spool.bury([(0, "a", 1), (0, "b", 2), (0, "a", 3)], error=Refused("no"), attempts=1)
        assert [letter.item for letter in spool.dead_letters(key="a", limit=1)] == [1]
        assert spool.purge(older_than=3600) == 0  # all given up just now
        assert spool.purge(key="a") == 2
        assert [letter.item for letter in spool.dead_letters()] == [2]
        assert spool.purge(older_than=0) == 1
        assert spool.count(dead=True) == 0
        with pytest.raises(ValueError, match="older_than"):
            spool.purge(older_than=-1)
        with pytest.raises(ValueError, match="limit"):
            spool.dead_letters(limit=0)


LAYOUT_2 = (
    "CREATE TABLE spool (id INTEGER PRIMARY KEY, key TEXT NOT NULL, item NOT NULL, owner TEXT)",
    "CREATE INDEX spool_free ON spool (id) WHERE owner IS NULL",
    "CREATE TABLE imported (token TEXT PRIMARY KEY)",
    "PRAGMA application_id = 1650750320",
    "PRAGMA user_version = 2",
    "INSERT INTO spool (key, item) VALUES ('\"k\"', '\"from layout 2\"')",
)


def test_a_file_of_layout_2_is_brought_up_to_date_and_keeps_its_rows(path: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in LAYOUT_2:
        conn.execute(statement)
    conn.close()
    with SqliteSpool(path) as spool:
        assert spool.claim(10)[0][1:] == ("k", "from layout 2")
        spool.bury([(0, "k", "dead")], error=Refused("no"), attempts=1)
        assert [letter.item for letter in spool.dead_letters()] == ["dead"]
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    finally:
        conn.close()
