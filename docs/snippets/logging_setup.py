"""The logging page's handler, set up in code: ``python docs/snippets/logging_setup.py``.

A local receiver stands in for the log service; this prints what it got
(logging_setup.out).
"""

import os

from batchdispatch.testing import Receiver

receiver = Receiver().start()
os.environ.update(LOG_URL=receiver.url, LOG_API_KEY="example-only")

# [start logging-setup]
import logging
import os

from batchdispatch import BackgroundDispatcher
from batchdispatch.handlers import BatchHandler
from batchdispatch.http import HttpSink

sink = HttpSink(os.environ["LOG_URL"], headers={"api-key": os.environ["LOG_API_KEY"]})
dispatcher = BackgroundDispatcher(sink, delay=1.0, max_batch_size=500)

handler = BatchHandler(dispatcher, logging.INFO)
logging.getLogger().addHandler(handler)
logging.getLogger().setLevel(logging.INFO)

logging.getLogger("shop").info("order %s paid", "o-1001", extra={"amount_cents": 1250})
# [end logging-setup]

handler.flush()  # a sync point: the records so far are delivered
(record,) = receiver.items
print({key: record[key] for key in ("level", "logger", "message", "extra")})
print(f"api-key: {receiver.requests[0].headers['api-key']}")
logging.getLogger().removeHandler(handler)
handler.close()
assert dispatcher.shutdown(timeout=5)
sink.close()
receiver.close()
