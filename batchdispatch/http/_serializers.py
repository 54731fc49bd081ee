"""Serializers: what turns a batch into a request body, and what a serializer's failure means.

This module owns the :data:`Serializer` type, the default
:func:`json_serializer`, and :func:`_serialize`, which calls a sink's
serializer and turns any failure of it into a
:class:`~batchdispatch.exceptions.SerializationError` (final for the batch).
"""

from __future__ import annotations

from typing import Any, Callable, List

from .. import _json
from ..exceptions import SerializationError

#: A serializer turns a batch into the request body.
Serializer = Callable[[List[Any]], bytes]


def json_serializer(batch: List[Any]) -> bytes:
    """The default serializer: the batch as one compact JSON array, UTF-8.

    A value JSON cannot represent (a ``datetime``, a ``set``, ``NaN``, ...)
    raises :class:`~batchdispatch.exceptions.SerializationError` naming the
    item's index and the offending type, never the value itself.
    """
    try:
        return _json.dumps(batch).encode("utf-8")
    except (TypeError, ValueError) as exc:
        for index, item in enumerate(batch):
            try:
                _json.dumps(item)
            except (TypeError, ValueError) as item_exc:
                raise SerializationError(
                    f"item {index} of the batch is not JSON serializable: {_json.what(item_exc)}",
                    index=index,
                ) from item_exc
        raise SerializationError(f"the batch is not JSON serializable: {type(exc).__name__}") from exc


def _serialize(serializer: Serializer, batch: List[Any], safe: str) -> bytes:
    """The body *serializer* makes of *batch*; a SerializationError naming *safe* (the URL) if it fails."""
    try:
        body = serializer(batch)
    except SerializationError as exc:
        exc.url = safe
        raise
    except Exception as exc:  # any serializer failure is final for this batch
        raise SerializationError(
            f"the serializer failed on the batch for {safe}: {type(exc).__name__}", url=safe,
        ) from exc
    if not isinstance(body, (bytes, bytearray)):
        raise SerializationError(
            f"the serializer must return bytes, got {type(body).__name__}", url=safe,
        )
    return body
