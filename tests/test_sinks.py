"""What the sinks share (batchdispatch/sinks/_base.py): items as JSON, failures per item, URLs, targets.

The sinks themselves are tested against their servers in tests/with_server/.
"""

from __future__ import annotations

import datetime
import decimal
import json
from typing import Any, List

import pytest

from batchdispatch import PartialFailure
from batchdispatch.exceptions import DeliveryError, SerializationError
from batchdispatch.sinks._base import NO_KEY, Failures, _encode, check_url, json_item, resolve, safe_url


@pytest.mark.parametrize(
    "value",
    [
        {"event": "page_view", "user": 1},
        "é 🎉 \u2028",
        [1, 2.5, -0.0, 1e-7, 10**30, None, True, False],
        {"nested": {"list": [{"a": []}, {}]}, "2": "key order kept", "1": 1},
        {1: "int keys", 2.5: "float keys", None: "null key", False: "bool key"},
        "",
    ],
)
def test_items_encode_as_json_dumps_would(value: Any) -> None:
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    assert _encode(value) == expected
    assert json_item(value, 0, "where") == expected.encode("utf-8")


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (datetime.date(2024, 1, 1), "date"),
        ({"amount": decimal.Decimal("1.5")}, "Decimal"),
        ([{1, 2}], "set"),
        (float("nan"), "Out of range float values are not JSON compliant"),
        ({(1, 2): "tuple key"}, "keys must be str, int, float, bool or None"),
        ("\ud800", "a str with a lone surrogate"),
    ],
)
def test_an_item_json_cannot_hold_is_named_by_index_and_type(value: Any, what: str) -> None:
    with pytest.raises(SerializationError) as caught:
        json_item(value, 7, "redis://h:6379/0")
    assert str(caught.value).startswith(f"item 7 of the batch is not JSON serializable: {what}")
    assert caught.value.index == 7
    assert caught.value.url == "redis://h:6379/0"
    assert caught.value.retryable is False


def test_a_cycle_is_refused_and_the_encoder_still_works() -> None:
    cycle: List[Any] = []
    cycle.append(cycle)
    with pytest.raises(SerializationError, match="nested too deep"):
        json_item(cycle, 0, "w")
    shared = {"a": 1}
    assert json_item([shared, shared], 1, "w") == b'[{"a":1},{"a":1}]'  # repeated, not a cycle


def test_failures_raise_nothing_when_none_failed() -> None:
    Failures().raise_for([1, 2])


def test_a_batch_failed_whole_for_one_reason_raises_that_error() -> None:
    failures = Failures()
    error = DeliveryError("lost", retryable=True)
    failures.add_all([0, 1, 2], error)
    with pytest.raises(DeliveryError) as caught:
        failures.raise_for(["a", "b", "c"])
    assert caught.value is error


def test_some_items_failed_is_a_partial_failure_in_batch_order_retryable_if_any_may_pass() -> None:
    failures = Failures()
    final = SerializationError("item 2 ...", index=2)
    lost = DeliveryError("lost", retryable=True)
    failures.add(2, final)
    failures.add_all([3, 1], lost)
    failures.add(3, final)  # the first error of an item stays
    with pytest.raises(PartialFailure) as caught:
        failures.raise_for(["a", "b", "c", "d", "e"])
    assert caught.value.failed_items == ["b", "c", "d"]
    assert caught.value.cause is lost
    assert caught.value.retryable

    only_final = Failures()
    only_final.add(0, final)
    with pytest.raises(PartialFailure) as caught:
        only_final.raise_for(["a", "b"])
    assert caught.value.failed_items == ["a"]
    assert caught.value.retryable is False


def test_urls_are_shown_without_their_secrets() -> None:
    assert safe_url("redis://user:pw@cache.internal:6380/2?password=x#f") == "redis://cache.internal:6380/2"
    assert safe_url("amqp://guest:guest@[::1]:5672/%2F") == "amqp://[::1]:5672/%2F"
    assert safe_url("redis://h:99999/0") == "<invalid url>"
    with pytest.raises(ValueError, match="must be a URL starting with redis://") as caught:
        check_url("http://u:pw@h/", ("redis",), "client")
    assert "pw" not in str(caught.value)


def test_a_target_is_a_name_or_a_callable_of_the_key() -> None:
    assert resolve("events", NO_KEY, "stream", "w") == "events"
    assert resolve("events", "acme", "stream", "w") == "events"
    assert resolve(lambda key: f"events:{key}", "acme", "stream", "w") == "events:acme"
    with pytest.raises(DeliveryError, match="stream is a callable of the key") as caught:
        resolve(lambda key: "x", NO_KEY, "stream", "w")
    assert caught.value.retryable is False
    with pytest.raises(DeliveryError, match="must return a non-empty str, got ''"):
        resolve(lambda key: "", "acme", "stream", "w")
