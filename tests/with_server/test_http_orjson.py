"""orjson_serializer (the extra ``orjson``): json_serializer's JSON where both encode, over real HTTP.

Where the two differ (NaN, datetimes, the form of a float), the tests
say what orjson_serializer sends, as its docstring promises; a batch
orjson refuses goes through json_serializer, errors and all.
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any, Callable, Dict, List

import pytest

from batchdispatch.exceptions import SerializationError
from batchdispatch.http import HttpSink, json_serializer, orjson_serializer
from batchdispatch.testing import Receiver

from ..conftest import run_python

pytest.importorskip("orjson")

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def events(count: int) -> List[Dict[str, Any]]:
    return [{"event": "page_view", "user": f"user-{n}", "n": n, "ok": n % 2 == 0, "none": None,
             "properties": {"path": "/view", "tags": ["a", "é", "\u2028"], "at": 1700000000.25 + n}}
            for n in range(count)]


def test_it_writes_what_json_serializer_writes_for_plain_events() -> None:
    batch = events(50)
    assert orjson_serializer(batch) == json_serializer(batch)


def test_where_they_differ_it_is_more_lenient() -> None:
    when = datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.timezone.utc)
    assert json.loads(orjson_serializer([{"x": math.nan, "at": when, "big": 1e16}])) == [
        {"x": None, "at": "2024-05-01T12:30:00+00:00", "big": 1e16}
    ]


@pytest.mark.parametrize("item", [{"big": 2**70}, {1: "int key"}])
def test_what_orjson_refuses_is_encoded_by_json_serializer(item: Any) -> None:
    assert orjson_serializer([{"ok": 1}, item]) == json_serializer([{"ok": 1}, item])


def test_what_neither_encodes_fails_as_json_serializer_fails() -> None:
    with pytest.raises(SerializationError, match="item 1 of the batch is not JSON serializable: set"):
        orjson_serializer([{"ok": 1}, {"at": {1, 2}}, 2**70])


def test_a_signed_sink_sends_what_it_signed(make_receiver: Callable[..., Receiver]) -> None:
    receiver = make_receiver(secret=SECRET)
    batch = [*events(20), {"at": datetime.date(2024, 5, 1)}]
    with HttpSink(receiver.url, secret=SECRET, serializer=orjson_serializer) as sink:
        sink(batch)
    (request,) = receiver.requests
    assert request.verified is True
    assert request.body == orjson_serializer(batch)
    assert request.items[-1] == {"at": "2024-05-01"}


def test_bodies_under_max_body_bytes_are_packed_as_it_encodes_them(receiver: Receiver) -> None:
    batch = events(40)
    with HttpSink(receiver.url, serializer=orjson_serializer, max_body_bytes=1_000) as sink:
        sink(batch)
        assert sink.stats().chunked == 1
    requests = receiver.requests
    assert len(requests) > 1
    assert all(len(r.body) <= 1_000 for r in requests)
    assert [r.body for r in requests] == [orjson_serializer(r.items) for r in requests]
    assert receiver.items == batch


def test_without_orjson_it_says_which_extra_to_install() -> None:
    # A fresh interpreter where importing orjson fails, as where the extra is not installed.
    result = run_python("""
        import sys
        sys.modules["orjson"] = None  # import orjson raises ImportError
        from batchdispatch.http import orjson_serializer
        try:
            orjson_serializer([1])
        except ImportError as exc:
            print("ImportError:", exc)
        else:
            print("no error")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ImportError:")
    assert "pip install orjson" in result.stdout
