"""``batchdispatch.dispatchers()``: the dispatchers alive in this process.

What metrics exporters (:mod:`batchdispatch.contrib.prometheus`,
:mod:`batchdispatch.contrib.opentelemetry`) and other tools iterate over.
Built on the registry of the process-wide hooks (:func:`._process.members`),
which holds every dispatcher weakly, so asking keeps none of them alive.
"""

from __future__ import annotations

from typing import Any, List, Union

from . import _process
from ._dispatcher import BackgroundDispatcher
from ._keyed import KeyedDispatcher

__all__ = ["Dispatcher", "dispatchers"]

#: Either kind of dispatcher.
Dispatcher = Union[BackgroundDispatcher[Any], KeyedDispatcher[Any]]


def dispatchers() -> List[Dispatcher]:
    """The dispatchers of this process that have not been garbage-collected, sorted by name.

    Every :class:`~batchdispatch.BackgroundDispatcher` and
    :class:`~batchdispatch.KeyedDispatcher` made in this process is listed
    for as long as something refers to it, shut down or not (its
    :meth:`~batchdispatch.BackgroundDispatcher.stats` stay readable). In a
    child process after ``os.fork()``, the child's own copies are listed,
    each as fresh as the fork left it. Dispatchers that share a name come
    in no particular order among themselves.

    .. code-block:: python

        import batchdispatch

        for dispatcher in batchdispatch.dispatchers():
            stats = dispatcher.stats()
            print(dispatcher.name, stats.pending, stats.oldest_pending_age)

    .. versionadded:: 0.2.0
    """
    found: List[Dispatcher] = [
        member for member in _process.members() if isinstance(member, (BackgroundDispatcher, KeyedDispatcher))
    ]
    found.sort(key=lambda dispatcher: dispatcher.name)
    return found
