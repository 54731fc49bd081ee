"""Terminal output shared by the commands: a progress line, a summary, URLs fit to print.

Also what keeps a failing stdout or stderr from deciding a command's exit status:
:class:`Output` and :func:`flush_before_exit`.
"""

from __future__ import annotations

import errno
import os
import threading
import urllib.parse
from typing import Callable, Optional, Protocol, Sequence, TextIO, Tuple

__all__ = ["Output", "ProgressLine", "Writer", "display_url", "flush_before_exit", "write_summary"]


class Writer(Protocol):
    """What the helpers here write to: a text stream, or an :class:`Output`."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> None: ...


class Output:
    """Wraps stdout or stderr so that a failed write ends its output, not the command.

    Output can fail under a command whose work went well: the reader stopped
    reading (``| head -1``: EPIPE), the disk is full (``> /dev/full``:
    ENOSPC), the terminal hung up (EIO). That says nothing about the work, so
    it must not become a traceback or change the exit status. The first error
    is kept in :attr:`error` for the command to report, and nothing more is
    written: it would fail the same way, or land after a gap.
    """

    def __init__(self, stream: Optional[TextIO], name: str) -> None:
        self._stream = stream
        #: The stream's name in messages: "stdout" or "stderr".
        self.name = name
        #: The first write or flush error, or None. A stream that is None
        #: (its descriptor was closed when Python started, ``>&-``) or
        #: closed counts as failed from the start.
        self.error: Optional[OSError] = None
        if stream is None or getattr(stream, "closed", False):
            self.error = OSError(errno.EBADF, "closed")

    def write(self, text: str) -> None:
        if self.error is None and self._stream is not None:
            try:
                self._stream.write(text)
            except (OSError, ValueError) as exc:  # ValueError: closed meanwhile
                self.error = exc if isinstance(exc, OSError) else OSError(errno.EBADF, "closed")

    def flush(self) -> None:
        if self.error is None and self._stream is not None:
            try:
                self._stream.flush()
            except (OSError, ValueError) as exc:
                self.error = exc if isinstance(exc, OSError) else OSError(errno.EBADF, "closed")

    def isatty(self) -> bool:
        try:
            return self._stream is not None and self._stream.isatty()
        except (OSError, ValueError):
            return False

    def failure(self) -> Optional[str]:
        """One line saying why writing failed ("stdout: Broken pipe"), or None."""
        if self.error is None:
            return None
        return f"{self.name}: {self.error.strerror or self.error}"


def flush_before_exit(stream: Optional[TextIO]) -> None:
    """Flush *stream*; if that fails, point its file descriptor at :data:`os.devnull`.

    What a failed flush leaves in the buffer is flushed again at interpreter
    shutdown, which would fail again, print "Exception ignored ...
    BrokenPipeError" and exit with status 120 instead of the command's. Once
    the descriptor is /dev/null that last flush succeeds, and what it drops
    was lost anyway.
    """
    if stream is None:  # started with the descriptor closed
        return
    try:
        stream.flush()
    except OSError:
        try:
            fd = stream.fileno()
        except (OSError, ValueError):  # not a file: nothing is flushed at shutdown either
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)


class ProgressLine:
    """Rewrites one status line on a terminal a few times per second.

    *render* is called on a helper thread (and once by :meth:`start`) and
    returns the line to show.

    .. code-block:: python

        import sys
        from batchdispatch._console import ProgressLine

        done = 0
        progress = ProgressLine(lambda: f"{done:,} done", sys.stderr)
        progress.start()
        ...
        progress.stop()   # erases the line
    """

    #: Seconds between two refreshes.
    INTERVAL = 0.2

    def __init__(self, render: Callable[[], str], stream: Writer) -> None:
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


def write_summary(out: Writer, heading: str, rows: Sequence[Tuple[str, str]]) -> None:
    """Write *heading*, then one aligned ``label  value`` line per row."""
    out.write(heading)
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        out.write(f"  {label.ljust(width)}  {value}\n")
    out.flush()
