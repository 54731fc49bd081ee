"""The write-ahead log of durable appends: each process's own log files, until their items are acked.

append writes a record to a log file of this process rather than a row,
because a commit costs several times an os.write, and the threads
waiting for a shared commit must each be woken, which on a busy
machine costs more again.

A segment past LOG_SEGMENT_BYTES is retired: new records go to the next
one, and it is deleted once every record in it is acked. At close, or
at the first claim (in any process) after this process ended, the
unacked records are copied into the table as free rows and the files
deleted; the imported table makes sure that happens once.

This module owns the segments (opened, rotated, deleted once acked, put
back if removed while in use), appending and acking records, and copying
unacked records into the table: this process's at close, a dead owner's
at the next claim of any process. The records' format is in _records.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Dict, Iterator, List, Optional, Set, Tuple

from ..exceptions import SpoolError
from ._connection import INSERT, Database
from ._errors import cause, kind_of
from ._owners import Owners
from ._records import (
    ack_payload,
    ident,
    is_copy,
    item_payload,
    parse_log,
    read_all,
    read_log,
    record,
    unacked_items,
    write_all,
    write_copy,
)
from ._waits import holding

if TYPE_CHECKING:
    from ._process import Process

log = logging.getLogger("batchdispatch.spool")

#: A write-ahead log segment is closed for new records past this size.
LOG_SEGMENT_BYTES = 4 * 1024 * 1024
#: The most seconds a copy of a removed segment waits for the appends still writing to it.
_SETTLE_SECONDS = 1.0
#: How a log segment is made: read back through its descriptor if it is removed while open.
_SEGMENT_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC


class Segment:
    """One file of a process's write-ahead log: ``<path>-log-<token>-<number>``.

    Records are appended with one ``os.write`` each, from any thread, with
    no lock: ``O_APPEND`` makes each land whole after the others. Each
    durable item gets a sequence number here (``next(counter)`` is atomic
    under the GIL); its id for the caller encodes the segment and the
    number, as a negative int, so it never meets a row id.

    An appender shows its number in *writing* from just after taking it
    until its record is written (then the number moves to *pending*) or
    given up (the segment was dead, or the write failed). ``set.add`` and
    ``set.discard`` are atomic under the GIL as ``next`` is, so the sets
    are read without a lock: when *writing* is empty, no append is writing
    to the segment, and *writing* and *pending* together hold every record
    not acked.
    """

    __slots__ = (
        "acked", "counter", "dead", "fd", "ident", "number", "path", "pending", "retired", "size", "writing",
    )

    def __init__(self, number: int, path: str, fd: int) -> None:
        self.number = number
        self.path = path
        self.fd = fd  # read and written (O_APPEND): a segment removed while open is read back through it
        self.ident = ident(os.fstat(fd))  # the file fd is open on, to notice it removed from path
        self.counter = itertools.count()
        self.writing: Set[int] = set()  # numbers taken whose record is not written, nor given up, yet
        self.pending: Set[int] = set()  # numbers whose record is written and not acked
        self.size = 0  # bytes written, about (threads add without a lock): for rotation only
        self.acked: Set[int] = set()  # numbers whose ack record is written
        self.retired = False  # a newer segment takes the new records
        # Being deleted (or the spool closed): an appender that showed its
        # number after this was set must not write here. See _drop_segment_if_done.
        self.dead = False

    def unacked(self) -> int:
        """Records written (or being written) and not acked; never too few, even while appends run."""
        # writing first: an appender adds its number to pending before it
        # takes it out of writing, so one that moves meanwhile is counted.
        being_written = len(self.writing)
        return being_written + len(self.pending)

    def is_settled(self) -> bool:
        """Whether no append is between showing its number here and writing its record."""
        return not self.writing


class WriteAheadLog:
    """The log files of the spool at *path*; its state in each process is on Process."""

    def __init__(self, path: str, timeout: float, db: Database, owners: Owners) -> None:
        self.path = path
        self.timeout = timeout
        self._db = db
        self._owners = owners

    def append(self, proc: Process, key: str, body: bytes) -> int:
        """Write one item's record (its encoded *key* and *body*); return its id, negative, once written.

        One ``os.write``, from any number of threads without a lock.
        """
        segment = proc.segment
        while True:
            if segment is None or segment.retired or segment.dead:
                segment = self.open_segment(proc)
            seq = next(segment.counter)
            segment.writing.add(seq)
            # Show the number, then look: a segment being deleted (or copied
            # back) is marked dead before its numbers are counted, so either
            # that count sees this number (and waits for it) or this sees dead.
            if not segment.dead:
                break
            segment.writing.discard(seq)
        try:
            written = self.write_record(segment, item_payload(seq, key, body))
            segment.pending.add(seq)  # not if the write failed: its caller gets no id, so never acks it
        finally:
            segment.writing.discard(seq)
        segment.size += written
        if segment.size > LOG_SEGMENT_BYTES:
            self.open_segment(proc, rotate=segment)
        return -((segment.number << 32) | seq) - 1

    def unacked(self, proc: Process, deadline: Optional[float]) -> int:
        """Items appended by this process and not acked yet."""
        with holding(proc.log_lock, deadline, "the log", self.path):
            return sum(s.unacked() for s in list(proc.segments.values()))

    @contextlib.contextmanager
    def held(self, proc: Process, deadline: Optional[float]) -> Iterator[None]:
        """Hold proc.log_lock (see holding), counting how deep: a check of the
        files that may rewrite a segment runs only at depth 1, never in a
        signal handler that came in halfway through another."""
        with holding(proc.log_lock, deadline, "the log", self.path):
            proc.log_depth += 1
            try:
                yield
            finally:
                proc.log_depth -= 1

    def open_segment(self, proc: Process, rotate: Optional[Segment] = None) -> Segment:
        """The segment appends go to: opened on first use, or a new one after *rotate*.

        A signal handler that appends may come in here while its own thread
        is in here (or elsewhere under log_lock, acking, say): the lock is
        reentrant, a segment's number comes from an atomic counter, and the
        state is put right at the end, whatever ran in between: the newest
        segment is the current one, every other is retired.
        """
        with self.held(proc, None):
            if proc.closing:
                raise SpoolError(f"spool {self.path}: the spool is closed", path=self.path, kind="closed")
            current = proc.segment
            if current is not None and not current.retired and not current.dead and current is not rotate:
                return current  # another thread opened or rotated it meanwhile
            if proc.owner_fd == -1:
                self._own(proc)  # locked before any log exists: a log never looks dead while we live
            elif proc.log_depth == 1:
                self.check(proc)  # a segment removed: copied back; a directory removed: the open fails
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
            segment = proc.segments[number] = Segment(number, path, fd)
            # A handler may come in between any two lines below and open a
            # newer segment (and retire this one): each line reads the state
            # afresh, and the worst outcome is one rotation too many.
            newest: Optional[Segment] = None
            while newest is None:  # None: dropped by a handler between max and get
                newest = proc.segments.get(max(proc.segments))
            proc.segment = newest
            for other in list(proc.segments.values()):
                if other is not proc.segment and not other.retired:
                    other.retired = True
                    self._drop_segment_if_done(proc, other)
            return segment

    def _own(self, proc: Process) -> None:
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

    def write_record(self, segment: Segment, payload: bytes) -> int:
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

    def ack(self, proc: Process, ids: List[int], deadline: Optional[float]) -> int:
        """Ack the appended *ids* this process holds; return how many were not acked before."""
        by_segment: Dict[int, List[int]] = {}
        for row_id in ids:
            n = -row_id - 1
            by_segment.setdefault(n >> 32, []).append(n & 0xFFFFFFFF)
        done = 0
        with self.held(proc, deadline):
            for number, seqs in by_segment.items():
                segment = proc.segments.get(number)
                if segment is None:
                    continue  # not appended by this process, or copied into the table already
                fresh = sorted(set(seqs) & segment.pending)
                if not fresh:
                    continue
                self.write_record(segment, ack_payload(fresh))
                segment.acked.update(fresh)
                segment.pending.difference_update(fresh)
                done += len(fresh)
                self._drop_segment_if_done(proc, segment)
            # Once per ack call (a delivered batch), not per append: a stat per segment.
            if proc.log_depth == 1:
                self.check(proc, deadline)
        return done

    def check(self, proc: Process, deadline: Optional[float] = None) -> None:
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

    def _restore_segment(self, proc: Process, segment: Segment, deadline: Optional[float]) -> None:
        """Copy *segment*, removed from its path, back there (see check); call with proc.log_lock.

        A signal handler of this thread may ack, and drop the segment, between
        any two lines: the copy reads through a descriptor of its own, and a
        segment found dropped is not put back.
        """
        if proc.segment is segment:
            try:
                self.open_segment(proc, rotate=segment)  # appends go to a new segment from here
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
    def _settle(segment: Segment, deadline: Optional[float]) -> bool:
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

    def _drop_segment_if_done(self, proc: Process, segment: Segment) -> None:
        """Delete a retired segment whose records are all acked; call with proc.log_lock.

        Appenders hold no lock: one may have read this segment before it was
        retired and not yet shown its number. So it is marked dead first and
        counted again: an appender that showed a number before the mark is
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

    def import_own(self, proc: Process, deadline: Optional[float]) -> Optional[SpoolError]:
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
            with self.held(proc, deadline):
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

    def _keep_for_claim(self, segment: Segment) -> Optional[str]:
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

    def import_dead(self, proc: Process, conn: sqlite3.Connection) -> List[Tuple[str, int]]:
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

    def forget(self, proc: Process, token: str) -> Optional[str]:
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
