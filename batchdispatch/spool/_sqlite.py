"""SqliteSpool: the public spool on an SQLite file, composed of the parts beside it.

It owns the public operations and what ties the parts together: checking
the arguments, encoding items (_encoding) before they reach the file,
running each operation on the connection (_connection) or the log
(_wal) of this process (_process), claiming with the owners' liveness
(_owners), and closing. Each part's module says what it owns.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Hashable,
    Iterable,
    List,
    Optional,
    Tuple,
    Union,
)

from .._spool_protocol import Spool
from .._validate import seconds, spool_path
from ..exceptions import SpoolError
from . import _dead as dead
from ._connection import Database
from ._dead import DeadLetter, error_text
from ._encoding import (
    ANY_KEY,
    Codec,
    Data,
    Encoded,
    Pair,
    Row,
    Unencodable,
    check_attempts,
    check_limit,
    decode_key,
    key_filter,
    refusal,
)
from ._owners import QUARANTINED, Owners
from ._process import Process, abandon, register, unregister
from ._records import item_body
from ._waits import deadline_after
from ._wal import WriteAheadLog

log = logging.getLogger("batchdispatch.spool")



class SqliteSpool:
    """Keeps ``(key, item)`` pairs in an SQLite file until they are delivered.

    .. code-block:: python

        from batchdispatch.spool import SqliteSpool

        spool = SqliteSpool("/var/spool/myapp/events.db", durable=True)
        row_id = spool.append("endpoint-1", {"event": "signup"})  # on disk when it returns
        ...
        spool.ack([row_id])                                      # delivered: gone
        spool.close()

    :param path: the file. Its directory must exist; the file is created
        with mode 0600 on first use (SQLite's ``-wal`` and ``-shm`` files
        take the same mode).
    :param durable: the mode the dispatcher uses this spool in: False
        writes only what cannot be delivered from memory, True writes every
        item before ``enqueue`` returns. The spool works the same either
        way; the dispatcher reads this flag.
    :param dumps: ``dumps(item) -> bytes | str``, to store items that are
        not JSON. Give *loads* with it. None: compact UTF-8 JSON.
    :param loads: ``loads(data) -> item``: the inverse of *dumps*, given
        the bytes or str that *dumps* returned. It must not run code
        from the data (never pickle: a spool file is data, not a program).
    :param timeout: seconds an operation waits for a file another process
        holds locked before it raises :class:`SpoolError` (kind
        ``"locked"``).
    :param name: a name for log messages. None: the file's name.

    Keys are stored as JSON as well: a ``str``, ``int``, ``float``,
    ``bool``, None, or a tuple of these (a tuple comes back as a tuple).
    With the default encoding, items come back as JSON makes them: tuples
    as lists, dict keys as strings.

    Every operation may raise :class:`~batchdispatch.exceptions.SpoolError`
    naming the file and the cause, with a ``kind`` to count faults by.
    Opening is lazy: the constructor checks its arguments and that the
    directory exists, and the first operation opens the file.

    It implements :class:`~batchdispatch.spool.Spool`, the contract a
    dispatcher's ``spool=`` is written against; :meth:`count` and
    :meth:`close` are its own.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        path: Union[str, os.PathLike[str]],
        *,
        durable: bool = False,
        dumps: Optional[Callable[[Any], Data]] = None,
        loads: Optional[Callable[[Data], Any]] = None,
        timeout: float = 5.0,
        name: Optional[str] = None,
    ) -> None:
        self.path = spool_path(path)
        self._codec = Codec(dumps, loads)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")
        self.durable = bool(durable)
        self.timeout = seconds("timeout", timeout, allow_zero=True)
        self.name = name or os.path.basename(self.path)
        self._owners = Owners(self.path)
        self._db = Database(self.path, self.timeout, self._owners)
        self._log = WriteAheadLog(self.path, self.timeout, self._db, self._owners)
        self._proc = Process()
        register(self)

    # -- public operations ---------------------------------------------------

    def put(
        self, pairs: Iterable[Pair], *, claim: bool = False, timeout: Optional[float] = None,
    ) -> List[int]:
        """Write *pairs* ``(key, item)`` in one transaction; return their row ids, in order.

        The rows are free: any process's :meth:`claim` may take them. This
        is how a dispatcher spills what it cannot deliver. With *claim*,
        they are held by this spool instead, as if claimed: no one replays
        them while this process lives and the spool is open (a dispatcher
        parks items given up after their retries this way).

        An item (or key) that cannot be encoded does not sink the others:
        every other item is written, in order, in the one transaction, and
        then :class:`SpoolError` ``kind="encode"`` is raised, naming the
        refused items by index and type (never by value). Its ``refused``
        lists their indices, and its ``rows`` the row id of every input
        item (0 for a refused one). Any other error writes nothing, and its
        ``refused`` and ``rows`` are None.

        *timeout*, here and in every operation that may wait: the most
        seconds it waits, in all, for a lock of another process or of
        another thread of this one, before it raises :class:`SpoolError`
        ``kind="locked"`` having changed nothing. None: the spool's own
        timeout for another process's lock, and as long as it takes for
        this process's threads.
        """
        deadline = deadline_after(timeout)
        encoded = Encoded(self._codec, pairs)
        written = encoded.written
        ids: List[int] = []
        if written:
            proc = self._process()
            with self._db.hold(proc, deadline):
                ids = self._db.insert(proc, written, owner=self._owners.own(proc) if claim else None)
        if not encoded.refused:
            return ids
        raise encoded.refusal(self.path, ids) from encoded.cause

    def append(self, key: Hashable, item: Any) -> int:
        """Write one pair to this process's write-ahead log; return its id once it is there.

        This is durable mode's write, made for ``enqueue``: one ``os.write``
        of a checksummed record to a log file of this process, from any
        number of threads without a lock, so that a SIGKILL a moment after
        it returns loses nothing. (Like the rest of the spool it is not
        fsynced: it survives the process, not a power cut.) The pair is
        not free for :meth:`claim`: the caller holds the item, and
        :meth:`ack` gives the id back once it is delivered. If this process ends
        first (killed, or at :meth:`close`), its unacked pairs are copied
        into the table as free rows, by :meth:`close` or by the next
        :meth:`claim` of any process.

        The id is negative: it names a log record, not a row.
        """
        try:
            encoded_key, data = self._codec.encode(key, item, "the item")
        except Unencodable as exc:
            message = f"spool {self.path}: {exc.reason}"
            raise SpoolError(message, path=self.path, kind="encode") from exc.__cause__
        return self._log.append(self._process(), encoded_key, item_body(data, self._codec.json))

    def claim(self, limit: int, *, timeout: Optional[float] = None) -> List[Row]:
        """Take up to *limit* of the oldest free rows for this process: ``[(row_id, key, item), ...]``.

        The rows stay in the file, owned by this spool, until :meth:`ack`
        deletes them or :meth:`release` frees them. No other process (or
        other spool on the same file) gets them meanwhile. Rows owned by a
        process that has died are freed first, so they are handed out
        again. A row whose data cannot be decoded is left in the file,
        never handed out, and logged. *timeout*: as for :meth:`put`.
        """
        check_limit(limit)
        deadline = deadline_after(timeout)
        proc = self._process()
        with self._db.hold(proc, deadline):
            owner = self._owners.own(proc)

            copied: List[Tuple[str, int]] = []  # the logs this claim copied into the table

            def take(conn: sqlite3.Connection) -> List[Tuple[int, str, Data]]:
                copied.clear()  # (a retried transaction starts afresh)
                self._owners.free_dead(proc, conn)
                copied.extend(self._log.import_dead(proc, conn))
                found = conn.execute(
                    "SELECT id, key, item FROM spool WHERE owner IS NULL ORDER BY id LIMIT ?", (limit,),
                ).fetchall()
                conn.executemany("UPDATE spool SET owner = ? WHERE id = ?", [(owner, r[0]) for r in found])
                return found

            found = self._db.transaction(proc, take)
            problems = [self._log.forget(proc, token) for token, _ in copied]
        # Logged outside the lock: a handler may write to this very spool.
        for (_, count), problem in zip(copied, problems):
            if count:
                log.info("spool %s: %d items a process left in its log go back in", self.path, count)
            if problem:
                log.warning("spool %s: %s", self.path, problem)
        rows: List[Row] = []
        bad: List[int] = []
        for row_id, key, data in found:
            try:
                rows.append((row_id, decode_key(key), self._codec.decode(data)))
            except Exception as exc:  # noqa: BLE001 - any loads failure quarantines the row
                log.warning(
                    "spool %s: row %d cannot be decoded (%s); it stays in the file and is not replayed",
                    self.path, row_id, type(exc).__name__,
                )
                bad.append(row_id)
        if bad:
            try:
                self._set_owner(bad, QUARANTINED, deadline)
            except SpoolError as exc:  # claimed by this spool meanwhile: never handed out by it
                log.warning("spool %s: could not mark undecodable rows: %s", self.path, exc)
        return rows

    def ack(self, row_ids: Iterable[int], *, timeout: Optional[float] = None) -> int:
        """Delete rows this spool claimed, or appended (they were delivered); return how many.

        *timeout*: as for :meth:`put`. The appended ids are acked first; a
        timeout after that leaves only the rows for a later ack.
        """
        deadline = deadline_after(timeout)
        ids = [int(row_id) for row_id in row_ids]
        logged = [row_id for row_id in ids if row_id < 0]
        rows = [row_id for row_id in ids if row_id > 0]
        done = self._log.ack(self._process(), logged, deadline) if logged else 0
        return done + self._change(rows, "DELETE FROM spool WHERE id = ? AND owner = ?", deadline)

    def release(self, row_ids: Iterable[int], *, timeout: Optional[float] = None) -> int:
        """Free rows this spool claimed, for a later :meth:`claim`; return how many were freed.

        Ids from :meth:`append` are not rows: to give up such an item, put
        it (:meth:`put`) and ack its id. *timeout*: as for :meth:`put`.
        """
        deadline = deadline_after(timeout)
        rows = [int(row_id) for row_id in row_ids]
        if any(row_id < 0 for row_id in rows):
            raise ValueError("release takes row ids from claim; an id from append is acked instead")
        return self._change(rows, "UPDATE spool SET owner = NULL WHERE id = ? AND owner = ?", deadline)

    def count(self, *, dead: bool = False, timeout: Optional[float] = None) -> int:
        """Rows in the file (free, claimed by anyone, or undecodable), plus this
        process's appended pairs not yet acked; with *dead*, the dead letters
        instead. *timeout*: as for :meth:`put`."""
        deadline = deadline_after(timeout)
        proc = self._process()
        table = "dead" if dead else "spool"
        with self._db.hold(proc, deadline):
            rows = int(self._db.run(
                proc, lambda conn: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0],
            ))
        return rows if dead else rows + self._log.unacked(proc, deadline)

    # -- dead letters ------------------------------------------------------------

    def bury(
        self,
        entries: Iterable[Tuple[int, Hashable, Any]],
        *,
        error: Optional[BaseException] = None,
        attempts: int = 0,
        timeout: Optional[float] = None,
    ) -> int:
        """Keep pairs given up as dead letters; return how many were made.

        Each entry is ``(id, key, item)``: a row this spool holds (claimed
        or parked) moves to the dead letters; an appended pair (a negative
        id) or an item that was never written (id 0) is written there, and
        an appended one is then acked. Rows this spool does not hold are
        left alone and not counted. *error* (its type and message, cut to
        2,000 characters), *attempts* and the time are kept with each.
        Dead letters are never handed out by :meth:`claim`: see
        :meth:`dead_letters`, :meth:`requeue` and :meth:`purge`.

        Items that cannot be encoded are refused as by :meth:`put` (kind
        ``"encode"``, after the others are written). *timeout*: as for
        :meth:`put`.
        """
        check_attempts(attempts)
        deadline = deadline_after(timeout)
        text = error_text(error)
        moved: List[int] = []
        written: List[Tuple[str, Data]] = []
        logged: List[int] = []
        refused: List[Tuple[int, Unencodable]] = []
        rows: List[int] = []
        for index, (row_id, key, item) in enumerate(entries):
            row_id = int(row_id)
            rows.append(row_id)
            if row_id > 0:
                moved.append(row_id)
                continue
            try:
                written.append(self._codec.encode(key, item, f"item {index}"))
            except Unencodable as exc:
                refused.append((index, exc))
                continue
            if row_id < 0:
                logged.append(row_id)
        made = 0
        if moved or written:
            proc = self._process()
            with self._db.hold(proc, deadline):
                owner = proc.token if proc.owner_fd != -1 else None
                made = self._db.transaction(
                    proc, lambda conn: dead.bury(conn, moved, written, owner, text, attempts),
                )
            if logged:  # in the table now: the log's copy must not come back as a free row
                self._log.ack(proc, logged, deadline)
        if refused:
            indices = {index for index, _ in refused}
            raise refusal(self.path, refused, [0 if n in indices else row for n, row in enumerate(rows)])
        return made

    def dead_letters(
        self, *, key: Any = ANY_KEY, limit: Optional[int] = None, timeout: Optional[float] = None,
    ) -> List[DeadLetter]:
        """The dead letters, oldest first: of *key* only if given, *limit* at most.

        One whose item cannot be decoded is listed with the stored data
        (str or bytes) as its item. *timeout*: as for :meth:`put`.
        """
        check_limit(limit, optional=True)
        deadline = deadline_after(timeout)
        encoded = key_filter(self._codec, key)
        proc = self._process()
        with self._db.hold(proc, deadline):
            found = self._db.run(proc, lambda conn: dead.select(conn, encoded, limit))
        letters: List[DeadLetter] = []
        for row_id, stored_key, data, text, attempts, at in found:
            try:
                item = self._codec.decode(data)
            except Exception:  # noqa: BLE001 - shown as stored: an operator still sees it
                item = data
            letters.append(DeadLetter(row_id, decode_key(stored_key), item, text, attempts, at))
        return letters

    def requeue(self, *, key: Any = ANY_KEY, timeout: Optional[float] = None) -> int:
        """Move dead letters (of *key* only, if given) back to the queue, as
        the newest free rows, in the order they were given up; return how
        many. The next :meth:`claim` (a dispatcher's next start) takes
        them. *timeout*: as for :meth:`put`."""
        deadline = deadline_after(timeout)
        encoded = key_filter(self._codec, key)
        proc = self._process()
        with self._db.hold(proc, deadline):
            moved: int = self._db.transaction(proc, lambda conn: dead.requeue(conn, encoded))
        return moved

    def purge(
        self, *, key: Any = ANY_KEY, older_than: Optional[float] = None, timeout: Optional[float] = None,
    ) -> int:
        """Delete dead letters: of *key* only, and given up at least
        *older_than* seconds ago, if given; return how many. *timeout*: as
        for :meth:`put`."""
        if older_than is not None:
            older_than = seconds("older_than", older_than, allow_zero=True)
        deadline = deadline_after(timeout)
        encoded = key_filter(self._codec, key)
        proc = self._process()
        with self._db.hold(proc, deadline):
            deleted: int = self._db.transaction(proc, lambda conn: dead.purge(conn, encoded, older_than))
        return deleted


    def close(self, *, timeout: Optional[float] = None) -> None:
        """Free the rows this spool still holds and close the file. Idempotent.

        Freed rows are handed out again by the next :meth:`claim`, here or
        in another process. Appended pairs not yet acked are copied into
        the table as free rows, and the log deleted.

        The spool is closed when this returns or raises. What it could not
        do (a lock held too long, a full disk) is left for later: the log
        files stay (one removed while in use is put back at its path), and
        the rows stay claimed, until the first claim after this process
        ended copies and frees them. Only a removed log file that cannot be
        put back either loses records, and the error says how many. Without
        *timeout* that is logged; with it, close waits at most that long
        for locks in all and then raises the :class:`SpoolError`
        (``"locked"`` for a timeout), for the caller to count.
        """
        if self._closed:
            return
        deadline = deadline_after(timeout)
        proc = self._proc
        failure: Optional[SpoolError] = None
        if proc.pid == os.getpid():
            # Before closing: the copy may have to open the file. From here
            # an append raises "closed" (one already writing may land in a
            # file being deleted: its caller still holds the item).
            failure = self._log.import_own(proc, deadline)
        self._db.closed = True
        unregister(self)
        if proc.pid != os.getpid():
            return
        try:
            # Leaving the block disconnects and drops the owner lock (see
            # Database.hold); if another thread holds the connection past the
            # deadline, that thread does it when it lets go.
            with self._db.hold(proc, deadline):
                if proc.owner_fd != -1 and proc.conn is not None:
                    self._db.run(proc, lambda conn: conn.execute(
                        "UPDATE spool SET owner = NULL WHERE owner = ?", (proc.token,),
                    ))
        except SpoolError as exc:
            # Not lost: a later claim frees the rows of an owner whose lock is gone.
            failure = failure or SpoolError(
                f"spool {self.path}: could not free claimed rows at close, a claim frees them once "
                f"this process has ended: {exc}", path=self.path, kind=exc.kind,
            )
        if failure is None:
            return
        if timeout is not None:
            raise failure
        log.warning("%s", failure)

    @property
    def _closed(self) -> bool:
        return self._db.closed

    def __enter__(self) -> SqliteSpool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mode = "durable" if self.durable else "spill"
        state = ", closed" if self._closed else ""
        return f"<SqliteSpool {self.path!r} mode={mode}{state}>"

    # -- helpers of the public operations --------------------------------------------

    def _process(self) -> Process:
        if self._closed:
            raise SpoolError(f"spool {self.path}: the spool is closed", path=self.path, kind="closed")
        proc = self._proc
        if proc.pid != os.getpid():  # forked without the hook having run
            proc = self._after_fork_in_child()
        return proc

    def _change(self, row_ids: Iterable[int], statement: str, deadline: Optional[float]) -> int:
        ids = [int(row_id) for row_id in row_ids]
        if not ids:
            return 0
        proc = self._process()
        with self._db.hold(proc, deadline):
            if proc.owner_fd == -1:
                return 0  # this process never claimed anything
            token = proc.token

            def change(conn: sqlite3.Connection) -> int:
                return sum(conn.execute(statement, (row_id, token)).rowcount for row_id in ids)

            changed: int = self._db.transaction(proc, change)
            return changed

    def _set_owner(self, row_ids: List[int], owner: str, deadline: Optional[float]) -> None:
        proc = self._process()
        with self._db.hold(proc, deadline):
            self._db.transaction(
                proc, lambda conn: conn.executemany(
                    "UPDATE spool SET owner = ? WHERE id = ?", [(owner, row_id) for row_id in row_ids],
                ),
            )

    # -- fork --------------------------------------------------------------------

    def _before_fork(self) -> bool:
        """Close the idle connection, so that the child inherits no SQLite state.

        Returns whether it holds proc.lock, which the parent releases after the fork.
        """
        proc = self._proc
        if self._closed or proc.pid != os.getpid() or not proc.lock.acquire(timeout=self.timeout):
            return False
        if proc.lock.entries:  # forked from inside an operation of this thread (a handler)
            proc.lock.release()
            return False
        self._db.disconnect(proc)
        return True

    def _after_fork_in_child(self) -> Process:
        old = self._proc
        if old.conn is not None:
            # Busy at the fork (the parent's lock was not free in time): the
            # copy is unusable here and must not be closed either, which
            # could touch the parent's locks. Keep it referenced forever.
            abandon(old.conn)
        proc = self._proc = Process()
        if old.owner_fd != -1:
            os.close(old.owner_fd)  # the lock stays the parent's; the descriptor is not needed
        for segment in old.segments.values():
            os.close(segment.fd)  # the parent's log: appended to and acked by the parent only
        return proc


if TYPE_CHECKING:

    def _implements_spool(spool: SqliteSpool) -> Spool:
        return spool  # mypy checks SqliteSpool against the contract here
