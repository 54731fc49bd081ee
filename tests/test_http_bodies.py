"""batchdispatch.http._bodies without a server: how a batch is cut into bodies, and each body's id.

Properties over generated batches and limits: every item that fits is in
exactly one body, in order; every body is within the limit and is what
the serializer makes of its items; an item is set apart only if it is too
large alone. The same over real HTTP is in ``tests/with_server/test_http_bodies.py``.
"""

from __future__ import annotations

import json
from typing import Any, List

from hypothesis import given, settings
from hypothesis import strategies as st

from batchdispatch.http import json_serializer
from batchdispatch.http._bodies import _body_id, _plan, _Record, _Resume

items = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def ndjson(batch: List[Any]) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in batch)


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(items, min_size=1, max_size=40), limit=st.integers(min_value=1, max_value=400))
def test_json_bodies_cover_the_batch_in_order_within_the_limit(batch: List[Any], limit: int) -> None:
    parts, oversized = _plan(json_serializer, batch, limit, "http://x/")
    placed = [i for part in parts for i in part.indices]
    apart = [index for index, _ in oversized]
    assert sorted(placed + apart) == list(range(len(batch)))
    assert placed == sorted(placed)  # in order
    for part in parts:
        assert part.body is not None
        assert len(part.body) <= limit
        assert part.body == json_serializer([batch[i] for i in part.indices])
    for index, size in oversized:
        assert size == len(json_serializer([batch[index]])) > limit
    if len(json_serializer(batch)) > limit:
        # Greedy: a body could not have taken the next placed item too.
        for part, following in zip(parts, parts[1:]):
            bigger = [batch[i] for i in part.indices] + [batch[following.indices[0]]]
            assert len(json_serializer(bigger)) > limit


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(items, min_size=1, max_size=30), limit=st.integers(min_value=1, max_value=300))
def test_another_serializer_is_halved_in_order_within_the_limit(batch: List[Any], limit: int) -> None:
    parts, oversized = _plan(ndjson, batch, limit, "http://x/")
    placed = [i for part in parts for i in part.indices]
    assert sorted(placed + [index for index, _ in oversized]) == list(range(len(batch)))
    assert placed == sorted(placed)
    if len(ndjson(batch)) > limit:
        assert all(part.body is not None and len(part.body) <= limit for part in parts)
    assert all(size > limit for _, size in oversized)


def test_ids_the_whole_batch_keeps_the_batch_id_and_each_part_has_its_own() -> None:
    assert _body_id("abc", 6, range(6)) == "abc"
    assert _body_id("abc", 6, [0, 1]) == "abc.0-2"
    assert _body_id("abc", 6, [2, 3, 5]) == "abc.2-4_5-6"
    many = list(range(0, 200, 2))  # a part with many gaps: a digest, still one per set of positions
    assert _body_id("abc", 200, many) == _body_id("abc", 200, list(many))
    assert _body_id("abc", 200, many) != _body_id("abc", 200, many[:-1])
    assert len(_body_id("abc", 200, many)) < 40


@given(st.lists(st.lists(st.integers(0, 30), min_size=1, max_size=10, unique=True).map(sorted), max_size=20))
def test_ids_differ_for_different_parts(parts: List[List[int]]) -> None:
    ids = {tuple(p): _body_id("b", 31, p) for p in parts}
    assert len(set(ids.values())) == len(ids)


def test_a_resume_record_is_used_only_by_the_very_items_and_only_once() -> None:
    a, b = {"n": 1}, {"n": 2}
    resume = _Resume()
    resume.keep("ep", _Record("base", 4, [2, 3], [a, b]))
    assert resume.take("other", [a, b]) is None  # another slot
    assert resume.take("ep", [dict(a), dict(b)]) is None  # equal is not enough: the same objects
    assert resume.take("ep", [a, b]) is None  # removed by the call before, which did not match
    resume.keep("ep", _Record("base", 4, [2, 3], [a, b]))
    record = resume.take("ep", [a, b])
    assert record is not None
    assert (record.base, record.positions) == ("base", [2, 3])
    assert resume.take("ep", [a, b]) is None
