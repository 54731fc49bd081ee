"""Dead letters: pairs given up, kept apart from the queue until an operator acts on them.

A dispatcher buries what it gives up (an error that cannot succeed, or
retries run out): the pairs leave the ``spool`` table, or are written
directly when they were only in memory, into the ``dead`` table, with the
error that ended them (its type and message), how many attempts were made
and when. :meth:`~batchdispatch.spool.SqliteSpool.claim` never hands them
out. An operator lists them, requeues them (back to the queue, as the
newest free rows) or purges them, with the spool's methods or
``python -m batchdispatch spool``. This module owns that table's layout
and the statements on it; the caller holds the connection (see
``_connection``).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any, Hashable, List, Optional, Sequence, Tuple

from ._encoding import Data

#: The current time in Unix seconds, in SQL (``unixepoch('subsec')`` needs SQLite 3.42).
NOW = "((julianday('now') - 2440587.5) * 86400.0)"

DEAD_TABLE = (
    "CREATE TABLE dead (id INTEGER PRIMARY KEY, key TEXT NOT NULL, item NOT NULL,"
    " error TEXT NOT NULL, attempts INTEGER NOT NULL, at REAL NOT NULL)"
)

#: Longest error text kept with a dead letter, in characters; a longer one is cut, and says so.
ERROR_CHARS = 2000


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    """One dead letter, as :meth:`~batchdispatch.spool.SqliteSpool.dead_letters` lists it."""

    #: Its id among the dead letters (not a row id of the queue).
    id: int
    #: The key it was given with.
    key: Hashable
    #: The item, decoded as the spool decodes items.
    item: Any
    #: The error that ended it: ``"TypeName: message"``.
    error: str
    #: Attempts made before it was given up (0 if none was).
    attempts: int
    #: When it was given up, in Unix seconds.
    at: float


def error_text(error: Optional[BaseException]) -> str:
    """How an error is kept with its dead letters: type and message, cut to ERROR_CHARS."""
    if error is None:
        return "unknown"
    try:
        message = str(error)
    except Exception:  # noqa: BLE001 - a __str__ that raises: the type is enough
        message = "(no message)"
    text = f"{type(error).__name__}: {message}" if message else type(error).__name__
    if len(text) > ERROR_CHARS:
        text = text[:ERROR_CHARS - 14] + " ... (cut)"
    return text


def bury(
    conn: sqlite3.Connection,
    moved: Sequence[int],
    written: Sequence[Tuple[str, Data]],
    owner: Optional[str],
    error: str,
    attempts: int,
) -> int:
    """Move the rows *moved* that *owner* holds into ``dead``, and write the pairs
    *written* (key, data) there; return how many dead letters were made."""
    made = 0
    for row_id in moved if owner is not None else ():
        cursor = conn.execute(
            f"INSERT INTO dead (key, item, error, attempts, at) SELECT key, item, ?, ?, {NOW}"
            " FROM spool WHERE id = ? AND owner = ?", (error, attempts, row_id, owner),
        )
        if cursor.rowcount:
            conn.execute("DELETE FROM spool WHERE id = ?", (row_id,))
            made += 1
    for key, data in written:
        conn.execute(
            f"INSERT INTO dead (key, item, error, attempts, at) VALUES (?, ?, ?, ?, {NOW})",
            (key, data, error, attempts),
        )
        made += 1
    return made


def _where(key: Optional[str], older_than: Optional[float] = None) -> Tuple[str, List[Any]]:
    clauses: List[str] = []
    params: List[Any] = []
    if key is not None:
        clauses.append("key = ?")
        params.append(key)
    if older_than is not None:
        clauses.append(f"at <= {NOW} - ?")
        params.append(older_than)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def select(
    conn: sqlite3.Connection, key: Optional[str], limit: Optional[int]
) -> List[Tuple[int, str, Data, str, int, float]]:
    """Dead letters, oldest first, of the encoded *key* (None: every key), *limit* at most."""
    where, params = _where(key)
    sql = f"SELECT id, key, item, error, attempts, at FROM dead{where} ORDER BY id"
    if limit is not None:
        sql += " LIMIT ?"
        params.append(limit)
    return list(conn.execute(sql, params).fetchall())


def requeue(conn: sqlite3.Connection, key: Optional[str]) -> int:
    """Move dead letters back to the queue as free rows, in the order they died; return how many."""
    where, params = _where(key)
    cursor = conn.execute(
        f"INSERT INTO spool (key, item, owner, at)"
        f" SELECT key, item, NULL, {NOW} FROM dead{where} ORDER BY id", params,
    )
    conn.execute(f"DELETE FROM dead{where}", params)
    return int(cursor.rowcount)


def purge(conn: sqlite3.Connection, key: Optional[str], older_than: Optional[float]) -> int:
    """Delete dead letters (given up at least *older_than* seconds ago, if given); return how many."""
    where, params = _where(key, older_than)
    return int(conn.execute(f"DELETE FROM dead{where}", params).rowcount)
