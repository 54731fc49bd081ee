"""Process-wide hooks: one atexit hook and one fork hook serve every dispatcher.

Dispatchers register here when they are made, in a WeakSet: a dispatcher
that is shut down and unreferenced can be collected, and no per-instance
hooks pile up in :func:`os.register_at_fork`, which cannot unregister.
At interpreter exit, :func:`exit_hook` asks every dispatcher to drain at
once and then waits for each within its own ``exit_timeout``; in a forked
child, :func:`after_fork_in_child` gives each a fresh start. The
dispatchers are reached through the methods named in :class:`Member`;
this module imports no engine.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from typing import Any, Dict, List, Optional, Protocol

from ._deadlines import monotonic

log = logging.getLogger("batchdispatch")


class Member(Protocol):
    """What the hooks ask of a dispatcher (the engine implements it)."""

    name: str
    flush_on_exit: bool

    def _close(self, by_exit: bool, deadline: Optional[float] = None) -> None: ...
    def _exit_budget_end(self) -> Optional[float]: ...
    def _exit(self, deadline: float, interrupted: bool = False) -> None: ...
    def _after_fork_in_child(self) -> None: ...


_registry: weakref.WeakSet[Any] = weakref.WeakSet()
_registry_lock = threading.Lock()
#: Whether the exit hook has started (read by the engine's slow paths).
exiting = False
#: When the exit hook started (monotonic), or None: each dispatcher's exit budget counts from then.
exit_started: Optional[float] = None
#: Seconds an interrupted exit hook still gives each dispatcher to write
#: what it gives up to its spool, and to run listeners, after it stopped waiting.
INTERRUPTED_EXIT_ALLOWANCE = 1.0


def register(member: Member) -> None:
    """Have the hooks serve *member* for as long as it lives."""
    with _registry_lock:
        _registry.add(member)


def members() -> List[Member]:
    """The dispatchers alive in this process."""
    with _registry_lock:
        return list(_registry)


def exit_hook() -> None:
    """Deliver what every dispatcher holds, each within its *exit_timeout*.

    A KeyboardInterrupt or SystemExit raised meanwhile (Ctrl-C, or a
    SIGTERM handler that calls ``sys.exit``, sent again) ends the waiting:
    what is still queued then goes to the spool (within
    ``INTERRUPTED_EXIT_ALLOWANCE`` seconds per dispatcher), or is counted
    as ``"exit"`` drops and logged, and the hook returns. An interrupt is
    not raised again: the interpreter is on its way out.
    """
    global exiting, exit_started
    exiting = True
    exit_started = monotonic()
    engines = members()
    interrupted: Optional[BaseException] = None
    for engine in engines:  # ask every worker to drain at once ...
        if engine.flush_on_exit:
            try:
                engine._close(by_exit=True, deadline=engine._exit_budget_end())
            except (KeyboardInterrupt, SystemExit) as exc:
                interrupted = exc
    for engine in engines:  # ... then wait for each within its own budget
        # An interrupt during one step of an engine's exit runs it again,
        # without waiting (each step is safe to run again), up to three times.
        for _ in range(3):
            try:
                deadline = engine._exit_budget_end()
                assert deadline is not None
                if interrupted is not None:
                    deadline = monotonic() + INTERRUPTED_EXIT_ALLOWANCE
                engine._exit(deadline, interrupted is not None)
                break
            except (KeyboardInterrupt, SystemExit) as exc:
                interrupted = exc
            except Exception:
                log.exception("batchdispatch:%s: exit flush failed", engine.name)
                break
    if interrupted is not None:
        log.warning(
            "batchdispatch: the exit flush was interrupted (%s); what was still queued went to the"
            " spool, or was counted as \"exit\" drops",
            type(interrupted).__name__,
        )


_resets: Dict[int, object] = {os.getpid(): None}  # processes whose dispatchers are their own


def after_fork_in_child() -> None:
    global _registry_lock
    token = object()
    if _resets.setdefault(os.getpid(), token) is not token:
        return  # this process was reset already (setdefault is atomic: one caller wins)
    _registry_lock = threading.Lock()  # may have been held by another thread
    for engine in list(_registry):
        engine._after_fork_in_child()


atexit.register(exit_hook)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=after_fork_in_child)
