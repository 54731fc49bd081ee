"""What the sinks of this package share: their two call shapes, fork hooks, items as JSON, failures per item.

* :class:`_Sink`, the base of every sink: called as ``dispatch(batch)`` by a
  :class:`~batchdispatch.BackgroundDispatcher` or as ``deliver(key, batch)``
  by a :class:`~batchdispatch.KeyedDispatcher`, it hands both to
  :meth:`_Sink._deliver` with the key (or :data:`NO_KEY`); it joins the one
  process-wide fork hook, through which a forked child drops its parent's
  connections without closing them;
* :func:`resolve`, where a batch goes: a fixed name, or a callable of the key;
* :func:`deadline_left`, the time the dispatcher leaves a call (at exit and shutdown);
* :func:`json_item`, one item as compact UTF-8 JSON, or a
  :class:`~batchdispatch.exceptions.SerializationError` naming its index and
  type, never its value;
* :class:`Failures`, the items of a batch that failed and why, raised at the
  end as one error or a :class:`~batchdispatch.PartialFailure`;
* :func:`safe_url` and :func:`check_url`: a URL as messages and reprs may
  show it (no user info, password, query or fragment), and its check.

The sinks import only the core's public names; the core imports no sink.
"""

from __future__ import annotations

import json
import os
import time
import urllib.parse
import weakref
from typing import Any, Callable, Dict, Hashable, Iterable, List, Optional, Sequence, Union, overload

from .. import current_deadline
from ..exceptions import DeliveryError, PartialFailure, SerializationError


class _NoKey:
    """The key of a call as ``dispatch(batch)``, which has none."""

    def __repr__(self) -> str:
        return "<no key>"


#: The key :meth:`_Sink._deliver` receives when the sink was called as ``dispatch(batch)``.
NO_KEY: Any = _NoKey()

#: Where a batch goes: a name, or a callable that makes one of the dispatcher's key.
Target = Union[str, Callable[[Hashable], str]]

# Every sink alive, for the one fork hook below (a per-sink hook could never be unregistered).
_sinks: weakref.WeakSet[_Sink] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for sink in list(_sinks):
        sink._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Sink:
    """A dispatch callable and a deliver callable in one: ``sink(batch)`` or ``sink(key, batch)``."""

    def __init__(self) -> None:
        _sinks.add(self)

    @overload
    def __call__(self, batch: List[Any], /) -> None: ...

    @overload
    def __call__(self, key: Hashable, batch: List[Any], /) -> None: ...

    def __call__(self, *args: Any) -> None:
        """Deliver *batch* (to the key's target, when called with a key); raise if not all of it went."""
        if len(args) == 1:
            self._deliver(NO_KEY, args[0])
        elif len(args) == 2:
            self._deliver(args[0], args[1])
        else:
            raise TypeError(f"{type(self).__name__} takes (batch) or (key, batch), got {len(args)} arguments")

    def _deliver(self, key: Any, batch: List[Any]) -> None:
        raise NotImplementedError

    def _forked(self) -> None:
        """In a forked child, before anything else runs: forget the parent's connections, unclosed."""

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        raise NotImplementedError


def check_target(target: object, name: str) -> Target:
    """*target* if it is a non-empty str or a callable; a TypeError or ValueError naming *name* if not."""
    if callable(target):
        return target
    if not isinstance(target, str):
        raise TypeError(f"{name} must be a str or a callable of the key, got {type(target).__name__}")
    if not target:
        raise ValueError(f"{name} must not be empty")
    return target


def resolve(target: Target, key: Any, name: str, where: str) -> str:
    """The name *target* gives for *key*: itself, or what the callable returns for it.

    A callable with no key (the sink called as ``dispatch(batch)``), one
    that raises, or one that returns anything but a non-empty str is a
    non-retryable DeliveryError: trying again gives the same answer.
    """
    if not callable(target):
        return target
    if key is NO_KEY:
        raise DeliveryError(
            f"{name} is a callable of the key: call the sink as deliver(key, batch), from a KeyedDispatcher",
            url=where, retryable=False,
        )
    try:
        value = target(key)
    except Exception as exc:  # the user's code: its failure is final for the batch
        message = f"{name}({key!r}) raised {type(exc).__name__}"
        raise DeliveryError(message, url=where, retryable=False) from exc
    if not isinstance(value, str) or not value:
        got = repr(value) if isinstance(value, str) else type(value).__name__
        message = f"{name}({key!r}) must return a non-empty str, got {got}"
        raise DeliveryError(message, url=where, retryable=False)
    return value


class _NotJSON(TypeError):
    """A value of a type JSON cannot represent; the message is the type's name."""


def deadline_left(where: str) -> Optional[float]:
    """Seconds left before the dispatcher's deadline (:func:`~batchdispatch.current_deadline`), or None.

    A deadline that has passed is a retryable DeliveryError: nothing is sent
    that could not be waited for (it might land and be sent again).
    """
    deadline = current_deadline()
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise DeliveryError(f"{where}: not sent, the dispatcher's deadline has passed", url=where)
    return left


def _refuse(value: object) -> Any:
    raise _NotJSON(type(value).__name__)


def _make_encode() -> Callable[[Any], str]:
    """Compact JSON of one value, by an encoder made once.

    ``json.dumps`` and ``JSONEncoder.encode`` make a new C encoder on every
    call, which is half the cost of encoding a small item; this one is made
    once (``json.encoder.c_make_encoder``, where the interpreter has it) and
    reused. It keeps no circular-reference markers between calls: a cycle
    ends in a RecursionError, reported as "nested too deep".
    """
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_refuse)
    make = getattr(json.encoder, "c_make_encoder", None)
    basestring = getattr(json.encoder, "c_encode_basestring", None)
    if make is None or basestring is None:  # PyPy, or a Python without _json
        return encoder.encode
    c_encoder = make(None, _refuse, basestring, None, ":", ",", False, False, False)

    def encode(value: Any) -> str:
        return "".join(c_encoder(value, 0))

    return encode


_encode = _make_encode()


def json_item(item: Any, index: int, where: str) -> bytes:
    """*item* as compact UTF-8 JSON; a SerializationError naming *index* and the type that failed."""
    try:
        return _encode(item).encode("utf-8")
    except _NotJSON as exc:
        what = str(exc)
    except UnicodeEncodeError:
        what = "a str with a lone surrogate"
    except (TypeError, ValueError) as exc:  # a key JSON cannot hold, NaN or infinity, a cycle
        what = str(exc)
    except RecursionError:
        what = "nested too deep"
    message = f"item {index} of the batch is not JSON serializable: {what}"
    raise SerializationError(message, url=where, index=index)


class Failures:
    """The items of one batch that failed, each with its error, raised once the batch is done."""

    def __init__(self) -> None:
        self.errors: Dict[int, BaseException] = {}

    def add(self, index: int, error: BaseException) -> None:
        self.errors.setdefault(index, error)

    def add_all(self, indices: Iterable[int], error: BaseException) -> None:
        for index in indices:
            self.errors.setdefault(index, error)

    def raise_for(self, batch: Sequence[Any]) -> None:
        """Raise what failed: one error for a batch that failed whole for one reason, else a PartialFailure.

        The PartialFailure's cause is a retryable error when any failed
        item may go through later (a lost connection), so that the
        dispatcher retries them all; the others fail again then, and are
        given up. Failed items keep their order in the batch.
        """
        if not self.errors:
            return
        errors = list(self.errors.values())
        first = errors[0]
        if len(self.errors) == len(batch) and all(error is first for error in errors):
            raise first
        retryable = [error for error in errors if getattr(error, "retryable", True) is not False]
        raise PartialFailure([batch[index] for index in sorted(self.errors)], (retryable or errors)[0])


def safe_url(url: str) -> str:
    """*url* without user info (so without a password), query or fragment: what messages may show."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<invalid url>"
    return urllib.parse.urlunsplit((parts.scheme, host + port, parts.path, "", ""))


def check_url(url: object, schemes: Sequence[str], name: str = "url") -> str:
    """*url* if it is a str with one of *schemes*; a TypeError or ValueError naming *name* (and never
    showing the URL's password) if not."""
    if not isinstance(url, str):
        raise TypeError(f"{name} must be a str, got {type(url).__name__}")
    try:
        scheme = urllib.parse.urlsplit(url).scheme
        urllib.parse.urlsplit(url).port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{name} is not a valid URL: {safe_url(url)!r}") from None
    if scheme not in schemes:
        wanted = ", ".join(f"{s}://" for s in schemes)
        raise ValueError(f"{name} must be a URL starting with {wanted}; got {safe_url(url)!r}")
    return url


def check_optional_callable(value: object, name: str) -> Optional[Callable[..., Any]]:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")
    return value
