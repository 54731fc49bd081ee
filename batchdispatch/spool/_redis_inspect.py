"""An operator's view of a RedisSpool, read without taking anything.

The counterpart of :mod:`._inspect` for ``python -m batchdispatch spool
redis://host:6379/0#name``: the same :class:`~._inspect.Summary` and
:class:`~._inspect.StoredRow`. It only reads (``XPENDING``, ``XRANGE``,
``MGET``, ``MEMORY USAGE``): it never claims, frees or renews a lease. It
reads every entry, so it takes time in proportion to the queue. An owner
counts as live while its lease key exists (or, on this host, while its
process exists); its durable appends are the "in logs" lines.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Set

import redis

from ..exceptions import SpoolError
from ._identity import dead_here
from ._inspect import StoredRow, Summary
from ._redis import to_int
from ._redis_scripts import FREE, GROUP, UNDECODABLE

_SEQ_BITS = 22


class RedisInspector:
    """Reads a RedisSpool's streams for an operator."""

    def __init__(self, url: str, name: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5)
        kwargs = self.client.connection_pool.connection_kwargs
        where = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"
        #: Where the spool lives, without credentials.
        self.path = f"redis://{where}#{name}"
        self.name = name
        self.q = f"{{{name}}}:q"
        self.dead = f"{{{name}}}:dead"

    def summary(self) -> Summary:
        try:
            return self._summary()
        except redis.RedisError as exc:
            raise self._fault(exc) from exc

    def rows(
        self, *, dead: bool = False, key: Optional[str] = None, limit: Optional[int] = None,
    ) -> List[StoredRow]:
        try:
            return self._rows(dead, key, limit)
        except redis.RedisError as exc:
            raise self._fault(exc) from exc

    # -- inside ------------------------------------------------------------------------

    def _fault(self, exc: redis.RedisError) -> SpoolError:
        unreachable = isinstance(exc, (redis.ConnectionError, redis.TimeoutError))
        text = f"cannot connect ({type(exc).__name__})" if unreachable else f"{type(exc).__name__}: {exc}"
        kind = "unreachable" if unreachable else "io"
        return SpoolError(f"spool {self.path}: {text}", path=self.path, kind=kind)

    def _check(self) -> None:
        if not self.client.exists(self.q, self.dead):
            message = f"spool {self.path}: no key {self.q} or {self.dead}: not a spool"
            raise SpoolError(message, path=self.path, kind="corrupt")

    def _owners(self) -> Dict[str, str]:
        """Each entry's consumer in the group, by id."""
        if not self.client.exists(self.q):
            return {}
        pending = self.client.xpending_range(self.q, GROUP, "-", "+", 1 << 30)
        return {_text(p["message_id"]): _text(p["consumer"]) for p in pending}

    def _live(self, owners: Set[str]) -> Set[str]:
        tokens = sorted(owners - {FREE, UNDECODABLE})
        if not tokens:
            return set()
        leases = self.client.mget([f"{{{self.name}}}:lease:{token}" for token in tokens])
        return {token for token, lease in zip(tokens, leases) if lease is not None and not dead_here(token)}

    def _summary(self) -> Summary:
        self._check()
        owners = self._owners()
        live = self._live(set(owners.values()))
        counts = {"waiting": 0, "claimed_live": 0, "claimed_ended": 0, "undecodable": 0,
                  "logged_live": 0, "logged_ended": 0}
        oldest: Optional[int] = None
        for entry_id, fields in self._entries(self.q):
            oldest = to_int(entry_id) if oldest is None else oldest
            owner = owners.get(entry_id, FREE)
            if owner == FREE:
                counts["waiting"] += 1
            elif owner == UNDECODABLE:
                counts["undecodable"] += 1
            else:
                state = "live" if owner in live else "ended"
                counts[f"{'logged' if b'a' in fields else 'claimed'}_{state}"] += 1
        now = time.time()
        dead_count = int(self.client.xlen(self.dead)) if self.client.exists(self.dead) else 0
        first_dead = self.client.xrange(self.dead, "-", "+", count=1) if dead_count else []
        size = sum(int(self.client.memory_usage(key) or 0) for key in (self.q, self.dead)
                   if self.client.exists(key))
        return Summary(
            path=self.path, **counts, dead=dead_count,
            oldest_age=None if oldest is None else max(0.0, now - (oldest >> _SEQ_BITS) / 1000),
            oldest_dead_age=(None if not first_dead
                             else max(0.0, now - (to_int(_text(first_dead[0][0])) >> _SEQ_BITS) / 1000)),
            size=size,
        )

    def _rows(self, dead: bool, key: Optional[str], limit: Optional[int]) -> List[StoredRow]:
        self._check()
        now = time.time()
        owners = {} if dead else self._owners()
        live = self._live(set(owners.values()))
        found: List[StoredRow] = []
        for entry_id, fields in self._entries(self.dead if dead else self.q):
            stored_key = fields.get(b"k", b"").decode()
            if key is not None and stored_key != key:
                continue
            raw = fields.get(b"d", b"")
            data: Any = raw if fields.get(b"t") == b"b" else raw.decode()
            age = max(0.0, now - (to_int(entry_id) >> _SEQ_BITS) / 1000)
            if dead:
                found.append(StoredRow(to_int(entry_id), stored_key, data, "dead", age,
                                       fields.get(b"e", b"").decode(), int(fields.get(b"n", 0))))
            else:
                owner = owners.get(entry_id, FREE)
                state = ("waiting" if owner == FREE else "undecodable" if owner == UNDECODABLE
                         else "claimed" if owner in live else "ended")
                found.append(StoredRow(to_int(entry_id), stored_key, data, state, age))
            if limit is not None and len(found) >= limit:
                break
        return found

    def _entries(self, stream: str) -> List[Any]:
        """Every entry of *stream*, oldest first, read 1,000 at a time."""
        entries: List[Any] = []
        start = "-"
        while True:
            chunk = self.client.xrange(stream, start, "+", count=1000)
            if not chunk:
                return entries
            entries += [(_text(entry_id), fields) for entry_id, fields in chunk]
            start = "(" + _text(chunk[-1][0])


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
