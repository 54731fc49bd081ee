"""batchdispatch: batch items from any thread and dispatch them in the background.

.. code-block:: python

    from batchdispatch import BackgroundDispatcher


    def send(batch):  # runs on the worker thread, with a list of items
        print(f"sending {len(batch)} items")


    dispatcher = BackgroundDispatcher(send, delay=0.1)
    dispatcher.enqueue({"msg": "hi"})
"""

from __future__ import annotations

import logging

from ._context import current_batch_id, current_deadline
from ._dispatcher import BackgroundDispatcher
from ._keyed import KeyedDispatcher
from ._live import dispatchers
from ._log import _LastResort
from ._retry import RetryPolicy
from ._stats import DispatcherStats, Histogram, KeyedStats
from ._types import DispatchFunc, ErrorHandler
from ._unit import flush_after
from .exceptions import BatchDispatchError, PartialFailure, QueueFullError, SpoolError

__version__ = "0.1.0"

__all__ = [
    "BackgroundDispatcher",
    "BatchDispatchError",
    "DispatchFunc",
    "DispatcherStats",
    "ErrorHandler",
    "Histogram",
    "KeyedDispatcher",
    "KeyedStats",
    "PartialFailure",
    "QueueFullError",
    "RetryPolicy",
    "SpoolError",
    "__version__",
    "current_batch_id",
    "current_deadline",
    "dispatchers",
    "flush_after",
]

logging.getLogger(__name__).addHandler(_LastResort())
