"""Argument checks shared by the public constructors.

Each check names the parameter in its message, so a mistake is found where
the dispatcher is built, not later on the worker thread.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from ._engine import OVERFLOW_POLICIES


def seconds(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Check a duration: a real, finite number, positive (or >= 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    bound = "a non-negative" if allow_zero else "a positive"
    if math.isnan(value) or math.isinf(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {bound} finite number of seconds, got {value!r}")
    return float(value)


def optional_seconds(name: str, value: Any) -> Optional[float]:
    """Check a timeout: None (no limit) or a non-negative finite number."""
    return None if value is None else seconds(name, value, allow_zero=True)


def count(name: str, value: Any) -> Optional[int]:
    """Check an optional size limit: None, or an int of at least 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1 (or None), got {value!r}")
    return value


def overflow(value: Any) -> str:
    if value not in OVERFLOW_POLICIES:
        choices = ", ".join(repr(p) for p in OVERFLOW_POLICIES)
        raise ValueError(f"overflow must be one of {choices}, got {value!r}")
    return str(value)


def callable_or_none(name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")
    return value


def default_name(dispatch: Any) -> str:
    return str(getattr(dispatch, "__qualname__", None) or type(dispatch).__name__)
