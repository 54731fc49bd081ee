"""MemorySpool: a spool in memory, written from the contract of batchdispatch.spool.Spool alone.

It proves the contract can be implemented from its docstring, runs the
same contract tests as SqliteSpool (tests/test_spool_contract.py), and
stands in for a real spool where a test wants one without files. Several
MemorySpool objects on one MemoryStore are several owners of one storage,
as several SqliteSpool objects on one file are. A store lives in one
process: a forked child works on its own copy.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import threading
import time
import weakref
from typing import Any, Dict, Hashable, Iterable, Iterator, List, Optional, Set, Tuple

from batchdispatch.exceptions import SpoolError
from batchdispatch.spool import DeadLetter

Pair = Tuple[Hashable, Any]


class _Stored:
    """One stored pair: its encoded key and item, its place in the order, and its owner (None: free)."""

    __slots__ = ("data", "key", "owner", "place")

    def __init__(self, key: str, data: str, place: int, owner: Optional[str]) -> None:
        self.key = key
        self.data = data
        self.place = place
        self.owner = owner


class MemoryStore:
    """The storage MemorySpool objects share: pairs by id, and the owners that live."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.lock = threading.RLock()  # reentrant: see MemorySpool._holding
        self.entries = 0  # operations under the lock: 0 or 1
        self.pairs: Dict[int, _Stored] = {}
        self.ids = itertools.count(1)  # put and claim ids; appended ones are negative
        self.appended_ids = itertools.count(1)
        self.places = itertools.count()  # the order pairs became free in
        self.live: Set[str] = set()  # owners not closed
        # Dead pairs, oldest first: (id, key, data, error text, attempts, time).
        self.dead: List[Tuple[int, str, str, str, int, float]] = []
        self.dead_ids = itertools.count(1)
        _stores.add(self)


_stores: weakref.WeakSet[MemoryStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for store in list(_stores):
        store.lock = threading.RLock()  # another thread of the parent may have held it
        store.entries = 0


os.register_at_fork(after_in_child=_after_fork_in_child)


def _refuse(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False, default=_refuse)


def _key_back(value: Any) -> Hashable:
    if isinstance(value, list):
        return tuple(_key_back(v) for v in value)
    result: Hashable = value
    return result


class MemorySpool:
    """A :class:`~batchdispatch.spool.Spool` whose pairs are kept in a :class:`MemoryStore`."""

    def __init__(self, store: Optional[MemoryStore] = None, *, durable: bool = False) -> None:
        self.store = store if store is not None else MemoryStore()
        self.durable = durable
        self.closed = False
        self._pid = -1
        self._token = ""
        self._owner()

    def __repr__(self) -> str:
        return f"<MemorySpool {self.store.name!r}>"

    # -- the protocol --------------------------------------------------------------

    def append(self, key: Hashable, item: Any) -> int:
        encoded = self._encode([(key, item)])[0]
        if isinstance(encoded, SpoolError):
            raise encoded
        with self._holding(None):
            owner = self._owner()
            row_id = -next(self.store.appended_ids)
            self.store.pairs[row_id] = _Stored(encoded[0], encoded[1], -1, owner)
        return row_id

    def put(
        self, pairs: Iterable[Pair], *, claim: bool = False, timeout: Optional[float] = None,
    ) -> List[int]:
        deadline = _deadline(timeout)
        encoded = self._encode(list(pairs))
        refused = [index for index, entry in enumerate(encoded) if isinstance(entry, SpoolError)]
        ids: List[int] = []
        with self._holding(deadline):
            owner = self._owner() if claim else None
            for entry in encoded:
                if isinstance(entry, SpoolError):
                    ids.append(0)
                    continue
                row_id = next(self.store.ids)
                self.store.pairs[row_id] = _Stored(entry[0], entry[1], next(self.store.places), owner)
                ids.append(row_id)
        if refused:
            first = encoded[refused[0]]
            raise SpoolError(
                f"spool {self.store.name}: {len(refused)} of {len(encoded)} items refused ({first})",
                path=self.store.name, kind="encode", refused=refused, rows=ids,
            )
        return ids

    def claim(self, limit: int, *, timeout: Optional[float] = None) -> List[Tuple[int, Hashable, Any]]:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be an int of at least 1, got {limit!r}")
        deadline = _deadline(timeout)
        with self._holding(deadline):
            owner = self._owner()
            free = sorted(
                (stored.place, row_id) for row_id, stored in self.store.pairs.items() if stored.owner is None
            )
            taken = []
            for _, row_id in free[:limit]:
                stored = self.store.pairs[row_id]
                stored.owner = owner
                taken.append((row_id, _key_back(json.loads(stored.key)), json.loads(stored.data)))
        return taken

    def ack(self, row_ids: Iterable[int], *, timeout: Optional[float] = None) -> int:
        deadline = _deadline(timeout)
        ids = [int(row_id) for row_id in row_ids]
        with self._holding(deadline):
            owner = self._owner()
            mine = [row_id for row_id in set(ids) if self._holds(owner, row_id)]
            for row_id in mine:
                del self.store.pairs[row_id]
        return len(mine)

    def release(self, row_ids: Iterable[int], *, timeout: Optional[float] = None) -> int:
        deadline = _deadline(timeout)
        ids = [int(row_id) for row_id in row_ids]
        if any(row_id < 0 for row_id in ids):
            raise ValueError("release takes ids from claim or put; an appended id is acked instead")
        with self._holding(deadline):
            owner = self._owner()
            mine = [row_id for row_id in set(ids) if self._holds(owner, row_id)]
            for row_id in mine:
                self.store.pairs[row_id].owner = None  # keeps its place
        return len(mine)

    def bury(
        self,
        entries: Iterable[Tuple[int, Hashable, Any]],
        *,
        error: Optional[BaseException] = None,
        attempts: int = 0,
        timeout: Optional[float] = None,
    ) -> int:
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 0:
            raise ValueError(f"attempts must be an int of at least 0, got {attempts!r}")
        deadline = _deadline(timeout)
        entries = [(int(row_id), key, item) for row_id, key, item in entries]
        fresh = self._encode([(key, item) for row_id, key, item in entries if row_id <= 0])
        text = "unknown" if error is None else f"{type(error).__name__}: {error}"[:2000]
        refused: List[int] = []
        made = 0
        with self._holding(deadline):
            owner = self._owner()
            encoded = iter(fresh)
            for index, (row_id, _, _) in enumerate(entries):
                if row_id > 0:
                    if not self._holds(owner, row_id):
                        continue
                    stored = self.store.pairs.pop(row_id)
                    entry: Any = (stored.key, stored.data)
                else:
                    entry = next(encoded)
                    if isinstance(entry, SpoolError):
                        refused.append(index)
                        continue
                    if row_id < 0 and self._holds(owner, row_id):
                        del self.store.pairs[row_id]
                self.store.dead.append(
                    (next(self.store.dead_ids), entry[0], entry[1], text, attempts, time.time())
                )
                made += 1
        if refused:
            raise SpoolError(
                f"spool {self.store.name}: {len(refused)} of {len(entries)} items refused",
                path=self.store.name, kind="encode", refused=refused,
                rows=[0 if n in refused else row_id for n, (row_id, _, _) in enumerate(entries)],
            )
        return made

    # -- beyond the protocol -----------------------------------------------------------

    def dead_letters(self, *, key: Any = None, limit: Optional[int] = None) -> List[DeadLetter]:
        """The dead pairs (of *key*, if not None), oldest first."""
        with self._holding(None):
            found = [
                DeadLetter(dead_id, _key_back(json.loads(k)), json.loads(data), text, attempts, at)
                for dead_id, k, data, text, attempts, at in self.store.dead
                if key is None or k == _dumps(key)
            ]
        return found[:limit] if limit is not None else found

    def requeue(self, *, key: Any = None) -> int:
        """Dead pairs (of *key*, if not None) become free again, the newest, in the order they died."""
        with self._holding(None):
            back = [entry for entry in self.store.dead if key is None or entry[1] == _dumps(key)]
            for entry in back:
                self.store.dead.remove(entry)
                stored = _Stored(entry[1], entry[2], next(self.store.places), None)
                self.store.pairs[next(self.store.ids)] = stored
        return len(back)


    def close(self) -> None:
        """End this owner: what it holds becomes free. Idempotent."""
        if self.closed:
            return
        with self._holding(None):
            self.closed = True
            if self._pid == os.getpid():
                self._end(self._token)

    def __enter__(self) -> MemorySpool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- inside ---------------------------------------------------------------------

    def _owner(self) -> str:
        """This owner's token; a forked child becomes a new owner. Call with the store's lock (or at init)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._token = f"{self._pid}-{id(self)}"
            self.store.live.add(self._token)
        return self._token

    def _holds(self, owner: str, row_id: int) -> bool:
        stored = self.store.pairs.get(row_id)
        return stored is not None and stored.owner == owner

    def _end(self, owner: str) -> None:
        """Free what *owner* holds: claimed and parked pairs keep their place, appended ones
        become free now, in the order they were appended."""
        self.store.live.discard(owner)
        pairs = self.store.pairs
        appended = sorted((row_id for row_id, s in pairs.items() if s.owner == owner and row_id < 0),
                          reverse=True)  # -1, -2, ...: the order of append
        for stored in pairs.values():
            if stored.owner == owner:
                stored.owner = None
        for row_id in appended:
            stored = self.store.pairs.pop(row_id)
            stored.place = next(self.store.places)
            self.store.pairs[next(self.store.ids)] = stored

    def _encode(self, pairs: List[Pair]) -> List[Any]:
        """Each pair as (key, data), or the SpoolError that refuses it."""
        out: List[Any] = []
        for index, (key, item) in enumerate(pairs):
            try:
                out.append((_dumps(key), _dumps(item)))
            except (TypeError, ValueError) as exc:
                out.append(SpoolError(f"item {index}: {exc}", path=self.store.name, kind="encode"))
        return out

    def _holding(self, deadline: Optional[float]) -> _Held:
        if self.closed:
            raise SpoolError(f"spool {self.store.name}: closed", path=self.store.name, kind="closed")
        return _Held(self, deadline)


class _Held:
    """The store's lock for one operation. The lock is reentrant, so that a signal handler of the
    thread inside an operation gets it at once; it then finds entries set, and raises "locked"."""

    def __init__(self, spool: MemorySpool, deadline: Optional[float]) -> None:
        self.store = spool.store
        self.deadline = deadline

    def __enter__(self) -> None:
        wait = -1.0 if self.deadline is None else max(0.0, self.deadline - time.monotonic())
        if not self.store.lock.acquire(timeout=wait):
            name = self.store.name
            raise SpoolError(f"spool {name}: busy past the timeout", path=name, kind="locked")
        if self.store.entries:
            self.store.lock.release()
            name = self.store.name
            raise SpoolError(f"spool {name}: called again by the thread using it", path=name, kind="locked")
        self.store.entries = 1

    def __exit__(self, *exc_info: object) -> None:
        self.store.entries = 0
        self.store.lock.release()


def _deadline(timeout: Optional[float]) -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, got {type(timeout).__name__}")
    if not timeout >= 0 or timeout == float("inf"):
        raise ValueError(f"timeout must be a non-negative finite number of seconds, got {timeout!r}")
    return time.monotonic() + timeout


@contextlib.contextmanager
def busy(store: MemoryStore) -> Iterator[None]:
    """Hold *store* from another thread for the time of a with block (for timeout tests)."""
    held = threading.Event()
    done = threading.Event()

    def hold() -> None:
        with store.lock:
            held.set()
            done.wait(30)

    thread = threading.Thread(target=hold, name="memory-spool-holder")
    thread.start()
    held.wait(10)
    try:
        yield
    finally:
        done.set()
        thread.join(10)


def held_by_another_thread(spool: Any) -> bool:
    """Whether another thread of this process is inside an operation of *spool*, as a count that
    may not wait sees it: refused with "another thread of this process held the spool"."""
    try:
        spool.count(timeout=0)
    except SpoolError as exc:
        if "another thread of this process held the spool" in str(exc):
            return True
        raise
    return False
