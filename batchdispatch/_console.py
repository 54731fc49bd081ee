"""Terminal output shared by the commands: a progress line, a summary, URLs fit to print."""

from __future__ import annotations

import threading
import urllib.parse
from typing import Callable, Sequence, TextIO, Tuple

__all__ = ["ProgressLine", "display_url", "write_summary"]


class ProgressLine:
    """Rewrites one status line on a terminal a few times per second.

    *render* is called on a helper thread (and once by :meth:`start`) and
    returns the line to show.

    .. code-block:: python

        progress = ProgressLine(lambda: f"{done:,} done", sys.stderr)
        progress.start()
        ...
        progress.stop()   # erases the line
    """

    #: Seconds between two refreshes.
    INTERVAL = 0.2

    def __init__(self, render: Callable[[], str], stream: TextIO) -> None:
        self._render_text = render
        self._stream = stream
        self._width = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="batchdispatch-progress", daemon=True)

    def start(self) -> None:
        self._render()
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing and erase the line, leaving the cursor at its start. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._stream.write("\r" + " " * self._width + "\r")
        self._stream.flush()

    def _loop(self) -> None:
        while not self._stop.wait(self.INTERVAL):
            self._render()

    def _render(self) -> None:
        line = self._render_text()
        # Pad to the longest line so far, so no tail of an older line remains.
        self._stream.write("\r" + line.ljust(self._width))
        self._stream.flush()
        self._width = max(self._width, len(line))


def display_url(url: str) -> str:
    """*url* without credentials or query string, fit to print in a summary.

    A user name, a password or an API key in the query would otherwise end
    up in terminal scrollback and cron mail.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        if parts.port is not None:
            host += f":{parts.port}"
    except ValueError:
        return "<unparsable URL>"
    if parts.username is not None or parts.password is not None:
        host = "***@" + host
    query = "?…" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")) + query


def write_summary(out: TextIO, heading: str, rows: Sequence[Tuple[str, str]]) -> None:
    """Write *heading*, then one aligned ``label  value`` line per row."""
    out.write(heading)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        out.write(f"  {label.ljust(width)}  {value}\n")
    out.flush()
