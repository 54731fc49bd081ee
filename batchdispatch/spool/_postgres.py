"""PostgresSpool: the Spool contract on a PostgreSQL table that a fleet of hosts shares.

Each process (a host of the fleet, a gunicorn worker) is an owner with a
lease on the server: it renews the lease every third of *lease* seconds
from a daemon thread, and when a process dies, the pairs it held become
free once its lease runs out (at once for the owners of the same host,
see :mod:`._identity`), for any other process to claim. Claims take the
oldest free rows with ``SELECT ... FOR UPDATE SKIP LOCKED``, one claimer
at a time (an advisory lock keeps the order per key). Durable appends of
concurrent threads are written together (:mod:`._group_commit`).

Every operation runs in one transaction on this process's connection,
with ``statement_timeout`` and ``lock_timeout`` set from the caller's
deadline; a server that cannot be reached is a :class:`SpoolError` of
kind ``"unreachable"``, and the dispatcher goes on in memory. The tables
are described in :mod:`._pg_tables`.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from typing import Any, Callable, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple

import psycopg
from psycopg import errors as pg_errors

from .._validate import seconds
from ..exceptions import SpoolError
from . import _process
from ._cutoff import Cutoff, connect_by
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
)
from ._group_commit import GroupCommit
from ._identity import dead_here, new_token
from ._pg_connect import connect_until
from ._pg_tables import QUARANTINED, Tables, split_data
from ._process import ConnectionLock
from ._waits import ANSWER_FLOOR, deadline_after

log = logging.getLogger("batchdispatch.spool")


#: Ends an operation that the server has not answered by its deadline (see :mod:`._cutoff`).
_CUTOFF = Cutoff("batchdispatch-spool-cutoff")

#: Up to this many pairs are inserted as a VALUES list (one statement per
#: size, which psycopg prepares once it is used often), more as arrays with
#: ``unnest``. Dumping the arrays costs psycopg about 100 us of CPU per
#: statement, more than the VALUES list of a group commit's few pairs.
VALUES_ROWS = 16


class _Owner:
    """What one process holds for a PostgresSpool: its connection, token and lease."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.token = new_token()
        self.lock = ConnectionLock()  # the connection: one operation at a time
        self.conn: Optional[psycopg.Connection[Any]] = None
        self.timeout_ms = -1  # the session's lock_timeout, as last set
        self.leased = False  # the owner row exists: this process holds (or may hold) rows
        self.heartbeat: Optional[threading.Thread] = None
        self.stop = threading.Event()
        # Transactions (their xid) of claims that failed after taking rows: see claim.
        self.lost_claims: List[str] = []


class PostgresSpool:
    """Keeps ``(key, item)`` pairs in a PostgreSQL table until they are delivered; shared by a fleet.

    .. code-block:: python

        from batchdispatch import BackgroundDispatcher
        from batchdispatch.http import HttpSink
        from batchdispatch.spool import PostgresSpool

        spool = PostgresSpool("postgresql://app@db.internal/app", durable=True)
        dispatcher = BackgroundDispatcher(HttpSink("https://events.example.com/ingest"), spool=spool)

    :param conninfo: a libpq connection string or ``postgresql://`` URL.
        Its password never appears in a repr, a log line or an error.
    :param table: the table's name (``schema.table`` allowed); the tables
        ``<table>``, ``<table>_owners`` and ``<table>_dead`` are created
        on first use.
    :param durable: the mode a dispatcher uses this spool in (see
        :class:`~batchdispatch.spool.Spool`): with True, ``enqueue``
        returns once the item is stored on the server.
    :param lease: seconds an owner's claims outlive it: a process that
        stops renewing its lease (killed, or cut off from the server) has
        its pairs freed that long after its last renewal.
    :param dumps, loads: as for :class:`~batchdispatch.spool.SqliteSpool`.
    :param timeout: seconds an operation waits at most, for the server and
        its locks, when its caller gives no *timeout*.
    :param name: a name for log messages. None: the table's.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        conninfo: str,
        *,
        table: str = "batchdispatch_spool",
        durable: bool = False,
        lease: float = 30.0,
        dumps: Optional[Callable[[Any], Data]] = None,
        loads: Optional[Callable[[Data], Any]] = None,
        timeout: float = 5.0,
        name: Optional[str] = None,
    ) -> None:
        if not isinstance(conninfo, str):
            raise TypeError(f"conninfo must be a str, got {type(conninfo).__name__}")
        try:
            params = psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError:
            raise ValueError("conninfo is not a valid libpq connection string or URL") from None
        self._conninfo = conninfo
        self._tables = Tables(table)
        self.durable = bool(durable)
        self.lease = seconds("lease", lease)
        #: How often a dispatcher on this spool claims again, for the pairs of
        #: owners that died (see the Spool contract's *Polling*).
        self.poll_interval = min(self.lease / 3, 5.0)
        self.timeout = seconds("timeout", timeout, allow_zero=True)
        self._codec = Codec(dumps, loads)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str or None, got {type(name).__name__}")
        where = f"{params.get('host', 'localhost')}:{params.get('port', '5432')}/{params.get('dbname', '')}"
        #: Where the spool lives, without credentials: in reprs, logs and errors.
        self.path = f"postgresql://{where}#{table}"
        self.name = name or table
        self._closed = False
        self._created = False
        self._proc = _Owner()
        self._values_inserts: Dict[int, bytes] = {}  # see _values_insert
        self._appends: GroupCommit[Tuple[str, Data]] = GroupCommit(self._write_appends, self.path)
        _process.register(self)
        _CUTOFF.attach()

    def __repr__(self) -> str:
        mode = "durable" if self.durable else "spill"
        return f"<PostgresSpool {self.path!r} mode={mode}{', closed' if self._closed else ''}>"

    def __enter__(self) -> PostgresSpool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the contract ------------------------------------------------------------------

    def append(self, key: Hashable, item: Any) -> int:
        """Store one pair on the server, held by this owner; return its id (negative) once it is stored.

        Concurrent appends of this process share round trips (group commit).
        """
        self._owner()  # "closed" before the encoding
        try:
            encoded = self._codec.encode(key, item, "the item")
        except Unencodable as exc:
            message = f"spool {self.path}: {exc.reason}"
            raise SpoolError(message, path=self.path, kind="encode") from exc.__cause__
        return -self._appends.submit(encoded)

    def _write_appends(self, pairs: List[Tuple[str, Data]]) -> List[int]:
        return self._insert(pairs, owner=True, appended=True, deadline=deadline_after(None))

    def put(
        self, pairs: Iterable[Pair], *, claim: bool = False, timeout: Optional[float] = None,
    ) -> List[int]:
        """Write *pairs* in one transaction; return their ids, in order (see the Spool contract)."""
        deadline = deadline_after(timeout)
        encoded = Encoded(self._codec, pairs)
        written = encoded.written
        ids = self._insert(written, owner=claim, appended=False, deadline=deadline) if written else []
        if not encoded.refused:
            return ids
        raise encoded.refusal(self.path, ids) from encoded.cause

    def claim(self, limit: int, *, timeout: Optional[float] = None) -> List[Row]:
        """Take up to *limit* of the oldest free pairs for this owner, after freeing those of dead owners
        (and those of a claim of this owner's whose answer was lost: see below)."""
        check_limit(limit)
        deadline = deadline_after(timeout)
        t = self._tables
        proc = self._owner()
        lost = list(proc.lost_claims)
        taken_by: List[str] = []  # the transaction that took rows: known before its commit

        def take(conn: psycopg.Connection[Any], token: str) -> List[Tuple[Any, ...]]:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (t.lock_key,))
            if lost:  # rows that a claim took and never handed over: free again, in their place
                conn.execute(t.q(
                    "UPDATE {spool} SET owner = NULL"
                    " WHERE owner = %s AND NOT appended AND xmin::text = ANY(%s)"
                ), (token, lost))
            self._free_dead(conn)
            rows = conn.execute(t.q(
                "UPDATE {spool} SET owner = %s WHERE id IN (SELECT id FROM {spool} WHERE owner IS NULL"
                " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED)"
                " RETURNING id, key, item, item_bytes, xmin::text"
            ), (token, limit)).fetchall()
            if rows:
                taken_by[:] = [rows[0][4]]
            return rows

        try:
            found = sorted(self._run(take, deadline, owner=True, transaction=True))
        except SpoolError:
            # Failed once the rows were taken: at the commit, whose answer may be lost after
            # the server made it. Those rows are this owner's but not in anyone's hands; the
            # next claim frees them (if the commit was made, or waits for it to end).
            if taken_by and proc is self._proc:
                proc.lost_claims.append(taken_by[0])
            raise
        if lost:
            proc.lost_claims[:] = [xid for xid in proc.lost_claims if xid not in lost]
        rows: List[Row] = []
        bad: List[int] = []
        for row_id, key, text, data, _ in found:
            try:
                rows.append((row_id, decode_key(key), self._codec.decode(text if data is None else data)))
            except Exception as exc:  # noqa: BLE001 - any loads failure quarantines the row
                log.warning("spool %s: row %d cannot be decoded (%s); it is kept and not replayed",
                            self.path, row_id, type(exc).__name__)
                bad.append(row_id)
        if bad:
            self._run(lambda conn, token: conn.execute(
                t.q("UPDATE {spool} SET owner = %s WHERE id = ANY(%s)"), (QUARANTINED, bad)), deadline)
        return rows

    def ack(self, row_ids: Iterable[int], *, timeout: Optional[float] = None) -> int:
        """Delete pairs this owner holds (claimed, parked or appended); return how many."""
        ids = sorted({abs(int(row_id)) for row_id in row_ids})
        return self._change(ids, "DELETE FROM {spool} WHERE id = ANY(%s) AND owner = %s", timeout)

    def release(self, row_ids: Iterable[int], *, timeout: Optional[float] = None) -> int:
        """Free claimed or parked pairs this owner holds, each keeping its place; return how many."""
        ids = [int(row_id) for row_id in row_ids]
        if any(row_id < 0 for row_id in ids):
            raise ValueError("release takes ids from claim or put; an id from append is acked instead")
        statement = "UPDATE {spool} SET owner = NULL WHERE id = ANY(%s) AND owner = %s AND NOT appended"
        return self._change(sorted(set(ids)), statement, timeout)

    def bury(
        self,
        entries: Iterable[Tuple[int, Hashable, Any]],
        *,
        error: Optional[BaseException] = None,
        attempts: int = 0,
        timeout: Optional[float] = None,
    ) -> int:
        """Make pairs dead letters (see the Spool contract); return how many were made."""
        check_attempts(attempts)
        deadline = deadline_after(timeout)
        text = error_text(error)
        moved: List[int] = []
        written: List[Tuple[str, Any, Any]] = []
        refused: List[int] = []
        for index, (row_id, key, item) in enumerate(entries):
            if int(row_id) != 0:
                moved.append(abs(int(row_id)))
                continue
            try:
                encoded_key, data = self._codec.encode(key, item, f"item {index}")
            except Unencodable:
                refused.append(index)
                continue
            written.append((encoded_key, *split_data(data)))
        t = self._tables

        def bury(conn: psycopg.Connection[Any], token: str) -> int:
            made = 0
            if moved:
                made += conn.execute(t.q(
                    "WITH gone AS (DELETE FROM {spool} WHERE id = ANY(%s) AND owner = %s"
                    " RETURNING id, key, item, item_bytes)"
                    " INSERT INTO {dead} (key, item, item_bytes, error, attempts)"
                    " SELECT key, item, item_bytes, %s, %s FROM gone ORDER BY id"
                ), (moved, token, text, attempts)).rowcount
            if written:
                keys, texts, datas = (list(column) for column in zip(*written))
                made += conn.execute(t.q(
                    "INSERT INTO {dead} (key, item, item_bytes, error, attempts)"
                    " SELECT k, i, b, %s, %s FROM unnest(%s::text[], %s::text[], %s::bytea[])"
                    " WITH ORDINALITY AS u(k, i, b, n) ORDER BY n"
                ), (text, attempts, keys, texts, datas)).rowcount
            return made

        made = self._run(bury, deadline, transaction=True) if moved or written else 0
        if refused:
            raise SpoolError(
                f"spool {self.path}: {len(refused)} items given up cannot be encoded as dead letters",
                path=self.path, kind="encode", refused=refused,
            )
        return int(made)

    # -- dead letters, for operators -------------------------------------------------------

    def dead_letters(
        self, *, key: Any = ANY_KEY, limit: Optional[int] = None, timeout: Optional[float] = None,
    ) -> List[DeadLetter]:
        """The dead letters, oldest first: of *key* only if given, *limit* at most."""
        check_limit(limit, optional=True)
        where, params = self._key_filter(key)
        found = self._run(lambda conn, token: conn.execute(self._tables.q(
            "SELECT id, key, item, item_bytes, error, attempts, extract(epoch FROM at)"
            f" FROM {{dead}}{where} ORDER BY id LIMIT %s"
        ), (*params, limit)).fetchall(), deadline_after(timeout))
        letters = []
        for row_id, stored_key, text, data, error, attempts, at in found:
            raw = text if data is None else data
            try:
                item = self._codec.decode(raw)
            except Exception:  # noqa: BLE001 - shown as stored
                item = raw
            letters.append(DeadLetter(row_id, decode_key(stored_key), item, error, attempts, float(at)))
        return letters

    def requeue(self, *, key: Any = ANY_KEY, timeout: Optional[float] = None) -> int:
        """Move dead letters back to the queue as its newest free rows; return how many."""
        where, params = self._key_filter(key)
        return int(self._run(lambda conn, token: conn.execute(self._tables.q(
            f"WITH back AS (DELETE FROM {{dead}}{where} RETURNING id, key, item, item_bytes)"
            " INSERT INTO {spool} (key, item, item_bytes) SELECT key, item, item_bytes FROM back ORDER BY id"
        ), params).rowcount, deadline_after(timeout)))

    def purge(
        self, *, key: Any = ANY_KEY, older_than: Optional[float] = None, timeout: Optional[float] = None,
    ) -> int:
        """Delete dead letters (of *key*, given up at least *older_than* seconds ago, if given)."""
        where, params = self._key_filter(key)
        if older_than is not None:
            older_than = seconds("older_than", older_than, allow_zero=True)
            where += (" AND" if where else " WHERE") + " at <= now() - make_interval(secs => %s)"
            params = (*params, older_than)
        return int(self._run(lambda conn, token: conn.execute(
            self._tables.q(f"DELETE FROM {{dead}}{where}"), params,
        ).rowcount, deadline_after(timeout)))

    def count(self, *, dead: bool = False, timeout: Optional[float] = None) -> int:
        """Pairs stored (free or held, appended ones included); with *dead*, the dead letters."""
        table = "{dead}" if dead else "{spool}"
        def count(conn: psycopg.Connection[Any], token: str) -> int:
            found = conn.execute(self._tables.q(f"SELECT count(*) FROM {table}")).fetchone()
            return int(found[0]) if found is not None else 0

        return int(self._run(count, deadline_after(timeout)))

    def close(self, *, timeout: Optional[float] = None) -> None:
        """Free what this owner holds (appended pairs as the newest), end its lease, close. Idempotent."""
        if self._closed:
            return
        proc = self._proc
        try:
            if proc.pid == os.getpid() and proc.leased:
                self._run(lambda conn, token: self._free_owner(conn, token), deadline_after(timeout),
                          transaction=True)
        except SpoolError as exc:
            log.warning("spool %s: could not free its rows at close (its lease will): %s", self.path, exc)
        finally:
            self._closed = True
            proc.stop.set()
            _process.unregister(self)
            _CUTOFF.detach()
            if proc.pid == os.getpid():
                self._drop(proc)

    # -- inside ------------------------------------------------------------------------

    def _key_filter(self, key: Any) -> Tuple[str, Tuple[Any, ...]]:
        encoded = key_filter(self._codec, key)
        return ("", ()) if encoded is None else (" WHERE key = %s", (encoded,))

    def _insert(
        self, pairs: Sequence[Tuple[str, Data]], *, owner: bool, appended: bool, deadline: Optional[float],
    ) -> List[int]:
        if len(pairs) <= VALUES_ROWS:
            def insert(conn: psycopg.Connection[Any], token: str) -> List[int]:
                held = token if owner else None
                params: List[Any] = []
                for key, data in pairs:
                    params += (key, *split_data(data), held, appended)
                found = conn.execute(self._values_insert(conn, len(pairs)), params).fetchall()
                return sorted(row[0] for row in found)  # ids follow the input order
        else:
            keys = [key for key, _ in pairs]
            texts, datas = zip(*(split_data(data) for _, data in pairs))
            statement = self._tables.q(
                "INSERT INTO {spool} (key, item, item_bytes, owner, appended)"
                " SELECT k, i, b, %s, %s FROM unnest(%s::text[], %s::text[], %s::bytea[])"
                " WITH ORDINALITY AS u(k, i, b, n) ORDER BY n RETURNING id"
            )

            def insert(conn: psycopg.Connection[Any], token: str) -> List[int]:
                found = conn.execute(
                    statement, (token if owner else None, appended, keys, list(texts), list(datas)),
                ).fetchall()
                return sorted(row[0] for row in found)  # ids follow the input order

        result: List[int] = self._run(insert, deadline, owner=owner)
        return result

    def _values_insert(self, conn: psycopg.Connection[Any], rows: int) -> bytes:
        """The INSERT of *rows* pairs as a VALUES list, rendered once per size."""
        statement = self._values_inserts.get(rows)
        if statement is None:
            row = "(%s, %s, %s, %s, %s)"
            statement = self._values_inserts[rows] = self._tables.q(
                "INSERT INTO {spool} (key, item, item_bytes, owner, appended) VALUES "
                + ", ".join([row] * rows) + " RETURNING id"
            ).as_bytes(conn)
        return statement

    def _change(self, ids: List[int], statement: str, timeout: Optional[float]) -> int:
        deadline = deadline_after(timeout)
        if not ids:
            return 0
        if not self._proc.leased and self._proc.pid == os.getpid():
            self._owner()
            return 0  # this process never held anything
        return int(self._run(
            lambda conn, token: conn.execute(self._tables.q(statement), (ids, token)).rowcount, deadline,
        ))

    def _free_dead(self, conn: psycopg.Connection[Any]) -> None:
        """Free the pairs of owners whose lease ran out, or that died on this host. In claim's transaction."""
        t = self._tables
        owners = [row[0] for row in conn.execute(t.q(
            "SELECT DISTINCT owner FROM {spool} WHERE owner IS NOT NULL AND owner <> %s"
            " AND owner NOT IN (SELECT token FROM {owners} WHERE expires > now())"
        ), (QUARANTINED,))]
        owners += [row[0] for row in conn.execute(t.q(
            "SELECT token FROM {owners} WHERE expires > now() AND token <> %s"
        ), (self._proc.token,)) if dead_here(row[0])]
        for token in owners:
            self._free_owner(conn, token)

    def _free_owner(self, conn: psycopg.Connection[Any], token: str) -> None:
        """Free what *token* holds: claimed and parked rows keep their place, appended ones
        become the newest, in the order they were appended; then forget the owner."""
        t = self._tables
        conn.execute(t.q("UPDATE {spool} SET owner = NULL WHERE owner = %s AND NOT appended"), (token,))
        old = [row[0] for row in conn.execute(
            t.q("SELECT id FROM {spool} WHERE owner = %s AND appended ORDER BY id"), (token,))]
        if old:
            new = [row[0] for row in conn.execute(
                "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s)",
                (self._tables.name, len(old)),
            )]
            conn.execute(t.q(
                "UPDATE {spool} AS s SET id = m.new, owner = NULL, appended = false"
                " FROM unnest(%s::bigint[], %s::bigint[]) AS m(old, new) WHERE s.id = m.old"
            ), (old, sorted(new)))
        conn.execute(t.q("DELETE FROM {owners} WHERE token = %s"), (token,))

    def _owner(self) -> _Owner:
        if self._closed:
            raise SpoolError(f"spool {self.path}: the spool is closed", path=self.path, kind="closed")
        proc = self._proc
        if proc.pid != os.getpid():  # forked without the hook having run
            proc = self._after_fork_in_child()
        return proc

    def _run(
        self, work: Callable[[psycopg.Connection[Any], str], Any], deadline: Optional[float],
        owner: bool = False, transaction: bool = False,
    ) -> Any:
        """Run *work(conn, token)*, bounded by *deadline* and the spool's timeout: one
        statement on its own (autocommit: one round trip), or with *transaction*
        several in one. With *owner*, this process's lease is taken first (it is
        about to hold rows)."""
        proc = self._owner()
        now = time.monotonic()
        left = self.timeout
        if deadline is not None and deadline - now < left:
            left = max(0.0, deadline - now)
        bound = now + left
        answer_by = now + max(left, ANSWER_FLOOR)  # the server's answer, however close the deadline
        # The server ends its own waits first, leaving its answer time to come back (half
        # of what is left, 0.5 s at most): a lock held elsewhere is "locked", and the
        # connection is kept. The same each time with the spool's own timeout, so set
        # once per connection.
        ms = max(1, int((left - min(left / 2, 0.5)) * 1000))
        statement_ms = max(ms, int(ANSWER_FLOOR * 500))
        lock = proc.lock
        if not lock.acquire(timeout=max(0.0, bound - time.monotonic())):
            raise SpoolError(
                f"spool {self.path}: another thread of this process held the spool past the timeout",
                path=self.path, kind="locked",
            )
        if lock.entries:
            lock.release()
            raise SpoolError(
                f"spool {self.path}: called again by the thread that is using it (from a signal "
                "handler or a finalizer)", path=self.path, kind="locked",
            )
        lock.entries = 1
        watch = None
        try:
            conn = self._connect(proc, answer_by)
            with _CUTOFF.by(conn.fileno(), answer_by) as watch:
                if not self._created:
                    self._create_tables(conn)
                # Set for the session, and only when it changes: no round trip for
                # it most of the time.
                if proc.timeout_ms != ms:
                    conn.execute(
                        "SELECT set_config('lock_timeout', %s, false),"
                        " set_config('statement_timeout', %s, false)",
                        (str(ms), str(statement_ms)),
                    )
                    proc.timeout_ms = ms
                if owner and not proc.leased:
                    self._take_lease(conn, proc)
                if not transaction:
                    result = work(conn, proc.token)
                else:
                    with conn.transaction():
                        result = work(conn, proc.token)
            if watch.cut:  # done just as it was cut: the connection is no use any more
                self._drop(proc)
            return result
        except psycopg.Error as exc:
            raise self._fault(proc, exc, cut=watch is not None and watch.cut) from exc
        except TimeoutError as exc:  # no connection made by the deadline
            raise SpoolError(
                f"spool {self.path}: the server did not answer within the timeout",
                path=self.path, kind="unreachable",
            ) from exc
        finally:
            lock.entries = 0
            lock.release()

    def _connect(self, proc: _Owner, bound: float) -> psycopg.Connection[Any]:
        if proc.conn is not None and not proc.conn.closed:
            return proc.conn
        conninfo = self._conninfo
        proc.conn = connect_by(
            lambda left: psycopg.connect(conninfo, autocommit=True, connect_timeout=max(2, math.ceil(left))),
            bound, _close, f"batchdispatch-spool-connect:{self.name}",
            lambda deadline: connect_until(conninfo, deadline),
        )
        proc.timeout_ms = -1
        return proc.conn

    def _create_tables(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self._tables.lock_key,))
            for statement in self._tables.schema:
                conn.execute(statement)
        self._created = True

    def _take_lease(self, conn: psycopg.Connection[Any], proc: _Owner) -> None:
        conn.execute(self._tables.q(
            "INSERT INTO {owners} (token, expires) VALUES (%s, now() + make_interval(secs => %s))"
            " ON CONFLICT (token) DO UPDATE SET expires = excluded.expires"
        ), (proc.token, self.lease))
        proc.leased = True
        heartbeat = threading.Thread(
            target=self._renew, args=(proc,), name=f"batchdispatch-spool-lease:{self.name}", daemon=True,
        )
        try:
            heartbeat.start()
        except RuntimeError:  # at interpreter exit (3.12+): the process ends before the lease would
            return
        proc.heartbeat = heartbeat

    def _renew(self, proc: _Owner) -> None:
        """The heartbeat: renew the lease every third of it until closed (or forked away)."""
        while not proc.stop.wait(self.lease / 3):
            if proc.pid != os.getpid():
                return
            try:
                renewed = self._run(lambda conn, token: conn.execute(self._tables.q(
                    "UPDATE {owners} SET expires = now() + make_interval(secs => %s) WHERE token = %s"
                ), (self.lease, token)).rowcount, None)
                if not renewed:
                    log.warning(
                        "spool %s: this process's lease had run out and its rows were freed; other "
                        "processes may deliver them too", self.path,
                    )
                    self._run(lambda conn, token: self._take_lease_again(conn, token), None)
            except SpoolError as exc:
                log.warning("spool %s: could not renew the lease: %s", self.path, exc)

    def _take_lease_again(self, conn: psycopg.Connection[Any], token: str) -> None:
        conn.execute(self._tables.q(
            "INSERT INTO {owners} (token, expires) VALUES (%s, now() + make_interval(secs => %s))"
            " ON CONFLICT (token) DO UPDATE SET expires = excluded.expires"
        ), (token, self.lease))

    def _fault(self, proc: _Owner, exc: psycopg.Error, *, cut: bool = False) -> SpoolError:
        sqlstate = getattr(exc, "sqlstate", None) or ""
        if cut:
            self._drop(proc)
            return SpoolError(
                f"spool {self.path}: the server did not answer within the timeout",
                path=self.path, kind="unreachable",
            )
        if isinstance(exc, (pg_errors.LockNotAvailable, pg_errors.QueryCanceled)):
            kind = "locked"
        elif isinstance(exc, pg_errors.DiskFull):
            kind = "full"
        elif isinstance(exc, pg_errors.ReadOnlySqlTransaction):
            kind = "read_only"
        elif isinstance(exc, psycopg.OperationalError) or sqlstate.startswith("08"):
            kind = "unreachable"
        else:
            kind = "io"
        if proc.conn is not None and (proc.conn.closed or proc.conn.broken or kind == "unreachable"):
            self._drop(proc)
        reason = type(exc).__name__ if kind == "unreachable" else f"{type(exc).__name__}: {exc}"
        return SpoolError(f"spool {self.path}: {reason}", path=self.path, kind=kind)

    @staticmethod
    def _drop(proc: _Owner) -> None:
        """Close this process's connection; the next operation makes a new one."""
        if proc.conn is not None:
            conn, proc.conn = proc.conn, None
            _close(conn)

    # -- fork ------------------------------------------------------------------------------

    def _before_fork(self) -> bool:
        """Close the idle connection before a fork, so that the child inherits no session."""
        proc = self._proc
        if proc.pid != os.getpid() or not proc.lock.acquire(timeout=self.timeout):
            return False
        self._drop(proc)
        return True

    def _after_fork_in_child(self) -> _Owner:
        """The child is a new owner: the parent's connection, rows and lease stay the parent's."""
        old = self._proc
        if old.conn is not None:  # forked mid-operation: never touch the parent's session
            _detach(old.conn)
        self._proc = _Owner()
        self._appends.reset_after_fork()
        return self._proc


def _close(conn: psycopg.Connection[Any]) -> None:
    try:
        conn.close()
    except psycopg.Error:
        pass


def _detach(conn: psycopg.Connection[Any]) -> None:
    """In a forked child, a connection inherited from the parent: point its socket at
    /dev/null, so that closing it (or its finalizer) never sends a Terminate on the
    parent's session, and keep it referenced."""
    try:
        fd = conn.fileno()
    except psycopg.Error:
        fd = -1
    if fd >= 0:
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
    _process.abandon(conn)
