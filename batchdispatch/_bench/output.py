"""How the bench writes: its Markdown tables, its ratios and the status line on a terminal."""

from __future__ import annotations

from typing import List, Optional, Sequence, TextIO


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    """Lay out a Markdown table whose columns also line up as plain text."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(["-" * (widths[0] + 2)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|"
    return [line(header), rule, *(line(row) for row in rows)]


def ratio(value: Optional[float], base: Optional[float]) -> str:
    if value is None or not base:
        return "-"
    return f"{value / base:.2f}x"


def status(stream: TextIO, text: str) -> None:
    """Rewrite the status line on *stream*, if it is a terminal."""
    if stream.isatty():
        stream.write("\r" + text.ljust(60) + ("" if text else "\r"))
        stream.flush()
