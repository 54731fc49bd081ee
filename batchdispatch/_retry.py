"""RetryPolicy: when and how often a failed batch is tried again."""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any, Optional

__all__ = ["RetryPolicy"]


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for failed batches. Immutable: share it freely.

    After the *n*-th failed attempt of a batch (n = 1, 2, ...), the next
    attempt waits ``backoff * multiplier ** (n - 1)`` seconds, capped at
    *max_backoff*; with *jitter*, a uniformly random time between 0 and that
    ("full jitter"), so that many failing batches do not retry in step.

    .. code-block:: python

        from batchdispatch import RetryPolicy

        policy = RetryPolicy(max_attempts=5, backoff=0.5, jitter=False)
        [policy.backoff_for(n) for n in (1, 2, 3)]   # [0.5, 1.0, 2.0]
        patient = policy.new(max_attempts=10)        # a changed copy

    An error whose ``retryable`` attribute is False (for example an HTTP 400
    from :mod:`batchdispatch.http`) gives its items up at once, whatever
    *max_attempts* says.

    :param max_attempts: attempts in all, the first one included (>= 1).
    :param backoff: seconds before the first retry (> 0).
    :param multiplier: growth of the backoff per attempt (>= 1).
    :param max_backoff: the cap on a single backoff, in seconds (> 0). A
        receiver's ``Retry-After`` (:attr:`DeliveryError.retry_after
        <batchdispatch.exceptions.DeliveryError.retry_after>`) is capped by
        it too.
    :param jitter: use full jitter (a bool).
    """

    max_attempts: int = 3
    backoff: float = 1.0
    multiplier: float = 2.0
    max_backoff: float = 60.0
    jitter: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError(f"max_attempts must be an int, got {type(self.max_attempts).__name__}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts!r}")
        for name, low in (("backoff", 0.0), ("multiplier", 1.0), ("max_backoff", 0.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a number, got {type(value).__name__}")
            bound = "at least 1" if name == "multiplier" else "a positive finite number"
            try:
                number = float(value)  # an int too large for a float raises OverflowError
            except OverflowError:
                raise ValueError(
                    f"{name} must be {bound}, got an int of {int(value).bit_length()} bits"
                ) from None
            if math.isnan(number) or math.isinf(number) or number < low or (number == 0 and low == 0):
                raise ValueError(f"{name} must be {bound}, got {value!r}")
        if not isinstance(self.jitter, bool):
            raise TypeError(f"jitter must be a bool, got {type(self.jitter).__name__}")

    def new(self, **changes: Any) -> RetryPolicy:
        """Return a copy with *changes* applied (checked like the constructor)."""
        return dataclasses.replace(self, **changes)

    def backoff_for(self, failures: int, rng: Optional[random.Random] = None) -> float:
        """Seconds to wait after the *failures*-th failed attempt.

        Any number of failures is fine: past the point where the backoff
        reaches *max_backoff*, it stays there (the power is never computed
        where it could overflow).
        """
        ceiling = float(self.max_backoff)
        steps = max(0, failures - 1)
        # backoff * multiplier ** steps < max_backoff, compared in logarithms.
        if self.multiplier == 1 or steps * math.log(self.multiplier) < math.log(ceiling / self.backoff):
            try:
                ceiling = min(ceiling, self.backoff * self.multiplier ** steps)
            except OverflowError:  # only where max_backoff / backoff overflowed itself
                pass
        if not self.jitter:
            return ceiling
        return (rng or random).uniform(0.0, ceiling)

    def gives_up(self, attempts: int, error: BaseException) -> bool:
        """Whether items that failed *attempts* times with *error* are given up."""
        return attempts >= self.max_attempts or not retryable(error)


def retryable(error: BaseException) -> bool:
    """Whether trying again may help: *error*'s ``retryable`` attribute, True
    unless it says False. A property that raises counts as retryable (within
    max_attempts) rather than killing the worker that asks."""
    try:
        return getattr(error, "retryable", True) is not False
    except Exception:  # noqa: BLE001 - the user's error class
        return True
