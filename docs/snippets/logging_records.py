"""The logging page's record, and a handler that adds a field: ``python docs/snippets/logging_records.py``.

A recording sink keeps what would be shipped; logging_records.out shows
the fields that do not change from run to run.
"""

import logging

from batchdispatch import BackgroundDispatcher
from batchdispatch.handlers import BatchHandler
from batchdispatch.testing import RecordingSink

sink = RecordingSink()
dispatcher = BackgroundDispatcher(sink, delay=0.05)
handler = BatchHandler(dispatcher)
logging.getLogger("shop").addHandler(handler)

# [start logging-record]
def charge(order):  # stands in for a call to the payment provider
    raise ConnectionError("payment provider unreachable")


order = "o-0999"
log = logging.getLogger("shop.checkout")
try:
    charge(order)
except ConnectionError:
    log.exception("refund of %s failed", order, extra={"attempt": 2})
# [end logging-record]

assert dispatcher.flush(timeout=5)
(item,) = sink.items
print(sorted(item))
print({key: item[key] for key in ("level", "logger", "message", "extra")})
print(item["exception"].splitlines()[-1])
logging.getLogger("shop").removeHandler(handler)


# [start logging-subclass]
class ServiceHandler(BatchHandler):
    def record_to_dict(self, record):
        item = super().record_to_dict(record)
        item["service"] = "checkout"
        return item
# [end logging-subclass]


handler = ServiceHandler(dispatcher)
logging.getLogger("shop").addHandler(handler)
logging.getLogger("shop").warning("stock low for %s", "sku-42")
assert dispatcher.shutdown(timeout=5)
print({key: sink.items[-1][key] for key in ("service", "message")})
