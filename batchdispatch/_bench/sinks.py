"""The sinks section: each sink of :mod:`batchdispatch.sinks` against the per-item way, in one run.

Each engine is a part, a module beside this one whose ``measure(options,
err)`` returns rows ``(what, per-item label, per-item items/s, batched
items/s)``, or raises :class:`Unavailable` when its server does not
answer or its client is not installed (the report then says so and the
other parts still run). Parts are listed in :data:`PARTS`.
"""

from __future__ import annotations

import importlib
from typing import List, Sequence, TextIO, Tuple

from .options import BenchOptions
from .output import table

#: The modules of this package that measure one engine each, in the order they run.
PARTS: Sequence[str] = ("sinks_sql", "sinks_redis", "sinks_rabbitmq")

#: (engine, the per-item way, its items/s, the sink's items/s)
Row = Tuple[str, str, float, float]


#: Rounds of a part at most: each runs the per-item way, then the sink, and the best of each is kept.
MAX_ROUNDS = 3


def rounds(options: BenchOptions) -> int:
    """How many rounds a part runs: ``--repeat``, at most :data:`MAX_ROUNDS` (the per-item ways are slow).

    Alternating the two ways, rather than running one after the other,
    lets a busy moment of a shared machine weigh on both alike.
    """
    return max(1, min(options.repeat, MAX_ROUNDS))


class Unavailable(Exception):
    """A part cannot run here: its server does not answer, or its client is missing."""


def measure(options: BenchOptions, err: TextIO) -> Tuple[List[Row], List[str]]:
    """Run every part; return their rows and a note per part that could not run."""
    rows: List[Row] = []
    notes: List[str] = []
    for name in PARTS:
        part = importlib.import_module(f"{__package__}.{name}")
        try:
            rows += part.measure(options, err)
        except Unavailable as exc:
            notes.append(f"{name}: not measured: {exc}")
    return rows, notes


def report(options: BenchOptions, measured: Tuple[List[Row], List[str]]) -> List[str]:
    rows, notes = measured
    lines = ["Sinks: items/s delivered per item, as an application writes it today, and by the sink"]
    if rows:
        lines += table(
            ("engine", "per item", "items/s per item", "items/s with the sink", "ratio"),
            [(engine, way, f"{slow:,.0f}", f"{fast:,.0f}", f"{fast / slow:.1f}x" if slow else "-")
             for engine, way, slow, fast in rows],
        )
    lines += notes or ([] if rows else ["(no sink parts)"])
    return lines
