"""What runs on this thread: the dispatchers whose user code it is running.

A thread-local stack of the dispatchers whose dispatch, ``on_error`` or
listeners run on this thread, and the batch and deadline of the dispatch
call running here. The engine writes it around each call; the public
:func:`delivering`, :func:`current_batch_id` and :func:`current_deadline`
read it, so that sinks and handlers (at the edge) need not know the engine.
"""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING, Any, List, Optional, Tuple

if TYPE_CHECKING:
    from ._lanes import Batch

_local = threading.local()


def dispatching() -> List[Any]:
    """The dispatchers whose dispatch, on_error or listeners run on this thread (innermost last)."""
    try:
        stack: List[Any] = _local.stack
    except AttributeError:
        stack = _local.stack = []
    return stack


def enter_call(engine: Any, batch: Batch, deadline: Optional[float]) -> Tuple[Any, Optional[float]]:
    """Mark *engine*'s dispatch of *batch* as running here, to be over by
    *deadline* (or by an enclosing call's deadline, if sooner). Returns
    what :func:`leave_call` restores."""
    dispatching().append(engine)
    saved = (getattr(_local, "batch", None), getattr(_local, "deadline", None))
    outer_deadline = saved[1]
    if outer_deadline is not None and (deadline is None or outer_deadline < deadline):
        deadline = outer_deadline
    _local.batch, _local.deadline = batch, deadline
    return saved


def leave_call(saved: Tuple[Any, Optional[float]]) -> None:
    """End the call begun by :func:`enter_call`."""
    _local.batch, _local.deadline = saved
    dispatching().pop()


def delivering() -> bool:
    """Whether this thread is a dispatcher's worker, or runs its dispatch, on_error or listeners.

    Code that feeds a dispatcher from a place its own delivery can reach
    (a logging handler, say) checks this to avoid feeding back into itself.
    """
    return bool(getattr(_local, "stack", None))


def current_batch_id() -> Optional[str]:
    """A unique id for the batch whose dispatch runs on this thread, or None.

    The id is the same for every attempt of one batch, retries included,
    so a receiver can deduplicate (``webhook-id`` in
    :mod:`batchdispatch.http`). Called outside dispatch, it returns None.
    """
    batch: Optional[Batch] = getattr(_local, "batch", None)
    if batch is None:
        return None
    if batch.id is None:
        batch.id = uuid.uuid4().hex
    return batch.id


def current_deadline() -> Optional[float]:
    """When the dispatch call running on this thread must be over, or None for no limit.

    A time on :func:`time.monotonic`'s clock. The dispatcher sets it when a
    caller's deadline covers the call: a batch delivered on the enqueuing
    thread after the exit hook, within the exit budget, or a batch taken
    while :meth:`shutdown` or the exit hook waits with a timeout. A sink
    bounds its work by it (:mod:`batchdispatch.http` shortens its timeouts
    and gives up its retries), so that a dead endpoint cannot hold exit
    past its budget. Outside dispatch it returns None.
    """
    return getattr(_local, "deadline", None)

