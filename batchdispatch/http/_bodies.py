"""From a batch to request bodies: under *max_body_bytes*, halved after a 413, each with its own id.

This module owns:

* :func:`_plan`: the bodies one batch is sent as. The batch is serialized
  once; if that is within *max_body_bytes* (or there is no limit) it is
  the one body, as before. Otherwise the JSON serializers' items
  are packed in order into as few bodies as fit, and another serializer's
  batch is halved until each part fits. An item larger than the limit on
  its own is set apart, never sent.
* :func:`_halves`: the two parts a body refused with 413 is sent as instead.
* :func:`_body_id`: the ``webhook-id`` of a body. A body of the whole batch
  carries the batch id (:func:`~batchdispatch.current_batch_id`); a part
  of it carries the batch id and its items' positions in the batch
  (``<id>.0-50``, ``<id>.3-4_7-9``), so different bodies have different ids
  and the same body always has the same one.
* :class:`_Resume`: after a call that delivered part of a batch, what the
  dispatcher retries is the rest, as a new batch with a new id; the sink
  remembers the old id and positions of those very items (by identity),
  so that a body sent again carries the id it had the first time and a
  receiver that did process it (the answer was lost) can tell.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple

from ._serializers import Serializer, _item_encoder, _serialize

#: A ``webhook-id`` suffix longer than this (a part with many gaps) is replaced by its digest.
MAX_SUFFIX = 40


@dataclasses.dataclass
class _Part:
    """Items of the batch to POST as one body: their indices in the call's batch, and the body if made.

    *indices* is a ``range`` for the whole batch (no list to build per batch), a list otherwise.
    """

    indices: Sequence[int]
    body: Optional[bytes] = None


def _check_max_body_bytes(value: object, name: str = "max_body_bytes") -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (bytes) or None, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1 byte, got {value!r}")
    return value


def _plan(
    serializer: Serializer, batch: List[Any], limit: Optional[int], safe: str,
) -> Tuple[List[_Part], List[Tuple[int, int]]]:
    """The parts *batch* is sent as, in order, and the (index, size) of each item too large alone.

    :raises SerializationError: if the batch cannot be serialized.
    """
    body = _serialize(serializer, batch, safe)
    if limit is None or len(body) <= limit:
        return [_Part(range(len(batch)), body)], []
    encode = _item_encoder(serializer)
    if encode is not None:
        return _pack_json(batch, limit, encode)
    parts: List[_Part] = []
    oversized: List[Tuple[int, int]] = []
    _halve(serializer, batch, range(len(batch)), body, limit, safe, parts, oversized)
    return parts, oversized


def _pack_json(
    batch: List[Any], limit: int, encode: Callable[[Any], bytes],
) -> Tuple[List[_Part], List[Tuple[int, int]]]:
    """Items packed in order into JSON arrays of at most *limit* bytes: ``[`` + items joined by ``,`` + ``]``.

    Byte for byte what :func:`json_serializer` makes of the same items,
    with its *encode*.
    """
    encoded = [encode(item) for item in batch]
    parts: List[_Part] = []
    oversized: List[Tuple[int, int]] = []
    current: List[int] = []
    size = 2  # the brackets
    for index, item in enumerate(encoded):
        if len(item) + 2 > limit:
            oversized.append((index, len(item) + 2))
            continue
        extra = len(item) + (1 if current else 0)  # and its comma
        if size + extra > limit:
            parts.append(_json_part(current, encoded))
            current, size, extra = [], 2, len(item)
        current.append(index)
        size += extra
    if current:
        parts.append(_json_part(current, encoded))
    return parts, oversized


def _json_part(indices: List[int], encoded: List[bytes]) -> _Part:
    return _Part(indices, b"[" + b",".join(encoded[i] for i in indices) + b"]")


def _halve(
    serializer: Serializer, batch: List[Any], indices: Sequence[int], body: bytes, limit: int, safe: str,
    parts: List[_Part], oversized: List[Tuple[int, int]],
) -> None:
    if len(body) <= limit:
        parts.append(_Part(indices, body))
        return
    if len(indices) == 1:
        oversized.append((indices[0], len(body)))
        return
    middle = len(indices) // 2
    for half in (indices[:middle], indices[middle:]):
        half_body = _serialize(serializer, [batch[i] for i in half], safe)
        _halve(serializer, batch, half, half_body, limit, safe, parts, oversized)


def _halves(part: _Part) -> Tuple[_Part, _Part]:
    """The two parts a body refused with 413 is sent as; their bodies are made when they are sent."""
    middle = len(part.indices) // 2
    return _Part(part.indices[:middle]), _Part(part.indices[middle:])


def _ranges(positions: Sequence[int]) -> str:
    """``0-3_5-6`` for positions 0, 1, 2 and 5: runs of consecutive positions, each end excluded."""
    runs: List[str] = []
    start = previous = positions[0]
    for position in positions[1:]:
        if position != previous + 1:
            runs.append(f"{start}-{previous + 1}")
            start = position
        previous = position
    runs.append(f"{start}-{previous + 1}")
    return "_".join(runs)


def _body_id(base: str, whole: int, positions: Sequence[int]) -> str:
    """The ``webhook-id`` of a body of the items at *positions* in the batch *base* (of *whole* items)."""
    if len(positions) == whole:  # positions are distinct and below whole: the whole batch
        return base
    suffix = _ranges(positions)
    if len(suffix) > MAX_SUFFIX:
        suffix = "h" + hashlib.sha256(suffix.encode("ascii")).hexdigest()[:24]
    return f"{base}.{suffix}"


@dataclasses.dataclass
class _Record:
    """Items a call failed to deliver, with the batch id and the positions they had in that batch."""

    base: str
    whole: int
    positions: List[int]
    items: List[Any]


class _Resume:
    """One record per slot (the HttpSink, or a WebhookSink's endpoint), taken by the slot's next call.

    A dispatcher sends a key's batches one at a time, a retry ahead of
    later items, so the next call of a slot is the retry, if any. The
    record is used only if that call's items are the very objects it
    kept; either way the call removes it, so a record is never older than
    one call, and at most one per slot holds items.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # guards _records; held for a dict operation only
        self._records: Dict[Hashable, _Record] = {}

    def take(self, slot: Hashable, batch: List[Any]) -> Optional[_Record]:
        """The record of *slot* if *batch* is its items, in order; the record is removed either way."""
        with self._lock:
            record = self._records.pop(slot, None)
        if record is None or len(record.items) != len(batch):
            return None
        if all(kept is item for kept, item in zip(record.items, batch)):
            return record
        return None

    def keep(self, slot: Hashable, record: _Record) -> None:
        with self._lock:
            self._records[slot] = record

    def forget(self, slot: Hashable) -> None:
        with self._lock:
            self._records.pop(slot, None)
