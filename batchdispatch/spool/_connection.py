"""The connection: an SQLite file opened, checked, and used one transaction at a time.

Owns the table's layout, opening the file (created with mode 0600, WAL
journal, checked to be a spool of this layout), the connection of each
process and the lock that gives it to one operation at a time (a signal
handler of the thread using it gets "locked" instead of waiting for
itself), SQLite's busy timeout set from each operation's deadline,
noticing the file (or the owner file) removed or replaced under the open
connection, and turning every failure into a
:class:`~batchdispatch.exceptions.SpoolError`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

from ..exceptions import SpoolError
from ._dead import DEAD_TABLE, NOW
from ._encoding import Data
from ._errors import cause, kind_of, rollback
from ._owners import Owners
from ._process import Process
from ._records import ident
from ._waits import acquire

log = logging.getLogger("batchdispatch.spool")

#: ``PRAGMA application_id`` of a spool file ("bdsp"): anything else is not ours.
APPLICATION_ID = 0x62647370
#: ``PRAGMA user_version``: the layout of the tables below. 3 added ``spool.at``
#: and the ``dead`` table (see _dead); a file of layout 2 is brought up to it.
SCHEMA_VERSION = 3

SCHEMA = (
    # item is TEXT (JSON, or a str from dumps) or BLOB (bytes from dumps):
    # SQLite keeps the type, so loads gets back what dumps returned. No
    # AUTOINCREMENT: a new id is one more than the largest, so ids follow
    # insertion order among the rows present, which is all claim needs; an
    # id comes back only after its row was acked, by the one owner that
    # held it (its copy in memory is gone by then). Each commit writes one
    # page fewer for it (sqlite_sequence).
    # at: when the row was written (Unix seconds; NULL in rows of layout 2).
    "CREATE TABLE spool (id INTEGER PRIMARY KEY, key TEXT NOT NULL, item NOT NULL, owner TEXT, at REAL)",
    # The free rows, oldest first, for claim. Partial: a durable append
    # (owned from the start) and its ack leave this index alone, which
    # makes their commits about half as costly.
    "CREATE INDEX spool_free ON spool (id) WHERE owner IS NULL",
    # The owners whose write-ahead logs were copied into the table: a copy
    # interrupted before the logs were deleted is not made twice.
    "CREATE TABLE imported (token TEXT PRIMARY KEY)",
    DEAD_TABLE,
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

INSERT = f"INSERT INTO spool (key, item, owner, at) VALUES (?, ?, ?, {NOW})"

#: What brings a file of layout 2 up to SCHEMA_VERSION, in one transaction.
UPGRADE_FROM_2 = (
    "ALTER TABLE spool ADD COLUMN at REAL",
    DEAD_TABLE,
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)


class Database:
    """The SQLite file of one spool: its connection in each process, and what runs on it.

    *closed* is the spool's: once set, the next operation to let go of
    the connection closes it and drops the owner lock.
    """

    def __init__(self, path: str, timeout: float, owners: Owners) -> None:
        self.path = path
        self.timeout = timeout
        self.closed = False
        self._owners = owners

    @contextlib.contextmanager
    def hold(self, proc: Process, deadline: Optional[float]) -> Iterator[None]:
        """Hold the connection (proc.lock) for one operation that ends by *deadline*.

        A signal handler (or a finalizer) that interrupts an operation of
        its thread and calls the spool again gets a "locked" error instead
        of waiting for itself forever; one that lands before the operation
        starts, or after it ended, runs its own (see ConnectionLock). On
        leaving, a spool closed meanwhile by another thread is disconnected here.
        """
        lock = proc.lock
        if not acquire(lock, deadline):
            raise SpoolError(
                f"spool {self.path}: another thread of this process held the spool past the timeout",
                path=self.path, kind="locked",
            )
        if lock.entries:  # this thread holds it, in the operation this call interrupted
            lock.release()
            raise SpoolError(
                f"spool {self.path}: called again by the thread that is using it (from a signal "
                "handler or a finalizer)", path=self.path, kind="locked",
            )
        lock.entries = 1
        proc.holder = threading.get_ident()
        proc.deadline = deadline
        try:
            yield
        finally:
            proc.deadline = None
            if self.closed and proc.pid == os.getpid():
                self.disconnect(proc)
                self._owners.drop(proc)
            proc.holder = 0
            notes, proc.notes = proc.notes, []
            lock.entries = 0  # from here a handler that lands runs its own operation
            lock.release()
            for note in notes:  # logged outside the lock: a handler may write to this very spool
                log.warning("%s", note)

    def _busy_ms(self, proc: Process) -> int:
        """How long SQLite may wait for another connection's lock now: the operation's time left."""
        if proc.deadline is None:
            return int(self.timeout * 1000)
        return max(0, int((proc.deadline - time.monotonic()) * 1000))

    def _connect(self, proc: Process) -> sqlite3.Connection:
        """The process's connection, opened (and the file created) on first use; call with proc.lock."""
        if proc.conn is not None:
            return proc.conn
        if self.closed:  # closed while this caller waited for the lock
            raise SpoolError(f"spool {self.path}: the spool is closed", path=self.path, kind="closed")
        self._create_file(proc)
        busy_ms = self._busy_ms(proc)
        conn = sqlite3.connect(
            self.path, timeout=busy_ms / 1000, isolation_level=None, check_same_thread=False,
        )
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if app_id != APPLICATION_ID and (app_id != 0 or tables != 0):
                raise SpoolError(
                    f"spool {self.path}: the file is an SQLite database but not a batchdispatch spool",
                    path=self.path, kind="corrupt",
                )
            # WAL: a commit is one append to the -wal file, readers never
            # block the writer. synchronous=NORMAL: no fsync per commit; a
            # committed transaction survives the process being killed (it is
            # in the OS's page cache), though not a power cut.
            conn.execute("PRAGMA journal_mode = WAL").fetchone()
            conn.execute("PRAGMA synchronous = NORMAL")
            if tables == 0:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                        for statement in SCHEMA:
                            conn.execute(statement)
                    conn.execute("COMMIT")
                except BaseException:
                    rollback(conn)
                    raise
            else:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version == 2:
                    version = self._upgrade(conn)
                if version != SCHEMA_VERSION:
                    raise SpoolError(
                        f"spool {self.path}: the file has layout version {version}, this batchdispatch "
                        f"reads {SCHEMA_VERSION}", path=self.path, kind="corrupt",
                    )
        except BaseException:
            conn.close()
            raise
        proc.conn = conn
        proc.busy_ms = busy_ms
        try:
            proc.file_id = ident(os.stat(self.path))
        except OSError:
            proc.file_id = None  # checked again, and reopened, by the next operation
        return conn

    @staticmethod
    def _upgrade(conn: sqlite3.Connection) -> int:
        """Bring a file of layout 2 up to SCHEMA_VERSION; return the layout it has then."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 2:  # (another process may have done it meanwhile)
                for statement in UPGRADE_FROM_2:
                    conn.execute(statement)
                version = SCHEMA_VERSION
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        return int(version)

    def _create_file(self, proc: Process) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            return
        except FileNotFoundError as exc:
            raise SpoolError(
                f"spool {self.path}: the directory {os.path.dirname(self.path)} is gone (removed "
                "after the spool was made)", path=self.path, kind="removed",
            ) from exc
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
        finally:
            os.close(fd)
        if proc.replaced:
            # The -wal and -shm of the file that was removed, if another
            # process still has it open: SQLite would read them as this file's.
            for suffix in ("-wal", "-shm"):
                try:
                    os.unlink(self.path + suffix)
                except OSError:
                    pass
        proc.replaced = False

    def _check_file(self, proc: Process) -> None:
        """Notice the file, or this spool's owner file, removed or replaced
        under the open connection; call with proc.lock, before a statement.

        SQLite would go on writing to the removed file, where no one ever
        reads: instead the connection is dropped, and the next statement
        opens (and makes) the file at the path again. What was only in the
        removed file is gone. A stat per transaction, as log shippers check
        the files they follow; a transaction costs far more.
        """
        try:
            replaced = ident(os.stat(self.path)) != proc.file_id
        except FileNotFoundError:
            replaced = True
        except OSError:
            replaced = False  # cannot tell: the statement reports what is wrong
        if replaced:
            self.disconnect(proc)
            proc.replaced = True
            proc.notes.append(
                f"spool {self.path}: the file was removed or replaced while in use; the spool goes on in the "
                "file at the path (made afresh if need be), and the items only the removed file held are lost"
            )
        if proc.owner_fd == -1:
            return
        try:
            same = ident(os.stat(self._owners.path_of(proc.token))) == proc.owner_id
        except OSError:
            same = False
        if not same:
            # Others take this spool for dead while the file is gone: their
            # claims free its rows. Locked again at once, to end that.
            old_fd, proc.owner_fd = proc.owner_fd, -1
            try:
                os.unlink(self._owners.path_of(proc.token))  # not ours, whatever it is
            except OSError:
                pass
            try:
                self._owners.own(proc)
            finally:
                os.close(old_fd)  # its lock was on the removed file only
            proc.notes.append(
                f"spool {self.path}: the owner file of this process was removed while in use and is made "
                "again; until then other processes could take its claimed rows and deliver them again"
            )

    def disconnect(self, proc: Process) -> None:
        conn, proc.conn = proc.conn, None
        proc.busy_ms = -1
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def run(self, proc: Process, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run *work* on the connection, turning any failure into SpoolError; call with proc.lock."""
        try:
            if proc.conn is not None:
                self._check_file(proc)
            conn = self._connect(proc)
            busy_ms = self._busy_ms(proc)
            if busy_ms != proc.busy_ms:  # an operation with its own deadline, or the one after it
                conn.execute(f"PRAGMA busy_timeout = {busy_ms}")
                proc.busy_ms = busy_ms
            return work(conn)
        except SpoolError:
            self.disconnect(proc)
            raise
        except (sqlite3.Error, OSError) as exc:
            kind = kind_of(exc, self.path)
            if kind in ("corrupt", "io"):
                self.disconnect(proc)  # reopen on the next call: the file may have been replaced
            raise SpoolError(f"spool {self.path}: {cause(exc)}", path=self.path, kind=kind) from exc

    def transaction(self, proc: Process, work: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run *work* in one write transaction: all of it or none of it; call with proc.lock."""

        def wrapped(conn: sqlite3.Connection) -> Any:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(conn)
                conn.execute("COMMIT")
            except BaseException:
                rollback(conn)
                raise
            return result

        return self.run(proc, wrapped)

    def insert(self, proc: Process, rows: Sequence[Tuple[str, Data]], owner: Optional[str]) -> List[int]:
        """Write *rows* (key, data) held by *owner* (None: free) in one transaction; return their ids.
        Call with proc.lock."""

        def insert(conn: sqlite3.Connection) -> List[int]:
            ids = []
            for key, data in rows:
                cursor = conn.execute(INSERT, (key, data, owner))
                ids.append(int(cursor.lastrowid or 0))
            return ids

        result: List[int] = self.transaction(proc, insert)
        return result
