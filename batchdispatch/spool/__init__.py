"""A durable spool: items kept in an SQLite file until they are delivered.

.. code-block:: python

    from batchdispatch.spool import SqliteSpool

    with SqliteSpool("events.db") as spool:
        spool.put([(None, {"event": "signup"}), (None, {"event": "login"})])
        rows = spool.claim(100)            # [(row_id, key, item), ...], oldest first
        deliver([item for _, _, item in rows])
        spool.ack([row_id for row_id, _, _ in rows])

The file holds ``(key, item)`` pairs, each encoded as JSON (or with the
*dumps*/*loads* pair you give), in insertion order. Any number of threads
and processes may use one file: :meth:`SqliteSpool.claim` hands each row to
exactly one of them, and the rows of a process that died are handed out
again. Nothing is ever unpickled: reading a spool does not run code.

Only the standard library is used (:mod:`sqlite3`, :mod:`fcntl`); the
module is POSIX only, like the rest of batchdispatch.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sqlite3
import threading
import time
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Hashable,
    Iterable,
    Iterator,
    List,
    Optional,
    Set,
    Tuple,
    Union,
)

from .._spool_protocol import Spool
from .._validate import seconds, spool_path
from ..exceptions import SpoolError
from ._connection import APPLICATION_ID as APPLICATION_ID
from ._connection import INSERT, Database
from ._connection import SCHEMA_VERSION as SCHEMA_VERSION
from ._encoding import Codec, Data, Pair, Row, Unencodable, decode_key
from ._errors import cause, kind_of
from ._owners import QUARANTINED, Owners
from ._process import Process, abandon, register, unregister
from ._records import (
    ack_payload,
    ident,
    is_copy,
    item_body,
    item_payload,
    parse_log,
    read_all,
    read_log,
    record,
    unacked_items,
    write_all,
    write_copy,
)
from ._waits import deadline_after, holding

__all__ = ["Data", "Spool", "SqliteSpool"]

log = logging.getLogger(__name__)

#: A write-ahead log segment is closed for new records past this size.
LOG_SEGMENT_BYTES = 4 * 1024 * 1024
#: The most seconds a copy of a removed segment waits for the appends still writing to it.
_SETTLE_SECONDS = 1.0
#: How a log segment is made: read back through its descriptor if it is removed while open.
_SEGMENT_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC

#: How many refused items an encode error of put names; the rest are counted.
_REFUSALS_SHOWN = 3

class _Segment:
    """One file of a process's write-ahead log: ``<path>-log-<token>-<number>``.

    Records are appended with one ``os.write`` each, from any thread, with
    no lock: ``O_APPEND`` makes each land whole after the others. Each
    durable item gets a sequence number here (``next(counter)`` is atomic
    under the GIL); its id for the caller encodes the segment and the
    number, as a negative int, so it never meets a row id.

    Each number handed out is settled once its record is written, or once
    its appender gave it up (the segment was dead, or the write failed):
    when every number is settled, no append is writing to the segment.
    """

    __slots__ = (
        "acked", "counter", "dead", "fd", "given_up", "ident", "number", "path", "retired", "settled", "size",
    )

    def __init__(self, number: int, path: str, fd: int) -> None:
        self.number = number
        self.path = path
        self.fd = fd  # read and written (O_APPEND): a segment removed while open is read back through it
        self.ident = ident(os.fstat(fd))  # the file fd is open on, to notice it removed from path
        self.counter = itertools.count()
        self.settled = itertools.count()  # numbers written or given up: one next() each
        self.given_up = itertools.count()  # numbers whose record was not written: never acked
        self.size = 0  # bytes written, about (threads add without a lock): for rotation only
        self.acked: Set[int] = set()
        self.retired = False  # a newer segment takes the new records
        # Being deleted (or the spool closed): an appender that took its
        # number after this was set must not write here. See _drop_segment_if_done.
        self.dead = False

    def handed_out(self) -> int:
        """Sequence numbers handed out so far: records written, being written, or given up."""
        return _peek(self.counter)

    def unacked(self) -> int:
        """Records written (or being written) and not acked; never too few, even while appends run."""
        given_up = _peek(self.given_up)  # first: a number given up was handed out before
        return self.handed_out() - given_up - len(self.acked)

    def is_settled(self) -> bool:
        """Whether no append is between taking a number here and writing its record."""
        settled = _peek(self.settled)  # first: a number taken after this read is not settled in it
        return settled >= self.handed_out()


class SqliteSpool:
    """Keeps ``(key, item)`` pairs in an SQLite file until they are delivered.

    .. code-block:: python

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
        rows: List[Optional[Tuple[str, Data]]] = []
        refused: List[Tuple[int, Unencodable]] = []
        for index, (key, item) in enumerate(pairs):
            try:
                rows.append(self._codec.encode(key, item, f"item {index}"))
            except Unencodable as exc:
                rows.append(None)
                refused.append((index, exc))
        written = [row for row in rows if row is not None]
        ids: List[int] = []
        if written:
            proc = self._process()
            with self._db.hold(proc, deadline):
                ids = self._db.insert(proc, written, owner=self._owners.own(proc) if claim else None)
        if not refused:
            return ids
        new_ids = iter(ids)
        aligned = [0 if row is None else next(new_ids) for row in rows]
        raise self._refusal(refused, aligned) from refused[0][1].__cause__

    def _refusal(self, refused: List[Tuple[int, Unencodable]], rows: List[int]) -> SpoolError:
        shown = "; ".join(exc.reason for _, exc in refused[:_REFUSALS_SHOWN])
        more = len(refused) - _REFUSALS_SHOWN
        if more > 0:
            shown += f"; and {more} more"
        written = len(rows) - len(refused)
        outcome = f"the other {written} were written" if written else "nothing was written"
        return SpoolError(
            f"spool {self.path}: {len(refused)} of {len(rows)} items refused ({outcome}): {shown}",
            path=self.path, kind="encode", refused=[index for index, _ in refused], rows=rows,
        )

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
        body = item_body(data, self._codec.json)
        proc = self._process()
        segment = proc.segment
        while True:
            if segment is None or segment.retired or segment.dead:
                segment = self._log_segment(proc)
            seq = next(segment.counter)
            # Take a number, then look: a segment being deleted (or copied
            # back) is marked dead before its numbers are counted, so either
            # that count sees this number (and waits for it) or this sees dead.
            if not segment.dead:
                break
            next(segment.given_up)
            next(segment.settled)
        try:
            written = self._write_record(segment, item_payload(seq, encoded_key, body))
        except BaseException:
            next(segment.given_up)  # its caller gets no id, so never acks it
            raise
        finally:
            next(segment.settled)
        segment.size += written
        if segment.size > LOG_SEGMENT_BYTES:
            self._log_segment(proc, rotate=segment)
        return -((segment.number << 32) | seq) - 1

    def claim(self, limit: int, *, timeout: Optional[float] = None) -> List[Row]:
        """Take up to *limit* of the oldest free rows for this process: ``[(row_id, key, item), ...]``.

        The rows stay in the file, owned by this spool, until :meth:`ack`
        deletes them or :meth:`release` frees them. No other process (or
        other spool on the same file) gets them meanwhile. Rows owned by a
        process that has died are freed first, so they are handed out
        again. A row whose data cannot be decoded is left in the file,
        never handed out, and logged. *timeout*: as for :meth:`put`.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an int of at least 1, got {limit!r}")
        deadline = deadline_after(timeout)
        proc = self._process()
        with self._db.hold(proc, deadline):
            owner = self._owners.own(proc)

            copied: List[Tuple[str, int]] = []  # the logs this claim copied into the table

            def take(conn: sqlite3.Connection) -> List[Tuple[int, str, Data]]:
                copied.clear()  # (a retried transaction starts afresh)
                self._owners.free_dead(proc, conn)
                copied.extend(self._import_dead_logs(proc, conn))
                found = conn.execute(
                    "SELECT id, key, item FROM spool WHERE owner IS NULL ORDER BY id LIMIT ?", (limit,),
                ).fetchall()
                conn.executemany("UPDATE spool SET owner = ? WHERE id = ?", [(owner, r[0]) for r in found])
                return found

            found = self._db.transaction(proc, take)
            problems = [self._forget_log(proc, token) for token, _ in copied]
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
        done = self._ack_logged(logged, deadline) if logged else 0
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

    def count(self, *, timeout: Optional[float] = None) -> int:
        """Rows in the file (free, claimed by anyone, or undecodable), plus this
        process's appended pairs not yet acked. *timeout*: as for :meth:`put`."""
        deadline = deadline_after(timeout)
        proc = self._process()
        with self._db.hold(proc, deadline):
            rows = int(self._db.run(
                proc, lambda conn: conn.execute("SELECT count(*) FROM spool").fetchone()[0],
            ))
        with holding(proc.log_lock, deadline, "the log", self.path):
            logged = sum(s.unacked() for s in list(proc.segments.values()))
        return rows + logged

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
            failure = self._import_own_log(proc, deadline)
        self._db.closed = True
        unregister(self)
        if proc.pid != os.getpid():
            return
        try:
            # Leaving the block disconnects and drops the owner lock (see
            # _connection); if another thread holds the connection past the
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

    @contextlib.contextmanager
    def _log_held(self, proc: Process, deadline: Optional[float]) -> Iterator[None]:
        """Hold proc.log_lock (see _holding), counting how deep: a check of the
        files that may rewrite a segment runs only at depth 1, never in a
        signal handler that came in halfway through another."""
        with holding(proc.log_lock, deadline, "the log", self.path):
            proc.log_depth += 1
            try:
                yield
            finally:
                proc.log_depth -= 1

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

    # -- the write-ahead log of durable appends ------------------------------------
    #
    # append writes a record to a log file of this process rather than a row,
    # because a commit costs several times an os.write, and the threads
    # waiting for a shared commit must each be woken, which on a busy
    # machine costs more again. The records' format is _records's.
    #
    # A segment past LOG_SEGMENT_BYTES is retired: new records go to the next
    # one, and it is deleted once every record in it is acked. At close, or
    # at the first claim (in any process) after this process ended, the
    # unacked records are copied into the table as free rows and the files
    # deleted; the imported table makes sure that happens once.

    def _log_segment(self, proc: Process, rotate: Optional[_Segment] = None) -> _Segment:
        """The segment appends go to: opened on first use, or a new one after *rotate*.

        A signal handler that appends may come in here while its own thread
        is in here (or elsewhere under log_lock, acking, say): the lock is
        reentrant, a segment's number comes from an atomic counter, and the
        state is put right at the end, whatever ran in between: the newest
        segment is the current one, every other is retired.
        """
        with self._log_held(proc, None):
            if proc.closing:
                raise SpoolError(f"spool {self.path}: the spool is closed", path=self.path, kind="closed")
            current = proc.segment
            if current is not None and not current.retired and not current.dead and current is not rotate:
                return current  # another thread opened or rotated it meanwhile
            if proc.owner_fd == -1:
                self._own_for_log(proc)  # locked before any log exists: a log never looks dead while we live
            elif proc.log_depth == 1:
                self._check_log(proc)  # a segment removed: copied back; a directory removed: the open fails
                current = proc.segment
                if current is not None and not current.retired and not current.dead and current is not rotate:
                    return current  # the check retired the segment appends went to, and opened this one
            number = next(proc.numbers)
            path = f"{self.path}-log-{proc.token}-{number}"
            try:
                fd = os.open(path, _SEGMENT_FLAGS, 0o600)
            except OSError as exc:
                raise SpoolError(
                    f"spool {self.path}: cannot create the log {path}: {cause(exc)}",
                    path=self.path, kind=kind_of(exc, self.path, removed=True),
                ) from exc
            segment = proc.segments[number] = _Segment(number, path, fd)
            # A handler may come in between any two lines below and open a
            # newer segment (and retire this one): each line reads the state
            # afresh, and the worst outcome is one rotation too many.
            newest: Optional[_Segment] = None
            while newest is None:  # None: dropped by a handler between max and get
                newest = proc.segments.get(max(proc.segments))
            proc.segment = newest
            for other in list(proc.segments.values()):
                if other is not proc.segment and not other.retired:
                    other.retired = True
                    self._drop_segment_if_done(proc, other)
            return segment

    def _own_for_log(self, proc: Process) -> None:
        """Create the owner lock for the first segment; call with proc.log_lock.

        Never waits for this thread itself: a signal handler whose thread
        is inside the spool's connection gets "locked" (its caller keeps
        the item), and any wait is bounded by the spool's timeout.
        """
        if proc.holder == threading.get_ident():
            raise SpoolError(
                f"spool {self.path}: the first append came from a signal handler (or finalizer) of the "
                "thread that is using the spool", path=self.path, kind="locked",
            )
        with self._db.hold(proc, time.monotonic() + self.timeout):
            self._owners.own(proc)

    def _write_record(self, segment: _Segment, payload: bytes) -> int:
        """Append one record to *segment* with one write; return its size."""
        whole = record(payload)
        try:
            written = os.write(segment.fd, whole)
        except OSError as exc:
            raise SpoolError(
                f"spool {self.path}: cannot write to the log {segment.path}: {cause(exc)}",
                path=self.path, kind=kind_of(exc, self.path),
            ) from exc
        if written != len(whole):  # a full disk cut it short: its checksum will not match
            raise SpoolError(
                f"spool {self.path}: the log {segment.path} took {written} of {len(whole)} bytes",
                path=self.path, kind="full",
            )
        return written

    def _ack_logged(self, ids: List[int], deadline: Optional[float]) -> int:
        by_segment: Dict[int, List[int]] = {}
        for row_id in ids:
            n = -row_id - 1
            by_segment.setdefault(n >> 32, []).append(n & 0xFFFFFFFF)
        proc = self._process()
        done = 0
        with self._log_held(proc, deadline):
            for number, seqs in by_segment.items():
                segment = proc.segments.get(number)
                if segment is None:
                    continue  # not appended by this process, or copied into the table already
                fresh = sorted(set(seqs) - segment.acked)
                if not fresh:
                    continue
                self._write_record(segment, ack_payload(fresh))
                segment.acked.update(fresh)
                done += len(fresh)
                self._drop_segment_if_done(proc, segment)
            # Once per ack call (a delivered batch), not per append: a stat per segment.
            if proc.log_depth == 1:
                self._check_log(proc, deadline)
        return done

    def _check_log(self, proc: Process, deadline: Optional[float] = None) -> None:
        """Notice segments removed from their path while open, and copy each back; call with proc.log_lock.

        A removed segment is still open here, so nothing is lost: appends
        move on to a new segment (the removed one is retired, and marked
        dead), the copy waits for the ones still writing to it, then its
        content is read through the descriptor into a temporary file that
        is renamed to the path, and the segment's descriptor is moved
        there (only acks, taken under proc.log_lock, write to it from then
        on). Raises SpoolError when a copy cannot be made ("removed": the
        directory is gone); no partial copy is left, the segment stays open
        and is read through its descriptor at close, and the next check
        tries again. *deadline* bounds the wait for appends still writing.
        """
        for segment in list(proc.segments.values()):
            try:
                if ident(os.stat(segment.path)) == segment.ident:
                    continue
            except FileNotFoundError:
                pass
            except OSError:
                continue  # cannot tell
            self._restore_segment(proc, segment, deadline)

    def _restore_segment(self, proc: Process, segment: _Segment, deadline: Optional[float]) -> None:
        """Copy *segment*, removed from its path, back there (see _check_log); call with proc.log_lock.

        A signal handler of this thread may ack, and drop the segment, between
        any two lines: the copy reads through a descriptor of its own, and a
        segment found dropped is not put back.
        """
        if proc.segment is segment:
            try:
                self._log_segment(proc, rotate=segment)  # appends go to a new segment from here
            except SpoolError as exc:
                raise SpoolError(
                    f"spool {self.path}: the log {segment.path} was removed while in use and cannot be made "
                    f"again ({exc}); its records are kept through the open file until close",
                    path=self.path, kind=exc.kind,
                ) from exc
        segment.dead = True  # for good: an appender that still takes a number here gives it up
        if not self._settle(segment, deadline):
            return  # an append is still writing to it: copied by a later check, or read at close
        if proc.segments.get(segment.number) is not segment:
            return  # every record acked, and the segment deleted meanwhile
        source = -1
        try:
            source = os.dup(segment.fd)
            content = read_all(source)
            mine = write_copy(segment.path, content)
            try:
                shared = os.dup(mine)
                old, segment.fd = segment.fd, shared
                if old == -1:  # dropped by a signal handler meanwhile: gone for good
                    segment.fd = -1
                    os.close(shared)
                    with contextlib.suppress(OSError):
                        os.unlink(segment.path)
                    return
                os.close(old)
                # Acks a handler of this thread wrote to the old file after the read above.
                write_all(mine, read_all(source, len(content)))
                segment.ident = ident(os.fstat(mine))
            finally:
                os.close(mine)
        except OSError as exc:
            raise SpoolError(
                f"spool {self.path}: the log {segment.path} was removed while in use and cannot be copied "
                f"back ({cause(exc)}); its records are kept through the open file, for close or a later try",
                path=self.path, kind=kind_of(exc, self.path, removed=True),
            ) from exc
        finally:
            if source != -1:
                os.close(source)
        log.warning(
            "spool %s: the log %s was removed while in use; its records were copied to a new file there",
            self.path, segment.path,
        )

    @staticmethod
    def _settle(segment: _Segment, deadline: Optional[float]) -> bool:
        """Wait until no append is writing to *segment*, marked dead; False if one still is
        after _SETTLE_SECONDS, or at *deadline*.

        An append holds a number for the time of one os.write; it may be
        held longer only by a signal handler that interrupted it, in which
        case the wait ends at its bound and the caller tries again later.
        """
        end = time.monotonic() + _SETTLE_SECONDS
        if deadline is not None:
            end = min(end, deadline)
        pause = 0.0001
        while not segment.is_settled():
            if time.monotonic() >= end:
                return False
            time.sleep(pause)  # lets the appender's thread finish its write
            pause = min(pause * 2, 0.01)
        return True

    def _drop_segment_if_done(self, proc: Process, segment: _Segment) -> None:
        """Delete a retired segment whose records are all acked; call with proc.log_lock.

        Appenders hold no lock: one may have read this segment before it was
        retired and not yet taken its number. So it is marked dead first and
        counted again: an appender that took a number before the mark is
        seen by the count (the segment stays), one after it sees the mark
        (and goes to the current segment).
        """
        if not segment.retired or segment.unacked() > 0:
            return
        was_dead = segment.dead  # dead for good once copied back (see _restore_segment)
        segment.dead = True
        if segment.unacked() > 0:
            segment.dead = was_dead  # an appender got in: its record is on the way
            return
        if proc.segments.pop(segment.number, None) is segment:  # once, even if entered again
            fd, segment.fd = segment.fd, -1
            os.close(fd)
            try:
                os.unlink(segment.path)
            except OSError:
                pass  # copied by a later claim: every record in it is acked, so nothing comes back

    def _import_own_log(self, proc: Process, deadline: Optional[float]) -> Optional[SpoolError]:
        """At close: copy this process's unacked appends into the table as free rows, delete the log.

        Each segment is read through its descriptor, which holds its records
        even if the file was removed from its path. Returns what failed, or
        None. Not lost then: the files stay (a removed one is copied back to
        its path first), and the first claim after this spool's owner lock
        is gone copies them; only a removed segment that cannot be copied
        back either is lost, and the error says so.
        """
        proc.closing = True  # no new segment from here on, even if the lock is not had in time
        failure: Optional[BaseException] = None
        lost: List[str] = []
        try:
            with self._log_held(proc, deadline):
                segments = sorted(proc.segments.values(), key=lambda segment: segment.number)
                for segment in segments:
                    segment.dead = True  # an append that takes a number now gives up
                for segment in segments:
                    # One still writing after the wait has not returned: its caller keeps the item.
                    self._settle(segment, deadline)
                try:
                    pairs = [
                        pair for segment in segments
                        for pair in parse_log(read_all(segment.fd), segment.acked)
                    ]
                    if pairs:
                        with self._db.hold(proc, deadline):
                            self._db.insert(proc, pairs, owner=None)
                except (SpoolError, OSError) as exc:
                    failure = exc
                for segment in segments:
                    if failure is not None:
                        problem = self._keep_for_claim(segment)
                        if problem:
                            lost.append(problem)
                    os.close(segment.fd)
                    if failure is None:
                        with contextlib.suppress(OSError):
                            os.unlink(segment.path)
                proc.segments.clear()
                proc.segment = None
        except SpoolError as exc:
            failure = exc
        if failure is None:
            return None
        message = (
            f"spool {self.path}: could not copy the log into the table at close, its files stay for "
            f"a claim once this process has ended: {cause(failure)}"
        )
        if lost:
            message += "; but " + "; ".join(lost)
        return SpoolError(
            message, path=self.path,
            kind=failure.kind if isinstance(failure, SpoolError) else kind_of(failure, self.path),
        )

    def _keep_for_claim(self, segment: _Segment) -> Optional[str]:
        """Put *segment* back at its path if it was removed from there, for a later claim;
        call at close with proc.log_lock. Returns what was lost, or None."""
        with contextlib.suppress(OSError):
            if ident(os.stat(segment.path)) == segment.ident:
                return None
        try:
            content = read_all(segment.fd)
        except OSError as exc:
            return (
                f"the log {segment.path} was removed while in use and cannot be read ({cause(exc)}): "
                f"its {segment.unacked()} unacked items are lost"
            )
        try:
            os.close(write_copy(segment.path, content, keep_partial=True))
        except OSError as exc:
            unacked = unacked_items(content, segment.acked)
            try:
                with open(segment.path, "rb") as f:  # what a partial copy holds, in whole records
                    kept = unacked_items(f.read(), segment.acked)
            except OSError:
                kept = {}
            lost = len(unacked.keys() - kept.keys())
            return (
                f"the log {segment.path} was removed while in use and cannot be put back whole "
                f"({cause(exc)}): {lost} of its {len(unacked)} unacked items are lost"
            )
        return None

    def _dead_logs(self, proc: Process) -> Dict[str, List[str]]:
        """The log files of owners that no longer live, by token, oldest segment first."""
        directory, base = os.path.split(self.path)
        prefix = f"{base}-log-"
        found: Dict[str, List[Tuple[int, str]]] = {}
        for name in os.listdir(directory):
            if not name.startswith(prefix):
                continue
            token, _, number = name[len(prefix):].rpartition("-")
            leftover = is_copy(number)  # a copy its owner did not finish: deleted with its log
            if not token or not (number.isdigit() or leftover):
                continue
            files = found.setdefault(token, [])
            if not leftover:
                files.append((int(number), os.path.join(directory, name)))
        return {
            token: [path for _, path in sorted(files)]
            for token, files in found.items()
            if token != proc.token and not self._owners.alive(token)
        }

    def _import_dead_logs(self, proc: Process, conn: sqlite3.Connection) -> List[Tuple[str, int]]:
        """Copy the unacked appends of dead owners into the table, as free rows;
        call inside claim's transaction. Returns (token, items copied) for the
        tokens whose files may now go."""
        copied = []
        for token, paths in self._dead_logs(proc).items():
            count = 0
            if conn.execute("SELECT 1 FROM imported WHERE token = ?", (token,)).fetchone() is None:
                pairs = [pair for path in paths for pair in read_log(path)]
                conn.executemany(INSERT, [(key, data, None) for key, data in pairs])
                conn.execute("INSERT INTO imported (token) VALUES (?)", (token,))
                count = len(pairs)
            copied.append((token, count))
        return copied

    def _forget_log(self, proc: Process, token: str) -> Optional[str]:
        """Delete the log files of *token*, copied into the table already; call with proc.lock.

        Returns a problem to log (after the lock), or None.
        """
        directory, base = os.path.split(self.path)
        prefix = f"{base}-log-{token}-"
        try:
            for name in os.listdir(directory):
                if name.startswith(prefix) and (name[len(prefix):].isdigit() or is_copy(name[len(prefix):])):
                    os.unlink(os.path.join(directory, name))
        except OSError as exc:
            # The imported table keeps it from being copied a second time.
            return f"could not delete a copied log: {cause(exc)}"
        self._db.run(proc, lambda conn: conn.execute("DELETE FROM imported WHERE token = ?", (token,)))
        return None

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


def _peek(counter: Iterator[int]) -> int:
    """The next number of an itertools.count, without taking it."""
    return int(repr(counter)[6:-1])  # "count(N)"
