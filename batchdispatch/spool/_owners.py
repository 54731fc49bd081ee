"""Owners: who holds a row, and whether that owner still lives.

A spool claims a row by writing its owner token into it. Each token has an
owner file next to the spool's, ``<path>-owner-<token>``, locked with a
POSIX lock for as long as the owner lives: the kernel drops the lock when
its process ends in any way (SIGKILL included), a forked child does not
inherit it, and it means the same to every process on the machine. This
module owns those files, the test of another owner's lock, freeing the
rows of dead owners, and the tokens this process holds (a POSIX lock
cannot be tested from the process that holds it).
"""

from __future__ import annotations

import errno
import fcntl
import os
import sqlite3
import threading
from typing import TYPE_CHECKING, Dict

from ..exceptions import SpoolError
from ._errors import cause, kind_of
from ._records import ident

if TYPE_CHECKING:
    from ._process import Process

#: The owner of a row that could not be decoded: never handed out again.
QUARANTINED = "!undecodable"

_tokens_lock = threading.Lock()  # guards _live_tokens; taken inside a spool's connection lock
_live_tokens: Dict[str, int] = {}  # token -> pid of the spools of this process that hold an owner lock


def reset_after_fork() -> None:
    """In a forked child: no token is held here any more, and the lock may have been held at the fork."""
    global _tokens_lock
    _tokens_lock = threading.Lock()
    _live_tokens.clear()


class Owners:
    """The owner files of the spool at *path*."""

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path

    def path_of(self, token: str) -> str:
        """The owner file of *token*."""
        return f"{self.path}-owner-{token}"

    def own(self, proc: Process) -> str:
        """This spool's owner token, its lock file created and locked on first use; call with proc.lock.

        A row is claimed by writing the token into it. The owner file's
        POSIX lock is what says the owner lives: the kernel drops it when
        the process ends in any way (SIGKILL included), a forked child does
        not inherit it, and it means the same to every process on the
        machine, whatever pid namespace they are in.
        """
        if proc.owner_fd == -1:
            path = self.path_of(proc.token)
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    os.write(fd, f"{proc.pid}\n".encode())
                except BaseException:
                    os.close(fd)
                    raise
            except OSError as exc:
                raise SpoolError(
                    f"spool {self.path}: cannot create the owner file {path}: {cause(exc)}",
                    path=self.path, kind=kind_of(exc, self.path, removed=True),
                ) from exc
            proc.owner_id = ident(os.fstat(fd))
            proc.owner_fd = fd
            with _tokens_lock:
                _live_tokens[proc.token] = proc.pid
        return proc.token

    def drop(self, proc: Process) -> None:
        """Let go of this process's owner lock and delete its file: its rows are free to any claim."""
        fd, proc.owner_fd = proc.owner_fd, -1
        if fd == -1:
            return
        with _tokens_lock:
            _live_tokens.pop(proc.token, None)
        try:
            os.unlink(self.path_of(proc.token))
        except OSError:
            pass  # a later claim frees the rows all the same: the lock is gone
        os.close(fd)

    def free_dead(self, proc: Process, conn: sqlite3.Connection) -> None:
        """Free the rows of owners that no longer live; call inside claim's transaction.

        The transaction serializes claimers, so two processes never free
        the same owner's rows while the other hands them out.
        """
        owners = [
            row[0] for row in conn.execute(
                "SELECT DISTINCT owner FROM spool WHERE owner IS NOT NULL AND owner != ? AND owner != ?",
                (proc.token, QUARANTINED),
            )
        ]
        for owner in owners:
            if not self.alive(owner):
                conn.execute("UPDATE spool SET owner = NULL WHERE owner = ?", (owner,))

    def alive(self, token: str, tidy: bool = True) -> bool:
        """Whether the owner *token* lives: its file is locked (or it is a spool of this process).

        With *tidy*, the file of an owner found dead is deleted."""
        with _tokens_lock:
            if _live_tokens.get(token) == os.getpid():
                # Another spool of this process: its lock cannot be tested
                # from here (POSIX locks never conflict within a process, and
                # closing our test descriptor would drop its lock).
                return True
        if "/" in token or token.startswith("."):
            return False  # not a token this module wrote
        path = self.path_of(token)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: keep the rows rather than risk handing them out twice
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    return True
                return True  # cannot tell, as above
            if tidy:
                try:
                    os.unlink(path)  # dead: tidy up its file
                except OSError:
                    pass
            return False
        finally:
            os.close(fd)
