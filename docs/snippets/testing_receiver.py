"""Test an HTTP integration against a real receiver: ``python docs/snippets/testing_receiver.py``.

The README's testing example; it prints "ok" when its assertions held.
"""

# [start readme-testing]
from batchdispatch import BackgroundDispatcher
from batchdispatch.http import HttpSink
from batchdispatch.testing import Receiver

with Receiver() as receiver:  # a real HTTP server on 127.0.0.1 that records what it gets
    dispatcher = BackgroundDispatcher(HttpSink(receiver.url), delay=0.05)
    dispatcher.enqueue({"event": "signup"})
    assert dispatcher.shutdown(timeout=5)  # a sync point: delivered, or False after 5 s
    assert receiver.items == [{"event": "signup"}]
# [end readme-testing]
print("ok")
