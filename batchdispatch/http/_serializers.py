"""Serializers: what turns a batch into a request body, and what a serializer's failure means.

This module owns the :data:`Serializer` type, the default
:func:`json_serializer`, :func:`orjson_serializer` (the extra ``orjson``),
how either encodes one item (:func:`_item_encoder`, for bodies packed
under *max_body_bytes*), and :func:`_serialize`, which calls a sink's
serializer and turns any failure of it into a
:class:`~batchdispatch.exceptions.SerializationError` (final for the batch).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, List, Optional

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


@functools.cache
def _orjson() -> Any:
    """The orjson module; an ImportError that names the extra if it is not installed."""
    try:
        import orjson
    except ImportError:
        raise ImportError(
            "orjson_serializer needs orjson: pip install orjson (batchdispatch's extra orjson)",
        ) from None
    return orjson


def orjson_serializer(batch: List[Any]) -> bytes:
    """The batch as one compact JSON array, encoded by `orjson <https://github.com/ijl/orjson>`_.

    .. code-block:: python

        from batchdispatch.http import HttpSink, orjson_serializer  # needs the orjson extra

        sink = HttpSink("https://events.example.com/ingest", serializer=orjson_serializer)

    About ten times faster than :func:`json_serializer` on small events (the
    bench's ``http`` section measures the worker's CPU per event with
    each), and the same JSON for str, int, float, bool, None, list, tuple
    and dict of str keys, except that floats are written in orjson's
    shortest form (``1e16``, where :mod:`json` writes ``1e+16``). Where the
    two differ, orjson is more lenient: NaN and infinities become
    ``null`` (json_serializer refuses them), and ``datetime``, ``date``,
    ``time``, ``UUID``, enums and dataclasses are encoded (RFC 3339 for
    dates) instead of failing. A batch orjson refuses (an int beyond 64
    bits, a dict key that is not a str) is encoded by json_serializer
    instead, which encodes it or raises its
    :class:`~batchdispatch.exceptions.SerializationError`. A signature
    covers the bytes sent, whichever encoder made them.

    :raises ImportError: if orjson is not installed.

    .. versionadded:: 0.2.0
    """
    orjson = _orjson()
    try:
        return orjson.dumps(batch)  # type: ignore[no-any-return]
    except TypeError:  # orjson.JSONEncodeError
        return json_serializer(batch)


def _item_encoder(serializer: Serializer) -> Optional[Callable[[Any], bytes]]:
    """How *serializer* encodes one item of its array, if it is one of ours (None: not known).

    Packing items into bodies under *max_body_bytes* joins them with commas:
    with json_serializer the result is byte for byte what it makes of
    those items.
    """
    if serializer is json_serializer:
        return _json_item
    if serializer is orjson_serializer:
        return _orjson_item
    return None


def _json_item(item: Any) -> bytes:
    return _json.dumps(item).encode("utf-8")


def _orjson_item(item: Any) -> bytes:
    try:
        return _orjson().dumps(item)  # type: ignore[no-any-return]
    except TypeError:
        return _json_item(item)


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
