"""The logging page's install() for web applications: ``python docs/snippets/logging_install.py``.

install() of modules/myapp/logship.py attaches one handler however often an
app factory calls it; a local receiver stands in for the log service.
"""

import logging
import os
import sys

from batchdispatch.handlers import BatchHandler
from batchdispatch.testing import Receiver

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "modules"))

with Receiver() as receiver:
    os.environ["LOG_URL"] = receiver.url
    from myapp import logship

    logship.install()
    logship.install()  # a second app built in the same process, in a test say
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, BatchHandler)]
    logging.getLogger().setLevel(logging.INFO)
    logging.getLogger("shop").info("order %s paid", "o-1001")
    assert logship.dispatcher.flush(timeout=5)
    print(f"{len(handlers)} handler; the receiver got {[r['message'] for r in receiver.items]}")
    assert logship.dispatcher.shutdown(timeout=5)
    logship.dispatcher.dispatch.close()
