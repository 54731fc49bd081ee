"""Where each public name is imported from: ``python docs/snippets/api_imports.py``; the API page shows it."""

import batchdispatch

# [start top-level]
from batchdispatch import (
    BackgroundDispatcher,
    BatchDispatchError,
    DispatcherStats,
    DispatchFunc,
    ErrorHandler,
    Histogram,
    KeyedDispatcher,
    KeyedStats,
    PartialFailure,
    QueueFullError,
    RetryPolicy,
    SpoolError,
    current_batch_id,
    current_deadline,
    dispatchers,
    flush_after,
)

# [end top-level]
# [start modules]
from batchdispatch.contrib.flask import BatchDispatch  # extra: flask
from batchdispatch.events import BatchFailed, ItemsExhausted
from batchdispatch.exceptions import DeliveryError, ItemTooLargeError, SerializationError
from batchdispatch.handlers import BatchHandler
from batchdispatch.http import Endpoint, HttpSink, WebhookSink
from batchdispatch.spool import DeadLetter, PostgresSpool, RedisSpool, Spool, SqliteSpool
from batchdispatch.testing import Receiver, RecordingSink
from batchdispatch.webhooks import verify_webhook

# [end modules]

# The first list is the whole of the top level's __all__.
missing = set(batchdispatch.__all__) - {"__version__"} - set(globals())
assert not missing, f"the API page's list lacks {sorted(missing)}"
print("ok")
