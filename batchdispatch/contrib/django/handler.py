"""``dispatchers``: one lazily built :class:`~batchdispatch.BackgroundDispatcher` per alias.

Nothing is built, and no thread started, until an alias is first looked up
(the dispatcher's worker then starts on its first ``enqueue``), so a
process that forks after loading Django (``gunicorn --preload``) gives each
worker process its own dispatcher and thread.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from typing import Any, Dict, List, Mapping, Optional, Tuple

from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
from django.core.signals import setting_changed  # type: ignore[import-untyped]

from ..._deadlines import monotonic
from ..._dispatcher import BackgroundDispatcher
from ...http import HttpSink
from .. import _options
from . import conf

__all__ = ["DispatcherHandler", "UnknownAliasError", "dispatchers"]

log = logging.getLogger("batchdispatch.contrib.django")

#: Seconds a change of the setting (``override_settings``) waits, in all, for the old dispatchers.
SETTING_CHANGED_TIMEOUT = 5.0


class UnknownAliasError(ImproperlyConfigured, KeyError):  # type: ignore[misc]
    """An alias that ``BATCHDISPATCH`` does not define (both a KeyError and ImproperlyConfigured)."""

    def __init__(self, alias: str) -> None:
        known = ", ".join(repr(a) for a in conf.aliases()) or "none"
        super().__init__(f"{conf.SETTING} has no alias {alias!r} (configured: {known})")
        self.alias = alias

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0])


class DispatcherHandler:
    """Build, hand out and close one dispatcher per ``BATCHDISPATCH`` alias.

    Works like ``django.core.cache.caches``, but the dispatchers are shared
    by every thread of the process:

    .. code-block:: python

        from django.http import HttpResponse
        from batchdispatch.contrib.django import dispatchers


        def signup(request):  # a view
            dispatchers["default"].enqueue({"event": "signup", "user": request.user.pk})
            return HttpResponse(status=204)

    Each dispatcher is a :class:`~batchdispatch.BackgroundDispatcher` over an
    :class:`~batchdispatch.http.HttpSink`, built from the alias's options on
    first lookup. A change of ``BATCHDISPATCH`` (``override_settings``) shuts
    down and forgets the dispatchers built so far; the next lookup builds
    from the new settings.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built: Dict[str, Tuple[BackgroundDispatcher[Any], HttpSink]] = {}
        if hasattr(os, "register_at_fork"):
            hook = weakref.WeakMethod(self._after_fork_in_child)
            os.register_at_fork(after_in_child=lambda: _call_if_alive(hook))

    def _after_fork_in_child(self) -> None:
        # The lock may have been held by a thread that does not exist in the
        # child. The dispatchers themselves reset in the child on their own.
        self._lock = threading.Lock()

    def __getitem__(self, alias: str) -> BackgroundDispatcher[Any]:
        """The dispatcher of *alias*, built on first use.

        :raises UnknownAliasError: *alias* is not in ``BATCHDISPATCH``.
        :raises ~django.core.exceptions.ImproperlyConfigured: its options
            are wrong; the message names the alias and the option.
        """
        with self._lock:
            built = self._built.get(alias)
            if built is None:
                built = self._build(alias)
                self._built[alias] = built
            return built[0]

    def __contains__(self, alias: object) -> bool:
        """Whether *alias* is configured in ``BATCHDISPATCH`` (built or not)."""
        return alias in conf.aliases()

    def all(self, initialized_only: bool = False) -> List[BackgroundDispatcher[Any]]:
        """The dispatchers of every configured alias, building them unless *initialized_only*."""
        if initialized_only:
            with self._lock:
                return [dispatcher for dispatcher, _ in self._built.values()]
        return [self[alias] for alias in conf.aliases()]

    def is_built(self, alias: str) -> bool:
        """Whether *alias*'s dispatcher has been built in this process (since the last close)."""
        with self._lock:
            return alias in self._built

    def close_all(self, timeout: Optional[float] = 5.0) -> bool:
        """Shut down and forget every dispatcher built so far. Idempotent.

        Each is flushed and stopped, and its sink (and spool) closed; the next lookup
        builds a new one.

        :param timeout: seconds to wait at most, for all of them together
            (None: as long as it takes).
        :returns: True if every dispatcher delivered what it held and stopped
            in time.
        """
        with self._lock:
            built, self._built = self._built, {}
        deadline = None if timeout is None else monotonic() + timeout
        completed = True
        for alias, (dispatcher, sink) in built.items():
            left = None if deadline is None else max(0.0, deadline - monotonic())
            try:
                if not dispatcher.shutdown(timeout=left):
                    completed = False
                    log.warning("batchdispatch: the dispatcher of %r did not stop within the timeout", alias)
            finally:
                _options.close(dispatcher, sink)
        return completed

    def _build(self, alias: str) -> Tuple[BackgroundDispatcher[Any], HttpSink]:
        setting = conf.configured()
        if not isinstance(setting, Mapping):
            raise ImproperlyConfigured(
                f"{conf.SETTING} must be a dict of aliases to options, got {type(setting).__name__}")
        if alias not in setting:
            raise UnknownAliasError(alias)
        options, problems = conf.resolve(alias, setting[alias])
        if options is None:
            raise ImproperlyConfigured(next(p.message for p in problems if p.is_error))
        return _options.build(
            f"django:{alias}", url=options.url, headers=options.headers, secret=options.secret,
            signature=options.signature, max_body_bytes=options.max_body_bytes,
            delay=options.delay, max_batch_size=options.max_batch_size,
            max_queue_size=options.max_queue_size, overflow=options.overflow,
            exit_timeout=options.exit_timeout, spool=options.spool, spool_durable=options.spool_durable,
        )

    def __repr__(self) -> str:
        with self._lock:
            built = sorted(self._built)
        return f"<DispatcherHandler built={built}>"


def _call_if_alive(hook: weakref.WeakMethod[Any]) -> None:
    method = hook()
    if method is not None:
        method()


#: The process's dispatchers, one per ``BATCHDISPATCH`` alias.
dispatchers = DispatcherHandler()


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == conf.SETTING:
        dispatchers.close_all(timeout=SETTING_CHANGED_TIMEOUT)


setting_changed.connect(_setting_changed, dispatch_uid="batchdispatch.contrib.django.setting_changed")
