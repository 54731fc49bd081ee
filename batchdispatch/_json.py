"""Compact JSON for the spool and the HTTP sinks, without importing requests.

A value JSON cannot represent is reported by its type name only, never by
its contents, which may be secret.
"""

from __future__ import annotations

import json
from typing import Any


class NotJSON(TypeError):
    """A value of a type JSON cannot represent; ``value`` is the offending object."""

    def __init__(self, value: object) -> None:
        super().__init__(type(value).__name__)
        self.value = value


def _refuse(value: object) -> Any:
    raise NotJSON(value)


# Made once: json.dumps with options builds an encoder per call, which cost
# about 1.5 us of the 4 us an item took (a durable append encodes each).
# encode() keeps no state between calls, so threads share it.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_refuse)


def dumps(value: Any) -> str:
    """*value* as compact JSON text; raises TypeError or ValueError (NaN, cycles)."""
    return _ENCODER.encode(value)


def what(exc: BaseException) -> str:
    """Say what made :func:`dumps` fail: the offending type's name, or the error's text."""
    return type(exc.value).__name__ if isinstance(exc, NotJSON) else str(exc)
