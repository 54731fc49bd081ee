"""RedisSpool: the Spool contract on a Redis stream that a fleet of hosts shares.

Pairs are entries of one stream with a consumer group (the keys and the
Lua scripts are in :mod:`._redis_scripts`): ``XADD`` appends, a claim
takes the oldest free entries with ``XPENDING`` and ``XCLAIM``, an ack is
``XACK`` and ``XDEL``, dead letters go to a second stream. Each process is
an owner with a lease, a key it renews every third of *lease* seconds
from a daemon thread; the entries of an owner whose lease ran out (at
once on this host, when its process is gone: see :mod:`._identity`) are
freed by the next claim of any process. Every change is one script, so
atomic on the server; durable appends of concurrent threads share one
script call (:mod:`._group_commit`).

Why leases, not ``XAUTOCLAIM``: it takes entries by how long they have
been idle, which says nothing of whether their owner lives; a live owner
that retries a batch for longer than the lease (the endpoint is down)
would lose its entries to another host and both would deliver them.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import secrets
import threading
import time
from typing import Any, Callable, Dict, Hashable, Iterable, List, Optional, Tuple, TypeVar, Union

import redis

from .._validate import seconds
from ..exceptions import SpoolError
from . import _process
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
from ._process import ConnectionLock
from ._redis_scripts import ACK, ADD, BURY, CLAIM, FREE, FREE_OWNERS, GROUP, RELEASE, REQUEUE, UNDECODABLE
from ._waits import ANSWER_FLOOR, deadline_after

log = logging.getLogger("batchdispatch.spool")

#: Bits of an entry id's sequence number in the int ids of the contract.
_SEQ_BITS = 22


F = TypeVar("F", bound=Callable[..., Any])


def _bounded(method: F) -> F:
    """Run an operation with the client whose socket timeouts end by its *timeout*'s deadline."""

    @functools.wraps(method)
    def bounded(self: RedisSpool, *args: Any, timeout: Optional[float] = None, **kwargs: Any) -> Any:
        deadline = deadline_after(timeout)
        previous = getattr(self._local, "client", None)
        self._local.client = self._client_for(deadline) if previous is None else previous
        try:
            return method(self, *args, timeout=timeout, **kwargs)
        finally:
            self._local.client = previous

    return bounded  # type: ignore[return-value]


def to_int(entry_id: Union[str, bytes]) -> int:
    """A stream id ``ms-seq`` as a positive int that keeps its order."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    if int(seq) >= 1 << _SEQ_BITS:
        raise SpoolError(f"stream id {text} is past what the spool's ids can hold", path="", kind="io")
    return (int(ms) << _SEQ_BITS) | int(seq)


def to_entry(number: int) -> str:
    return f"{number >> _SEQ_BITS}-{number & ((1 << _SEQ_BITS) - 1)}"


def _type_of(data: Data) -> Tuple[bytes, bytes]:
    """Stored data as (bytes, type tag): JSON text 'j', other text 's', bytes 'b'."""
    if isinstance(data, str):
        return data.encode(), b"j"
    return bytes(data), b"b"


class _Owner:
    """What one process holds for a RedisSpool: its token and lease."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.token = new_token()
        self.lock = ConnectionLock()  # what the fork hooks take; redis-py's pool is its own
        self.leased = False
        self.stop = threading.Event()
        # The group commit's own connection, used by one writer at a time
        # (made on first use, outside the pool's books: closed with the owner).
        self.appender: Any = None
        # Tags of claims that failed, and until when later claims free what carries them.
        self.lost_claims: Dict[int, float] = {}


class RedisSpool:
    """Keeps ``(key, item)`` pairs in a Redis stream until they are delivered; shared by a fleet.

    .. code-block:: python

        from batchdispatch import BackgroundDispatcher
        from batchdispatch.http import HttpSink
        from batchdispatch.spool import RedisSpool

        spool = RedisSpool("redis://cache.internal:6379/0", "myapp-events", durable=True)
        dispatcher = BackgroundDispatcher(HttpSink("https://events.example.com/ingest"), spool=spool)

    :param client: a ``redis.Redis`` (its pool serves every thread, and a
        forked child gets connections of its own), or a ``redis://`` URL,
        whose password never appears in a repr, a log line or an error.
    :param name: the spool's name: its keys are ``{name}:q``,
        ``{name}:dead`` and ``{name}:lease:<owner>``, in one cluster slot.
    :param durable: with True, ``enqueue`` returns once the item is in
        Redis (in its memory: what a Redis restart keeps is Redis's own
        persistence, ``appendonly``, to configure on the server).
    :param lease: seconds an owner's entries outlive it (see
        :class:`~batchdispatch.spool.PostgresSpool`).
    :param dumps, loads: as for :class:`~batchdispatch.spool.SqliteSpool`.
    :param timeout: for a URL: the socket timeouts of the client made from it.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        client: Union[str, Any],
        name: str,
        *,
        durable: bool = False,
        lease: float = 30.0,
        dumps: Optional[Callable[[Any], Data]] = None,
        loads: Optional[Callable[[Data], Any]] = None,
        timeout: float = 5.0,
    ) -> None:
        if not isinstance(name, str) or not name or any(c in name for c in "{}\r\n "):
            raise ValueError(
                f"name must be a non-empty str without braces, spaces or line breaks, got {name!r}"
            )
        self.timeout = seconds("timeout", timeout, allow_zero=True)
        self._owns_client = isinstance(client, str)  # closed with the spool; a client given is the caller's
        if isinstance(client, str):
            try:
                self._client = redis.Redis.from_url(
                    client, socket_timeout=self.timeout or None, socket_connect_timeout=self.timeout or None,
                )
            except ValueError:
                raise ValueError("client must be a redis:// URL or a redis.Redis") from None
        elif isinstance(client, redis.Redis):
            self._client = client
        else:
            raise TypeError(f"client must be a redis.Redis or a redis:// URL, got {type(client).__name__}")
        kwargs = self._client.connection_pool.connection_kwargs
        where = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
        #: Where the spool lives, without credentials: in reprs, logs and errors.
        self.path = f"redis://{where}#{name}"
        self.name = name
        self.durable = bool(durable)
        self.lease = seconds("lease", lease)
        #: How often a dispatcher on this spool claims again, for the entries of
        #: owners that died (see the Spool contract's *Polling*).
        self.poll_interval = min(self.lease / 3, 5.0)
        self._codec = Codec(dumps, loads)
        self._q = f"{{{name}}}:q"
        self._dead = f"{{{name}}}:dead"
        self._scripts = {
            script: (text, hashlib.sha1(text.encode()).hexdigest())
            for script, text in (("add", ADD), ("ack", ACK), ("release", RELEASE), ("free", FREE_OWNERS),
                                 ("claim", CLAIM), ("bury", BURY), ("requeue", REQUEUE))
        }
        self._grouped = False
        self._closed = False
        self._local = threading.local()  # the client of the operation running on each thread
        self._quick: Dict[float, Any] = {}  # clients with shorter socket timeouts, for close deadlines
        self._quick_lock = threading.Lock()
        self._proc = _Owner()
        self._appends: GroupCommit[Tuple[str, Data]] = GroupCommit(self._write_appends, self.path)
        _process.register(self)

    def __repr__(self) -> str:
        mode = "durable" if self.durable else "spill"
        return f"<RedisSpool {self.path!r} mode={mode}{', closed' if self._closed else ''}>"

    def __enter__(self) -> RedisSpool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the contract ------------------------------------------------------------------

    def append(self, key: Hashable, item: Any) -> int:
        """Store one pair in Redis, held by this owner; return its id (negative) once it is there."""
        self._owner()
        try:
            encoded = self._codec.encode(key, item, "the item")
        except Unencodable as exc:
            message = f"spool {self.path}: {exc.reason}"
            raise SpoolError(message, path=self.path, kind="encode") from exc.__cause__
        return -self._appends.submit(encoded)

    def _write_appends(self, pairs: List[Tuple[str, Data]]) -> List[int]:
        """The group commit's write: the add script on the owner's own connection.

        Straight on a connection, not through ``Redis.execute_command``: that
        path costs about 50 us of CPU per command (redis-py 8), more than the
        round trip itself, and it is paid once per group. One writer at a time
        uses it (the group commit's leader); a broken one is retried as the
        client would, on a fresh connection.
        """
        proc = self._owner()
        conn = proc.appender
        if conn is None:
            conn = proc.appender = self._client.connection_pool.make_connection()

        def on_conn(*command: Any) -> Any:
            def once() -> Any:
                conn.send_packed_command(conn.pack_command(*command), check_health=False)
                return conn.read_response()

            return conn.retry.call_with_retry(once, lambda _: conn.disconnect())  # then on a fresh one

        try:
            return self._add(pairs, owner=True, appended=True, execute=on_conn)
        finally:
            if self._closed:  # it ran while the spool closed: leave no connection behind
                conn.disconnect()

    @_bounded
    def put(
        self, pairs: Iterable[Pair], *, claim: bool = False, timeout: Optional[float] = None,
    ) -> List[int]:
        """Add *pairs* in one script; return their ids, in order (see the Spool contract)."""
        encoded = Encoded(self._codec, pairs)
        written = encoded.written
        ids = self._add(written, owner=claim, appended=False) if written else []
        if not encoded.refused:
            self._owner()
            return ids
        raise encoded.refusal(self.path, ids) from encoded.cause

    @_bounded
    def claim(self, limit: int, *, timeout: Optional[float] = None) -> List[Row]:
        """Take up to *limit* of the oldest free pairs, after freeing those of dead owners
        (and those of a claim of this owner's whose answer was lost: see below)."""
        check_limit(limit)
        proc = self._lease()
        now = time.monotonic()
        for old, until in list(proc.lost_claims.items()):
            if until <= now:
                del proc.lost_claims[old]
        tag = 2 + secrets.randbelow(1 << 48)  # 1 is an append's count; exact as a Lua number

        def take() -> Any:
            self._free_dead()
            return self._script("claim", [self._q], [GROUP, FREE, proc.token, limit, tag, *proc.lost_claims])

        try:
            found = self._call(take)
        except SpoolError:
            # The script may have run with its answer lost: what it took is this owner's
            # and in no one's hands. Later claims free what carries its tag, for a lease
            # (a script stuck in a stalled server may run after the next claim).
            if proc is self._proc:
                proc.lost_claims[tag] = now + self.lease
            raise
        rows: List[Row] = []
        bad: List[str] = []
        for entry_id, fields in found:
            try:
                rows.append((to_int(entry_id), *self._decode(fields)))
            except Exception as exc:  # noqa: BLE001 - any loads failure quarantines the entry
                log.warning("spool %s: entry %s cannot be decoded (%s); it is kept and not replayed",
                            self.path, entry_id, type(exc).__name__)
                bad.append(entry_id)
        if bad:
            self._call(lambda: self._c.xclaim(self._q, GROUP, UNDECODABLE, 0, bad, justid=True))
        return rows

    @_bounded
    def ack(self, row_ids: Iterable[int], *, timeout: Optional[float] = None) -> int:
        """Delete entries this owner holds (claimed, parked or appended); return how many."""
        ids = sorted({abs(int(row_id)) for row_id in row_ids})
        proc = self._owner()
        if not ids or not proc.leased:
            return 0
        entries = [to_entry(number) for number in ids]
        return int(self._call(lambda: self._script("ack", [self._q], [GROUP, proc.token, *entries])))

    @_bounded
    def release(self, row_ids: Iterable[int], *, timeout: Optional[float] = None) -> int:
        """Free claimed or parked entries this owner holds, each keeping its place; return how many."""
        ids = [int(row_id) for row_id in row_ids]
        if any(row_id < 0 for row_id in ids):
            raise ValueError("release takes ids from claim or put; an id from append is acked instead")
        proc = self._owner()
        if not ids or not proc.leased:
            return 0
        entries = [to_entry(number) for number in sorted(set(ids))]
        return int(self._call(
            lambda: self._script("release", [self._q], [GROUP, proc.token, FREE, *entries]),
        ))

    @_bounded
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
        proc = self._owner()
        held: List[str] = []
        written: List[Any] = []
        refused: List[int] = []
        for index, (row_id, key, item) in enumerate(entries):
            if int(row_id) != 0:
                held.append(to_entry(abs(int(row_id))))
                continue
            try:
                encoded_key, data = self._codec.encode(key, item, f"item {index}")
            except Unencodable:
                refused.append(index)
                continue
            written += [encoded_key, *_type_of(data)]
        if not proc.leased:
            held = []
        made = 0
        if held or written:
            args = [GROUP, proc.token, error_text(error), attempts, len(held), *held, *written]
            made = int(self._call(lambda: self._script("bury", [self._q, self._dead], args)))
        if refused:
            raise SpoolError(
                f"spool {self.path}: {len(refused)} items given up cannot be encoded as dead letters",
                path=self.path, kind="encode", refused=refused,
            )
        return made

    # -- dead letters, for operators -------------------------------------------------------

    @_bounded
    def dead_letters(
        self, *, key: Any = ANY_KEY, limit: Optional[int] = None, timeout: Optional[float] = None,
    ) -> List[DeadLetter]:
        """The dead letters, oldest first: of *key* only if given, *limit* at most."""
        check_limit(limit, optional=True)
        wanted = key_filter(self._codec, key)
        letters: List[DeadLetter] = []
        for entry_id, fields in self._dead_entries():
            if wanted is not None and fields.get(b"k", b"").decode() != wanted:
                continue
            stored_key, item = self._decode(fields, lenient=True)
            at = (to_int(entry_id) >> _SEQ_BITS) / 1000
            error = fields.get(b"e", b"").decode()
            attempts = int(fields.get(b"n", 0))
            letters.append(DeadLetter(to_int(entry_id), stored_key, item, error, attempts, at))
            if limit is not None and len(letters) >= limit:
                break
        return letters

    @_bounded
    def requeue(self, *, key: Any = ANY_KEY, timeout: Optional[float] = None) -> int:
        """Move dead letters back to the queue as its newest free entries; return how many."""
        wanted = key_filter(self._codec, key)
        ids = [entry_id for entry_id, fields in self._dead_entries()
               if wanted is None or fields.get(b"k", b"").decode() == wanted]
        self._group()
        moved = 0
        for start in range(0, len(ids), 500):
            args: List[Any] = [GROUP, FREE, *ids[start:start + 500]]
            moved += int(self._call(lambda: self._script("requeue", [self._q, self._dead], args)))  # noqa: B023
        return moved

    @_bounded
    def purge(
        self, *, key: Any = ANY_KEY, older_than: Optional[float] = None, timeout: Optional[float] = None,
    ) -> int:
        """Delete dead letters (of *key*, given up at least *older_than* seconds ago, if given)."""
        if older_than is not None:
            older_than = seconds("older_than", older_than, allow_zero=True)
        wanted = key_filter(self._codec, key)
        now_ms = int(self._call(lambda: self._c.time())[0]) * 1000
        ids = [
            entry_id for entry_id, fields in self._dead_entries()
            if (wanted is None or fields.get(b"k", b"").decode() == wanted)
            and (older_than is None or (to_int(entry_id) >> _SEQ_BITS) <= now_ms - older_than * 1000)
        ]
        deleted = 0
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            deleted += int(self._call(lambda: self._c.xdel(self._dead, *chunk)))  # noqa: B023 - called here
        return deleted

    @_bounded
    def count(self, *, dead: bool = False, timeout: Optional[float] = None) -> int:
        """Entries stored (free or held, appended ones included); with *dead*, the dead letters."""
        self._owner()
        return int(self._call(lambda: self._c.xlen(self._dead if dead else self._q)))

    @_bounded
    def close(self, *, timeout: Optional[float] = None) -> None:
        """Free what this owner holds (appended pairs as the newest), end its lease. Idempotent."""
        if self._closed:
            return
        proc = self._proc
        try:
            if proc.pid == os.getpid() and proc.leased:
                self._call(lambda: self._script("free", [self._q], [GROUP, FREE, proc.token]))
                self._call(lambda: self._c.delete(self._lease_key(proc.token)))
        except SpoolError as exc:
            log.warning("spool %s: could not free its entries at close (its lease will): %s", self.path, exc)
        finally:
            self._closed = True
            proc.stop.set()
            _process.unregister(self)
            with self._quick_lock:
                quick, self._quick = list(self._quick.values()), {}
            for client in [*quick, self._client]:
                self._disconnect(client)
            if proc.appender is not None:
                proc.appender.disconnect()

    # -- inside ------------------------------------------------------------------------

    def _add(
        self, pairs: List[Tuple[str, Data]], *, owner: bool, appended: bool,
        execute: Optional[Callable[..., Any]] = None,
    ) -> List[int]:
        proc = self._lease() if owner else self._owner()
        args: List[Any] = [GROUP, proc.token if owner else FREE, "1" if appended else "0"]
        for key, data in pairs:
            args += [key, *_type_of(data)]
        self._group()
        ids = self._call(lambda: self._script("add", [self._q], args, execute=execute))
        return [to_int(entry_id) for entry_id in ids]

    def _decode(self, fields: Any, lenient: bool = False) -> Tuple[Hashable, Any]:
        if isinstance(fields, list):  # as a script returns them: field, value, field, value, ...
            fields = dict(zip(fields[::2], fields[1::2]))
        fields = {k if isinstance(k, bytes) else k.encode(): v for k, v in fields.items()}
        raw = fields.get(b"d", b"")
        tag = fields.get(b"t", b"j")
        data: Data = raw if tag == b"b" else raw.decode()
        try:
            item = self._codec.decode(data)
        except Exception:
            if not lenient:
                raise
            item = data
        return decode_key(fields[b"k"].decode()), item

    def _dead_entries(self) -> List[Tuple[str, Any]]:
        found = self._call(lambda: self._c.xrange(self._dead, "-", "+"))
        return [(entry_id.decode() if isinstance(entry_id, bytes) else entry_id, fields)
                for entry_id, fields in found]


    def _lease_key(self, token: str) -> str:
        return f"{{{self.name}}}:lease:{token}"

    def _group(self) -> None:
        if self._grouped:
            return
        try:
            self._call(lambda: self._c.xgroup_create(self._q, GROUP, id="$", mkstream=True))
        except SpoolError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._grouped = True

    def _free_dead(self) -> None:
        """Free the entries of owners whose lease ran out, or that died on this host."""
        consumers = self._c.xinfo_consumers(self._q, GROUP)
        names = [c["name"].decode() if isinstance(c["name"], bytes) else c["name"] for c in consumers]
        owners = [name for name in names if name not in (FREE, UNDECODABLE, self._proc.token)]
        if not owners:
            return
        leases = self._c.mget([self._lease_key(name) for name in owners])
        dead = [name for name, lease in zip(owners, leases) if lease is None or dead_here(name)]
        if dead:
            self._script("free", [self._q], [GROUP, FREE, *dead])

    def _owner(self) -> _Owner:
        if self._closed:
            raise SpoolError(f"spool {self.path}: the spool is closed", path=self.path, kind="closed")
        proc = self._proc
        if proc.pid != os.getpid():  # forked without the hook having run
            proc = self._after_fork_in_child()
        return proc

    def _lease(self) -> _Owner:
        """This process's owner, its lease taken (and its heartbeat started) on first use."""
        proc = self._owner()
        if not proc.leased:
            self._group()
            self._call(lambda: self._c.set(self._lease_key(proc.token), b"1", px=int(self.lease * 1000)))
            proc.leased = True
            heartbeat = threading.Thread(
                target=self._renew, args=(proc,), name=f"batchdispatch-spool-lease:{self.name}", daemon=True,
            )
            try:
                heartbeat.start()
            except RuntimeError:  # at interpreter exit (3.12+): the process ends before the lease would
                pass
        return proc

    def _renew(self, proc: _Owner) -> None:
        """The heartbeat: renew the lease every third of it until closed (or forked away)."""
        key = self._lease_key(proc.token)
        while not proc.stop.wait(self.lease / 3):
            if proc.pid != os.getpid():
                return
            try:
                if not self._client.set(key, b"1", px=int(self.lease * 1000), xx=True):
                    log.warning(
                        "spool %s: this process's lease had run out and its entries were freed; other "
                        "processes may deliver them too", self.path,
                    )
                    self._client.set(key, b"1", px=int(self.lease * 1000))
            except redis.RedisError as exc:
                if not proc.stop.is_set():  # closed meanwhile: nothing to renew
                    log.warning("spool %s: could not renew the lease: %s", self.path, type(exc).__name__)
            if proc.stop.is_set():  # closed while renewing: leave no connection behind
                self._disconnect(self._client)

    def _script(
        self, name: str, keys: List[str], args: List[Any], execute: Optional[Callable[..., Any]] = None,
    ) -> Any:
        """Run a script by its digest (EVALSHA straight away: redis-py's Script object
        costs about as much again per call), loading it the first time Redis misses it.
        *execute* runs the command (the operation's client's ``execute_command`` by default)."""
        text, sha = self._scripts[name]
        client = self._c
        run = execute or client.execute_command
        try:
            return run("EVALSHA", sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            client.script_load(text)
            return run("EVALSHA", sha, len(keys), *keys, *args)

    @property
    def _c(self) -> Any:
        """The client of the operation running on this thread (see _call)."""
        return getattr(self._local, "client", None) or self._client

    def _call(self, work: Callable[[], Any], deadline: Optional[float] = None) -> Any:
        """Run *work*, its commands answered by *deadline* (see _client_for), faults as SpoolError."""
        previous = getattr(self._local, "client", None)
        self._local.client = client = self._client_for(deadline) if previous is None else previous
        try:
            return work()
        except redis.RedisError as exc:
            raise self._fault(exc) from exc
        finally:
            self._local.client = previous
            if self._closed:  # it ran while the spool closed: leave no connection behind
                self._disconnect(client)

    def _disconnect(self, client: Any) -> None:
        """Close the connections of *client* if the spool made it (a client given is the caller's)."""
        if client is not self._client or self._owns_client:
            client.connection_pool.disconnect()

    def _client_for(self, deadline: Optional[float]) -> Any:
        """The client whose socket timeouts end by *deadline*: the spool's own when it
        is far enough, else one of a few kept with shorter ones (in tenths of a second)."""
        if deadline is None:
            return self._client
        left = deadline - time.monotonic()
        pool = self._client.connection_pool
        current = pool.connection_kwargs.get("socket_timeout")
        if current is not None and left >= current:
            return self._client
        bucket = max(ANSWER_FLOOR, math.floor(left * 10) / 10)
        with self._quick_lock:
            client = self._quick.pop(bucket, None)
            if client is None:
                kwargs = dict(pool.connection_kwargs, socket_timeout=bucket, socket_connect_timeout=bucket)
                client = redis.Redis(connection_pool=redis.ConnectionPool(
                    connection_class=pool.connection_class, **kwargs,
                ))
            self._quick[bucket] = client  # the most recent last
            while len(self._quick) > 8:
                oldest = next(iter(self._quick))
                self._disconnect(self._quick.pop(oldest))
        return client

    def _fault(self, exc: redis.RedisError) -> SpoolError:
        text = str(exc)
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            kind = "unreachable"
            text = type(exc).__name__
        elif text.startswith("OOM"):
            kind = "full"
        elif text.startswith("READONLY"):
            kind = "read_only"
        elif text.startswith("NOGROUP"):
            self._grouped = False  # the stream is gone (Redis restarted, keeping nothing): made again
            kind = "io"
        else:
            kind = "io"
        return SpoolError(f"spool {self.path}: {text}", path=self.path, kind=kind)

    # -- fork ------------------------------------------------------------------------------

    def _before_fork(self) -> bool:
        return False  # redis-py's pool gives a child connections of its own

    def _after_fork_in_child(self) -> _Owner:
        """The child is a new owner: the parent's entries and lease stay the parent's."""
        if self._proc.appender is not None:
            self._proc.appender.disconnect()  # the child's copy only: redis-py shuts no socket down here
        self._proc = _Owner()
        self._appends.reset_after_fork()
        return self._proc
