"""Argument checks shared by the public constructors.

Each check names the parameter in its message, so a mistake is found where
the dispatcher is built, not later on the worker thread.
"""

from __future__ import annotations

import math
import os
from typing import Any, Dict, Optional

from ._retry import RetryPolicy
from ._spool_protocol import Spool
from .exceptions import SpoolError

#: The overflow policies ``enqueue`` understands when the queue is full
#: (``"spill"`` needs a spool).
OVERFLOW_POLICIES = ("drop_newest", "drop_oldest", "block", "raise", "spill")


def seconds(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Check a duration: a real, finite number, positive (or >= 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}")
    bound = "a non-negative" if allow_zero else "a positive"
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        raise ValueError(f"{name} must be {bound} finite number of seconds, got an int of "
                         f"{int(value).bit_length()} bits") from None
    if math.isnan(number) or math.isinf(number) or number < 0 or (number == 0 and not allow_zero):
        raise ValueError(f"{name} must be {bound} finite number of seconds, got {value!r}")
    return number


def flag(name: str, value: Any) -> bool:
    """Check an on/off option: a bool (``"no"`` would count as true)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


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


def overflow_policy(value: Any) -> str:
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


def retry_policy(value: Any) -> Optional[RetryPolicy]:
    if value is not None and not isinstance(value, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy or None, got {type(value).__name__}")
    return value


def spool_path(path: Any) -> str:
    """A spool file's absolute path (``SqliteSpool`` and the integrations check it here); nothing is opened.

    :raises TypeError: not a str or os.PathLike of str.
    :raises ValueError: not a file (empty, ``:memory:``, a ``file:`` URI).
    :raises SpoolError: its directory does not exist (kind ``"io"``).
    """
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    raw = os.fspath(path)
    if not isinstance(raw, str):
        raise TypeError(f"path must be a str or os.PathLike of str, got {type(raw).__name__}")
    if raw in ("", ":memory:") or raw.startswith("file:"):
        raise ValueError(f"path must name a file, got {raw!r}")
    absolute = os.path.abspath(raw)
    directory = os.path.dirname(absolute)
    if not os.path.isdir(directory):
        message = f"spool {absolute}: the directory {directory} does not exist"
        raise SpoolError(message, path=absolute, kind="io")
    return absolute


def spool_option(value: Any, overflow: str, spill_exhausted: Any) -> Any:
    """Check ``spool=`` (any :class:`~batchdispatch.spool.Spool`) and the options that need one."""
    if value is not None and not isinstance(value, Spool):
        raise TypeError(f"spool must be a Spool (such as SqliteSpool) or None, got {type(value).__name__}")
    if value is not None:
        optional_seconds("spool.poll_interval", getattr(value, "poll_interval", None))
    flag("spill_exhausted", spill_exhausted)
    if value is None and overflow == "spill":
        raise ValueError("overflow='spill' needs a spool: pass spool=SqliteSpool(path)")
    if value is None and spill_exhausted:
        raise ValueError("spill_exhausted=True needs a spool: pass spool=SqliteSpool(path)")
    return value


def common(
    *, delay: Any, max_batch_size: Any, max_queue_size: Any, overflow: Any, block_timeout: Any,
    on_error: Any, name: Any, flush_on_exit: Any, exit_timeout: Any, clock: Any, retry: Any, dispatch: Any,
    spool: Any = None, spill_exhausted: Any = False, dead_letters: Any = True,
) -> Dict[str, Any]:
    """Check the options every dispatcher shares; return them ready for the engine."""
    if not callable(dispatch):
        raise TypeError(f"dispatch must be callable, got {type(dispatch).__name__}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__}")
    policy = overflow_policy(overflow)
    return {
        "spool": spool_option(spool, policy, spill_exhausted),
        "spill_exhausted": spill_exhausted,
        "dead_letters": flag("dead_letters", dead_letters),
        "delay": seconds("delay", delay),
        "max_batch_size": count("max_batch_size", max_batch_size),
        "max_queue_size": count("max_queue_size", max_queue_size),
        "overflow": policy,
        "block_timeout": optional_seconds("block_timeout", block_timeout),
        "on_error": callable_or_none("on_error", on_error),
        "name": name or default_name(dispatch),
        "flush_on_exit": flag("flush_on_exit", flush_on_exit),
        "exit_timeout": seconds("exit_timeout", exit_timeout, allow_zero=True),
        "clock": callable_or_none("clock", clock),
        "retry": retry_policy(retry),
    }
