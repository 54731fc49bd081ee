"""SqliteSpool under the faults of issue 12: items that cannot be encoded,
files removed while in use, signal handlers that append, locks held by
another process. Real files, real processes, real signals."""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
from typing import Any, Iterator, List

import pytest

from batchdispatch.exceptions import SpoolError
from batchdispatch.spool import SqliteSpool


@pytest.fixture
def path(tmp_path: Any) -> str:
    return str(tmp_path / "events.db")


@pytest.fixture
def spool(path: str) -> Iterator[SqliteSpool]:
    with SqliteSpool(path) as s:
        yield s


def stored(path: str) -> List[Any]:
    """Every item in the file, in row order, read with a plain sqlite3 connection."""
    conn = sqlite3.connect(path)
    try:
        return [json.loads(item) for (item,) in conn.execute("SELECT item FROM spool ORDER BY id")]
    finally:
        conn.close()


# -- 2. one item that cannot be encoded does not sink the others --------------------


def test_a_spill_with_one_unencodable_item_writes_the_100_good_ones(spool: SqliteSpool, path: str) -> None:
    pairs = [("k", {"n": n}) for n in range(100)]
    pairs.insert(57, ("k", {"at": datetime.datetime(2024, 5, 6, 7, 8, 9)}))
    with pytest.raises(SpoolError) as info:
        spool.put(pairs)
    exc = info.value
    assert exc.kind == "encode"
    assert exc.refused == [57]
    assert exc.rows is not None
    assert len(exc.rows) == 101
    assert exc.rows[57] == 0
    assert all(row > 0 for index, row in enumerate(exc.rows) if index != 57)
    assert exc.rows[:57] + exc.rows[58:] == sorted(exc.rows[:57] + exc.rows[58:])
    assert "item 57 is not JSON serializable: datetime" in str(exc)
    assert "1 of 101 items refused" in str(exc)
    assert "2024" not in str(exc)
    spool.close()
    assert stored(path) == [{"n": n} for n in range(100)]


def test_the_rows_of_a_partial_put_are_the_ones_claimed(spool: SqliteSpool) -> None:
    with pytest.raises(SpoolError) as info:
        spool.put([(None, "a"), (None, {1, 2}), (("t", 1), "b")])
    rows = info.value.rows
    assert rows is not None
    assert spool.claim(10) == [(rows[0], None, "a"), (rows[2], ("t", 1), "b")]


def test_a_refusal_names_the_first_three_by_index_and_type_and_counts_the_rest(spool: SqliteSpool) -> None:
    secret = "hunter2"
    pairs: List[Any] = [(None, n) for n in range(10)]
    for index in (1, 3, 4, 8, 9):
        pairs[index] = (None, {secret: {secret}})
    pairs[4] = (frozenset([secret]), 4)  # a key that cannot be encoded
    with pytest.raises(SpoolError) as info:
        spool.put(pairs)
    exc = info.value
    assert exc.refused == [1, 3, 4, 8, 9]
    text = str(exc)
    assert "5 of 10 items refused (the other 5 were written)" in text
    assert "item 1 is not JSON serializable: set; item 3 is not JSON serializable: set;" in text
    assert "the key of item 4 is not JSON serializable: frozenset; and 2 more" in text
    assert "item 8" not in text
    assert secret not in text
    assert spool.count() == 5


def test_a_put_of_only_unencodable_items_writes_nothing_and_says_so(spool: SqliteSpool, path: str) -> None:
    with pytest.raises(SpoolError, match="nothing was written") as info:
        spool.put([(None, object()), (None, float("inf"))])
    assert info.value.refused == [0, 1]
    assert info.value.rows == [0, 0]
    assert not os.path.exists(path)  # not even opened
    assert spool.count() == 0


def test_a_failing_dumps_refuses_only_its_items(path: str) -> None:
    def dumps(item: Any) -> str:
        if item == "bad":
            raise RuntimeError("secret detail")
        return json.dumps(item)

    with SqliteSpool(path, dumps=dumps, loads=json.loads) as spool:
        with pytest.raises(SpoolError, match="dumps failed on item 1: RuntimeError") as info:
            spool.put([(None, "good"), (None, "bad"), (None, "fine")], claim=True)
        assert "secret" not in str(info.value)
        assert isinstance(info.value.__cause__, RuntimeError)
        assert info.value.refused == [1]
        assert spool.count() == 2
    assert stored(path) == ["good", "fine"]  # claimed, then freed at close


def test_other_errors_carry_no_refused_or_rows(path: str) -> None:
    with SqliteSpool(path, timeout=0.1) as spool:
        spool.put([(None, 1)])
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            with pytest.raises(SpoolError) as info:
                spool.put([(None, 2), (None, object())])
        finally:
            other.close()
        assert info.value.kind == "locked"
        assert info.value.refused is None
        assert info.value.rows is None
        assert spool.count() == 1
