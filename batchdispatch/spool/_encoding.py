"""Encoding: how keys and items become the data a spool stores, and come back.

Owns the *dumps*/*loads* pair (compact JSON by default), the refusal of
what cannot be encoded (named by place and type, never by value), and
the keys' JSON form, in which tuples come back as tuples. Nothing here is
ever unpickled: reading a spool does not run code.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Hashable, Iterable, List, Optional, Tuple, Union

from .. import _json
from ..exceptions import SpoolError

#: What a *dumps* callable returns and a *loads* callable receives.
Data = Union[bytes, str]

Pair = Tuple[Hashable, Any]
Row = Tuple[int, Hashable, Any]


class Unencodable(Exception):
    """An item or key that cannot be encoded; *reason* names its place and a type, never its value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Codec:
    """Keys and items to stored data and back, with JSON or the *dumps*/*loads* given."""

    __slots__ = ("_dumps", "_loads")

    def __init__(
        self, dumps: Optional[Callable[[Any], Data]], loads: Optional[Callable[[Data], Any]],
    ) -> None:
        if (dumps is None) != (loads is None):
            missing = "loads" if loads is None else "dumps"
            raise TypeError(f"dumps and loads go together: {missing} is missing")
        for label, fn in (("dumps", dumps), ("loads", loads)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{label} must be callable or None, got {type(fn).__name__}")
        self._dumps = dumps
        self._loads = loads

    @property
    def json(self) -> bool:
        """Whether items are stored as JSON text (no *dumps* given)."""
        return self._dumps is None

    def encode(self, key: Hashable, item: Any, where: str) -> Tuple[str, Data]:
        """*key* and *item* as stored; raises Unencodable naming *where* and a type, never a value."""
        try:
            encoded_key = "null" if key is None else _json.dumps(key)  # None: every BackgroundDispatcher's
        except (TypeError, ValueError) as exc:
            raise Unencodable(f"the key of {where} is not JSON serializable: {_json.what(exc)}") from exc
        if self._dumps is None:
            try:
                return encoded_key, _json.dumps(item)
            except (TypeError, ValueError) as exc:
                raise Unencodable(f"{where} is not JSON serializable: {_json.what(exc)}") from exc
        try:
            data = self._dumps(item)
        except Exception as exc:
            raise Unencodable(f"dumps failed on {where}: {type(exc).__name__}") from exc
        if not isinstance(data, (bytes, str)):
            raise Unencodable(f"dumps must return bytes or str, got {type(data).__name__}")
        return encoded_key, data

    def decode(self, data: Data) -> Any:
        if self._loads is None:
            return json.loads(data)
        return self._loads(data)


def decode_key(text: str) -> Hashable:
    return _hashable(json.loads(text))


def _hashable(value: Any) -> Hashable:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    result: Hashable = value
    return result


#: How many refused items an "encode" error names; the rest are counted.
REFUSALS_SHOWN = 3


class Encoded:
    """The pairs of a ``put``, encoded: the rows to write, and those refused, by index.

    Every spool's ``put`` writes :attr:`written` and then, if something was
    refused, raises :meth:`refusal` (the contract: the others are written).
    """

    def __init__(self, codec: Codec, pairs: Iterable[Pair]) -> None:
        self.rows: List[Optional[Tuple[str, Data]]] = []
        self.refused: List[Tuple[int, Unencodable]] = []
        for index, (key, item) in enumerate(pairs):
            try:
                self.rows.append(codec.encode(key, item, f"item {index}"))
            except Unencodable as exc:
                self.rows.append(None)
                self.refused.append((index, exc))

    @property
    def cause(self) -> Optional[BaseException]:
        """The serializer's error for the first refused item (raise the refusal from it)."""
        return self.refused[0][1].__cause__ if self.refused else None

    @property
    def written(self) -> List[Tuple[str, Data]]:
        """The rows that were encoded, in input order."""
        return [row for row in self.rows if row is not None]

    def refusal(self, path: str, ids: List[int]) -> SpoolError:
        """The ``"encode"`` error, once the others were written with *ids*: it names the
        refused items by index and type (never by value), as ``refused`` and ``rows`` do."""
        written = iter(ids)
        rows = [0 if row is None else next(written) for row in self.rows]
        return refusal(path, self.refused, rows)


def refusal(path: str, refused: List[Tuple[int, Unencodable]], rows: List[int]) -> SpoolError:
    """An ``"encode"`` error for the *refused* (index, reason) of a write whose *rows* are aligned."""
    shown = "; ".join(exc.reason for _, exc in refused[:REFUSALS_SHOWN])
    more = len(refused) - REFUSALS_SHOWN
    if more > 0:
        shown += f"; and {more} more"
    written = len(rows) - len(refused)
    outcome = f"the other {written} were written" if written else "nothing was written"
    return SpoolError(
        f"spool {path}: {len(refused)} of {len(rows)} items refused ({outcome}): {shown}",
        path=path, kind="encode", refused=[index for index, _ in refused], rows=rows,
    )


#: The default of the dead-letter operations' *key* filter: every key.
ANY_KEY: Any = object()


def key_filter(codec: Codec, key: Any) -> Optional[str]:
    """*key* as the spool stores it, to select by; None for :data:`ANY_KEY`."""
    if key is ANY_KEY:
        return None
    try:
        encoded, _ = codec.encode(key, None, "the key filter")
    except Unencodable as exc:
        raise TypeError(f"key must be a key the spool can store: {exc.reason}") from None
    return encoded


def check_limit(limit: Any, optional: bool = False) -> None:
    """A *limit* of ``claim`` (an int of at least 1) or of a listing (None, too)."""
    if optional and limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        what = "None or an int" if optional else "an int"
        raise ValueError(f"limit must be {what} of at least 1, got {limit!r}")


def check_attempts(attempts: Any) -> None:
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
        raise ValueError(f"attempts must be an int of at least 0, got {attempts!r}")
