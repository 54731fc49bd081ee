"""The recording sinks behind :class:`batchdispatch.testing.RecordingSink` and
:class:`~batchdispatch.testing.KeyedRecordingSink`.

Private: import them from :mod:`batchdispatch.testing` (see :mod:`._receiver`
for why they live apart).
"""

from __future__ import annotations

import dataclasses
import threading
from typing import (
    Any,
    Callable,
    Generic,
    Hashable,
    List,
    Optional,
    Tuple,
    TypeVar,
    Union,
)

from .exceptions import PartialFailure

T = TypeVar("T")

Failure = Union[BaseException, Callable[[List[Any]], BaseException]]

#: The key of a failure scripted for calls of every key.
_EVERY_KEY: Any = object()


@dataclasses.dataclass
class _Scripted:
    """One failure told to a sink: raised on *remaining* calls of *key* (None: on all)."""

    failure: Failure
    remaining: Optional[int]
    key: Any


def _check_failure(failure: object, times: Optional[int]) -> None:
    if not isinstance(failure, BaseException) and not callable(failure):
        raise TypeError(f"failure must be an exception or a callable, got {type(failure).__name__}")
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError(f"times must be None or an int >= 1, got {times!r}")


def _delivered(batch: List[T], error: Optional[BaseException]) -> List[T]:
    """The items of *batch* the dispatcher counts as delivered after a call that raised *error*."""
    if error is None:
        return batch
    if not isinstance(error, PartialFailure):
        return []
    rest = list(batch)
    for failed in error.failed_items:
        for index, item in enumerate(rest):
            if item is failed or item == failed:
                del rest[index]
                break
    return rest


class _Recording:
    """What both recording sinks share: the condition, the failure script and the waits.

    Every attribute is guarded by ``_cond``. The sinks record a call before
    they raise or return, and notify once the call's items are counted, so
    a wait that returns True has seen every call it counted.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._script: List[_Scripted] = []
        self._calls = 0
        self._delivered_count = 0

    def _schedule(self, failure: Failure, times: Optional[int], key: Any) -> None:
        _check_failure(failure, times)
        with self._cond:
            self._script.append(_Scripted(failure, times, key))

    def succeed(self) -> None:
        """Forget every failure told with ``fail()`` and not raised yet: later calls succeed."""
        with self._cond:
            self._script.clear()

    def _next_failure_locked(self, key: Any) -> Optional[Failure]:
        for index, scripted in enumerate(self._script):
            if scripted.key is _EVERY_KEY or scripted.key == key:
                if scripted.remaining is not None:
                    scripted.remaining -= 1
                    if scripted.remaining == 0:
                        del self._script[index]
                return scripted.failure
        return None

    def wait_for_batches(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until the sink was called *count* times; False if *timeout* passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._calls >= count, timeout)

    def wait_for_items(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until *count* items were delivered (see ``items``); False if *timeout* passed first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._delivered_count >= count, timeout)

    def _fail_or_return(self, failure: Optional[Failure], batch: List[Any]) -> Optional[BaseException]:
        # Built outside the lock: a failure function is the test's own code.
        if failure is None:
            return None
        error = failure if isinstance(failure, BaseException) else failure(list(batch))
        # A fresh traceback each time the same instance is raised; it would grow otherwise.
        return error.with_traceback(None)


class RecordingSink(_Recording, Generic[T]):
    """A dispatch callable that keeps every batch it is given and fails when told to.

    Pass it to :class:`~batchdispatch.BackgroundDispatcher` as *dispatch*,
    then assert after a sync point (``flush()``, ``shutdown()`` or
    :meth:`wait_for_items`). It is thread-safe, and it records a copy of
    each batch, so the dispatcher reusing or changing its list changes
    nothing here.

    .. code-block:: python

        from batchdispatch import BackgroundDispatcher, RetryPolicy
        from batchdispatch.testing import RecordingSink

        sink = RecordingSink()
        sink.fail(ConnectionError("down"), times=2)  # the first two calls raise
        dispatcher = BackgroundDispatcher(sink, delay=0.01,
                                          retry=RetryPolicy(max_attempts=3, backoff=0.01))
        dispatcher.enqueue("a")
        dispatcher.enqueue("b")
        assert dispatcher.flush(timeout=5)
        assert sink.batches == [["a", "b"]] * 3      # every call, the failed ones too
        assert sink.items == ["a", "b"]               # what was delivered
        dispatcher.shutdown(timeout=5)

    .. versionadded:: 0.2.0
    """

    def __init__(self) -> None:
        super().__init__()
        self._batches: List[List[T]] = []
        self._items: List[T] = []

    def __repr__(self) -> str:
        with self._cond:
            return (f"<RecordingSink batches={len(self._batches)} delivered={len(self._items)}"
                    f" failures_scripted={len(self._script)}>")

    def __call__(self, batch: List[T]) -> None:
        """Record *batch*, then raise the next scripted failure, if any."""
        batch = list(batch)
        with self._cond:
            self._batches.append(batch)
            failure = self._next_failure_locked(_EVERY_KEY)
        error = self._fail_or_return(failure, batch)
        with self._cond:
            delivered = _delivered(batch, error)
            self._items.extend(delivered)
            self._calls += 1
            self._delivered_count += len(delivered)
            self._cond.notify_all()
        if error is not None:
            raise error

    def fail(self, failure: Failure, *, times: Optional[int] = 1) -> None:
        """Make the next *times* calls raise *failure* (None: every call until :meth:`succeed`).

        *failure* is an exception, raised as it is, or a function that takes
        the batch and returns the exception to raise:

        .. code-block:: python

            from batchdispatch import PartialFailure
            from batchdispatch.testing import RecordingSink

            sink = RecordingSink()
            sink.fail(TimeoutError("slow"))                            # the next call
            sink.fail(lambda batch: PartialFailure(batch[:1]), times=None)  # each call: its first item

        Failures told one after the other are raised in that order.

        :raises TypeError: if *failure* is neither an exception nor callable.
        :raises ValueError: if *times* is not None or an int >= 1.
        """
        self._schedule(failure, times, _EVERY_KEY)

    @property
    def batches(self) -> List[List[T]]:
        """Every batch the sink was called with, in call order, failed calls included (a copy)."""
        with self._cond:
            return [list(batch) for batch in self._batches]

    @property
    def items(self) -> List[T]:
        """The items the dispatcher counts as delivered, in order (a copy).

        That is every item of a call that returned, and of a call that raised
        :class:`~batchdispatch.PartialFailure`, the items not among its
        ``failed_items``; a call that raised anything else delivered nothing.
        """
        with self._cond:
            return list(self._items)

    def clear(self) -> None:
        """Forget the recorded batches and items (scripted failures stay)."""
        with self._cond:
            self._batches.clear()
            self._items.clear()
            self._calls = self._delivered_count = 0


class KeyedRecordingSink(_Recording, Generic[T]):
    """A ``deliver(key, batch)`` callable for :class:`~batchdispatch.KeyedDispatcher` that records its calls.

    The keyed twin of :class:`RecordingSink`: it keeps each ``(key, batch)``
    pair, and a failure can be told for one key, so that a test can check
    that a failing endpoint does not hold the others back. It is
    thread-safe: the dispatcher calls it from several workers at once.

    .. code-block:: python

        from batchdispatch import KeyedDispatcher
        from batchdispatch.testing import KeyedRecordingSink

        sink = KeyedRecordingSink()
        sink.fail(ConnectionError("down"), key="b", times=None)   # "b" always fails
        hooks = KeyedDispatcher(sink, delay=0.01)
        hooks.enqueue("a", 1)
        hooks.enqueue("b", 2)
        assert hooks.flush(timeout=5)
        assert sink.items_for("a") == [1]
        assert sink.items_for("b") == []
        hooks.shutdown(timeout=5)

    .. versionadded:: 0.2.0
    """

    def __init__(self) -> None:
        super().__init__()
        self._batches: List[Tuple[Any, List[T]]] = []
        self._items: List[Tuple[Any, T]] = []

    def __repr__(self) -> str:
        with self._cond:
            return (f"<KeyedRecordingSink batches={len(self._batches)} delivered={len(self._items)}"
                    f" failures_scripted={len(self._script)}>")

    def __call__(self, key: Hashable, batch: List[T]) -> None:
        """Record *key* and *batch*, then raise the next failure scripted for *key*, if any."""
        batch = list(batch)
        with self._cond:
            self._batches.append((key, batch))
            failure = self._next_failure_locked(key)
        error = self._fail_or_return(failure, batch)
        with self._cond:
            delivered = _delivered(batch, error)
            self._items.extend((key, item) for item in delivered)
            self._calls += 1
            self._delivered_count += len(delivered)
            self._cond.notify_all()
        if error is not None:
            raise error

    def fail(self, failure: Failure, *, times: Optional[int] = 1, key: Any = _EVERY_KEY) -> None:
        """Make the next *times* calls (of *key*, if given) raise *failure*.

        As :meth:`RecordingSink.fail`; *times* None fails every call (of
        *key*) until :meth:`succeed`. A call raises the first failure told
        that matches its key.
        """
        self._schedule(failure, times, key)

    @property
    def batches(self) -> List[Tuple[Any, List[T]]]:
        """Every call as a ``(key, batch)`` pair, in call order, failed calls included (a copy)."""
        with self._cond:
            return [(key, list(batch)) for key, batch in self._batches]

    @property
    def items(self) -> List[T]:
        """The items counted as delivered, all keys together, in order (a copy).

        As :attr:`RecordingSink.items`; :meth:`items_for` picks one key.
        """
        with self._cond:
            return [item for _, item in self._items]

    def items_for(self, key: Hashable) -> List[T]:
        """The items of *key* counted as delivered, in order (a copy)."""
        with self._cond:
            return [item for k, item in self._items if k == key]

    def clear(self) -> None:
        """Forget the recorded calls and items (scripted failures stay)."""
        with self._cond:
            self._batches.clear()
            self._items.clear()
            self._calls = self._delivered_count = 0
