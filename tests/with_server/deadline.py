"""A sink call made as the dispatcher makes it while ``shutdown(timeout)`` waits: under its deadline.

:func:`~batchdispatch.current_deadline` is what a sink bounds its work by.
The dispatcher sets it for a batch it takes while shutdown (or the exit
hook) waits with a timeout; :func:`under_shutdown_deadline` drives that
public path, rather than writing the deadline into the engine's
thread-local state.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from batchdispatch import BackgroundDispatcher, current_deadline


def under_shutdown_deadline(
    call: Callable[[], object], timeout: float,
) -> Tuple[float, Optional[BaseException]]:
    """Run *call* as the dispatch of a batch taken while ``shutdown(timeout=timeout)`` waits.

    The one placeholder item waits for a delay of an hour, so the worker
    takes its batch only once shutdown has closed the dispatcher: the call
    then runs with ``current_deadline()`` set to shutdown's deadline
    (checked here). ``timeout=0`` gives a deadline already passed when the
    call starts. What *call* raises is caught, so the dispatcher makes no
    retry: it is called exactly once. Returns (the seconds the call took,
    what it raised or None).
    """
    seen: Dict[str, Any] = {}
    done = threading.Event()

    def dispatch(batch: List[Any]) -> None:
        seen["deadline"] = current_deadline()
        started = time.monotonic()
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            seen["error"] = exc
        finally:
            seen["took"] = time.monotonic() - started
            done.set()

    dispatcher: BackgroundDispatcher[Any] = BackgroundDispatcher(dispatch, delay=3600, name="under-deadline")
    try:
        dispatcher.enqueue("batch")
        started = time.monotonic()
        dispatcher.shutdown(timeout=timeout)
        returned = time.monotonic()
        assert done.wait(120), "the batch was not dispatched after shutdown"
    finally:
        dispatcher.shutdown(timeout=30)  # the worker, once the call is over
    deadline = seen["deadline"]
    assert deadline is not None, "shutdown(timeout) set no deadline for the call"
    assert started + timeout <= deadline <= returned + timeout  # shutdown's own
    return seen["took"], seen.get("error")
