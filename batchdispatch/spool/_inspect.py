"""An operator's view of a spool file: what it holds, read without taking anything.

:class:`Inspector` answers ``python -m batchdispatch spool PATH``: how
many rows wait, which are claimed by owners that live or have ended, how
many items the write-ahead logs of running and ended processes hold, the
dead letters, ages and sizes, and the rows themselves. It only reads:
it never creates the file, claims, frees, imports a log or deletes an
owner's file, so it is safe while dispatchers use the spool. (Requeueing
and purging dead letters are writes, made through
:class:`~batchdispatch.spool.SqliteSpool`.)
"""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import time
import urllib.parse
from typing import Any, Dict, List, Optional

from ..exceptions import SpoolError
from ._connection import APPLICATION_ID, SCHEMA_VERSION
from ._errors import cause, kind_of
from ._owners import QUARANTINED, Owners
from ._records import is_copy, read_log


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a spool file holds, at one look (see :meth:`Inspector.summary`)."""

    path: str
    #: Rows free for the next claim.
    waiting: int
    #: Rows claimed (or parked) by owners that live: a dispatcher has them in hand.
    claimed_live: int
    #: Rows claimed by owners that ended: the next claim frees them.
    claimed_ended: int
    #: Rows whose data could not be decoded: kept, never handed out.
    undecodable: int
    #: Items appended to the logs of live owners and not acked (durable mode).
    logged_live: int
    #: Items in the logs of owners that ended: the next claim copies them in as free rows.
    logged_ended: int
    #: Dead letters: items given up, kept until requeued or purged.
    dead: int
    #: Seconds since the oldest row was written (None: no row, or rows of layout 2 only).
    oldest_age: Optional[float]
    #: Seconds since the oldest dead letter was given up (None: none).
    oldest_dead_age: Optional[float]
    #: Bytes on disk: the file, SQLite's -wal, and the logs.
    size: int


@dataclasses.dataclass(frozen=True)
class StoredRow:
    """A row as stored: its data not decoded (see :meth:`Inspector.rows`)."""

    id: int
    #: The key as stored: JSON text.
    key: str
    #: The item as stored: JSON text (or what a custom *dumps* made: str or bytes).
    data: Any
    #: ``"waiting"``, ``"claimed"`` (a live owner), ``"ended"`` (an ended
    #: owner's), ``"undecodable"`` or ``"dead"``.
    state: str
    #: Seconds since it was written (given up, for a dead letter); None if unknown.
    age: Optional[float]
    #: For a dead letter: the error's text and the attempts made.
    error: Optional[str] = None
    attempts: Optional[int] = None


class Inspector:
    """Reads the spool file at *path* (which must exist) for an operator."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._owners = Owners(self.path)
        self._alive: Dict[str, bool] = {}

    def summary(self) -> Summary:
        now = time.time()
        reading = self._connect()
        with reading as conn:
            waiting = claimed_live = claimed_ended = undecodable = 0
            for owner, count in conn.execute("SELECT owner, count(*) FROM spool GROUP BY owner"):
                if owner is None:
                    waiting += count
                elif owner == QUARANTINED:
                    undecodable += count
                elif self._lives(owner):
                    claimed_live += count
                else:
                    claimed_ended += count
            oldest = conn.execute(f"SELECT min({reading.at}) FROM spool").fetchone()[0]
            dead, oldest_dead = 0, None
            if self._has_dead(conn):
                dead, oldest_dead = conn.execute("SELECT count(*), min(at) FROM dead").fetchone()
        logged_live = logged_ended = 0
        logs_size = 0
        for token, paths in self._logs().items():
            count = 0
            for path in paths:
                try:
                    logs_size += os.path.getsize(path)
                    count += len(read_log(path))
                except OSError:
                    continue  # deleted meanwhile: acked or copied in
            if self._lives(token):
                logged_live += count
            else:
                logged_ended += count
        size = logs_size
        for suffix in ("", "-wal"):
            try:
                size += os.path.getsize(self.path + suffix)
            except OSError:
                pass
        return Summary(
            path=self.path, waiting=waiting, claimed_live=claimed_live, claimed_ended=claimed_ended,
            undecodable=undecodable, logged_live=logged_live, logged_ended=logged_ended, dead=dead,
            oldest_age=None if oldest is None else max(0.0, now - oldest),
            oldest_dead_age=None if oldest_dead is None else max(0.0, now - oldest_dead),
            size=size,
        )

    def rows(
        self, *, dead: bool = False, key: Optional[str] = None, limit: Optional[int] = None,
    ) -> List[StoredRow]:
        """Rows oldest first: the queue's (waiting or claimed), or with *dead* the
        dead letters; of the stored *key* (JSON text) only, if given; *limit* at most."""
        now = time.time()
        params: List[Any] = [] if key is None else [key]
        where = "" if key is None else "WHERE key = ?"
        tail = " LIMIT ?" if limit is not None else ""
        if limit is not None:
            params.append(limit)
        found: List[StoredRow] = []
        reading = self._connect()
        with reading as conn:
            if dead:
                if not self._has_dead(conn):
                    return []
                for row_id, stored_key, data, error, attempts, at in conn.execute(
                    f"SELECT id, key, item, error, attempts, at FROM dead {where} ORDER BY id{tail}", params,
                ):
                    found.append(StoredRow(row_id, stored_key, data, "dead", _age(now, at), error, attempts))
                return found
            for row_id, stored_key, data, owner, at in conn.execute(
                f"SELECT id, key, item, owner, {reading.at} FROM spool {where} ORDER BY id{tail}", params,
            ):
                found.append(StoredRow(row_id, stored_key, data, self._state(owner), _age(now, at)))
        return found

    # -- inside ----------------------------------------------------------------------

    def _state(self, owner: Optional[str]) -> str:
        if owner is None:
            return "waiting"
        if owner == QUARANTINED:
            return "undecodable"
        return "claimed" if self._lives(owner) else "ended"

    def _lives(self, token: str) -> bool:
        alive = self._alive.get(token)
        if alive is None:
            alive = self._alive[token] = self._owners.alive(token, tidy=False)
        return alive

    @staticmethod
    def _has_dead(conn: sqlite3.Connection) -> bool:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dead'")
        return found.fetchone() is not None

    def _logs(self) -> Dict[str, List[str]]:
        """Every owner's log files, by token."""
        directory, base = os.path.split(self.path)
        prefix = f"{base}-log-"
        found: Dict[str, List[str]] = {}
        for name in sorted(os.listdir(directory)):
            if not name.startswith(prefix):
                continue
            token, _, number = name[len(prefix):].rpartition("-")
            if token and number.isdigit() and not is_copy(number):
                found.setdefault(token, []).append(os.path.join(directory, name))
        return found

    def _connect(self) -> _Reading:
        return _Reading(self.path)


class _Reading:
    """A connection for one look: opened on an existing file only, checked to be a spool, closed after."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn: Optional[sqlite3.Connection] = None
        #: The column of the time a row was written, or NULL where the layout has none.
        self.at = "at"

    def __enter__(self) -> sqlite3.Connection:
        if not os.path.isfile(self.path):
            what = "is not a file" if os.path.exists(self.path) else "does not exist"
            raise SpoolError(f"spool {self.path}: the file {what}", path=self.path, kind="io")
        uri = "file:" + urllib.parse.quote(self.path) + "?mode=rw"  # never creates it
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=5.0, isolation_level=None)
            try:
                app_id = conn.execute("PRAGMA application_id").fetchone()[0]
                version = conn.execute("PRAGMA user_version").fetchone()[0]
            except BaseException:
                conn.close()
                raise
        except sqlite3.Error as exc:
            kind = kind_of(exc, self.path)
            raise SpoolError(f"spool {self.path}: {cause(exc)}", path=self.path, kind=kind) from exc
        if app_id != APPLICATION_ID:
            conn.close()
            raise SpoolError(f"spool {self.path}: not a batchdispatch spool", path=self.path, kind="corrupt")
        if version not in (2, SCHEMA_VERSION):
            conn.close()
            raise SpoolError(
                f"spool {self.path}: the file has layout version {version}, this batchdispatch reads "
                f"{SCHEMA_VERSION}", path=self.path, kind="corrupt",
            )
        self.conn = conn
        self.at = "at" if version >= 3 else "NULL"  # layout 2 kept no time
        return conn

    def __exit__(self, *exc_info: object) -> None:
        if self.conn is not None:
            self.conn.close()


def _age(now: float, at: Optional[float]) -> Optional[float]:
    return None if at is None else max(0.0, now - at)
