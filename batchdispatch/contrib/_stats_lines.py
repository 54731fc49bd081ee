"""The text of the stats commands: ``flask batchdispatch stats`` and ``manage.py batchdispatch_stats``.

Both print :func:`stats_lines`, one line per field of the snapshot, read
from the dataclass itself: a field added to ``DispatcherStats`` is printed
by both commands with no change here or in either of them.
"""

from __future__ import annotations

import dataclasses
from typing import Any, List, Mapping

from .._stats import DispatcherStats


def stats_lines(stats: DispatcherStats) -> List[str]:
    """``field: value`` for every field of *stats*, in the dataclass's order."""
    return [f"{field.name}: {_format(getattr(stats, field.name))}" for field in dataclasses.fields(stats)]


def _format(value: Any) -> str:
    if isinstance(value, Mapping):
        return repr(dict(value))
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)  # a Histogram: its one-line form (count, mean, quantile bounds)
