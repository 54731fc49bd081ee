"""The logging page's dictConfig setups: ``python docs/snippets/logging_dictconfig.py``.

A handler on a dispatcher of myapp/logship.py (modules/myapp/), named with
``ext://``, then one that builds its own from a URL; a local receiver
stands in for the log service. logging_dictconfig.out is what it prints.
"""

import logging
import logging.config
import os
import sys

from batchdispatch.testing import Receiver

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "modules"))
receiver = Receiver().start()
os.environ.update(LOG_URL=receiver.url, LOG_API_KEY="example-only")

# [start logging-ext]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "ship": {
            "class": "batchdispatch.handlers.BatchHandler",
            "dispatcher": "ext://myapp.logship.dispatcher",
            "level": "INFO",
        },
    },
    "root": {"handlers": ["ship"], "level": "INFO"},
}
# [end logging-ext]

logging.config.dictConfig(LOGGING)
logging.getLogger("shop").info("through myapp.logship.dispatcher")
import myapp.logship

assert myapp.logship.dispatcher.flush(timeout=5)
print(f"ext://: {[record['message'] for record in receiver.items]}")
receiver.clear()

# [start logging-url]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "ship": {
            "class": "batchdispatch.handlers.BatchHandler",
            "url": os.environ["LOG_URL"],
            "sink_options": {"headers": {"api-key": os.environ["LOG_API_KEY"]}},
            "dispatcher_options": {"delay": 1.0},
        },
    },
    "root": {"handlers": ["ship"], "level": "INFO"},
}
# [end logging-url]

logging.config.dictConfig(LOGGING)  # closes the first handler, which flushes it
logging.getLogger("shop").info("through a dispatcher of the handler's own")
(handler,) = logging.getLogger().handlers
print(f"the handler's dispatcher: {handler.dispatcher.stats().name}")
handler.flush()
print(f"url: {[record['message'] for record in receiver.items]}, "
      f"api-key {receiver.requests[0].headers['api-key']}")
logging.shutdown()  # closes the handler, which shuts its own dispatcher down
assert myapp.logship.dispatcher.shutdown(timeout=5)
myapp.logship.dispatcher.dispatch.close()
receiver.close()
