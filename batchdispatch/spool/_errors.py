"""Errors: what an OSError or sqlite3.Error means, as a SpoolError kind and a cause to show.

Owns the tables from SQLite's result codes, SQLite's messages (Python
< 3.11) and errno values to the kinds of
:class:`~batchdispatch.exceptions.SpoolError`, the text that names a
cause, and the rollback that never raises.
"""

from __future__ import annotations

import errno
import os
import sqlite3

# SQLite's primary result codes (the low byte of an extended code).
SQLITE_KINDS = {
    3: "read_only",   # SQLITE_PERM
    5: "locked",      # SQLITE_BUSY
    6: "locked",      # SQLITE_LOCKED
    8: "read_only",   # SQLITE_READONLY
    10: "io",         # SQLITE_IOERR
    11: "corrupt",    # SQLITE_CORRUPT
    13: "full",       # SQLITE_FULL
    14: "io",         # SQLITE_CANTOPEN: refined below
    23: "read_only",  # SQLITE_AUTH
    26: "corrupt",    # SQLITE_NOTADB
}
# Python < 3.11 has no sqlite_errorcode: fall back on SQLite's messages.
MESSAGE_KINDS = (
    ("not a database", "corrupt"),
    ("malformed", "corrupt"),
    ("disk is full", "full"),
    ("readonly", "read_only"),
    ("read-only", "read_only"),
    ("locked", "locked"),
    ("busy", "locked"),
)
OS_KINDS = {
    errno.EROFS: "read_only",
    errno.EACCES: "read_only",
    errno.EPERM: "read_only",
    errno.ENOSPC: "full",
    errno.EDQUOT: "full",
    errno.EFBIG: "full",  # past the file size limit (RLIMIT_FSIZE) or the file system's
}


def kind_of(exc: BaseException, path: str, removed: bool = False) -> str:
    """The SpoolError kind of *exc*, raised by an operation on the spool at *path*. *removed*: a
    file was being made next to the spool's, so ENOENT means its directory is gone."""
    if isinstance(exc, OSError):
        if removed and exc.errno == errno.ENOENT:
            return "removed"
        return OS_KINDS.get(exc.errno or 0, "io")
    code = getattr(exc, "sqlite_errorcode", None)
    kind = "io"
    if code is not None:
        kind = SQLITE_KINDS.get(code & 0xFF, "io")
    else:
        message = str(exc).lower()
        kind = next((k for text, k in MESSAGE_KINDS if text in message), "io")
    if kind == "io" and "unable to open" in str(exc).lower() and read_only_place(path):
        kind = "read_only"  # SQLITE_CANTOPEN: most often a file or directory we may not write
    return kind


def read_only_place(path: str) -> bool:
    directory = os.path.dirname(path)
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    target = path if os.path.exists(path) else directory
    return not os.access(target, os.W_OK)


def rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # SQLite rolls back on its own when a statement fails this badly


def cause(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror} ({type(exc).__name__})"
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    return f"{exc} ({name})"
