"""The user guide's examples: ``python docs/snippets/guide.py``; guide.out is what it prints."""

# [start on-error]
import logging

from batchdispatch import BackgroundDispatcher

log = logging.getLogger("myapp.events")
failed_batches = []  # looked at, or retried, later


def send(batch):
    raise ConnectionError("the collector is down")  # stands for a real delivery that failed


def keep_aside(exc, batch):
    log.warning("could not send %d events: %s", len(batch), exc)
    failed_batches.append(batch)


dispatcher = BackgroundDispatcher(send, on_error=keep_aside)
# [end on-error]

dispatcher.enqueue({"event": "signup"})
dispatcher.shutdown(timeout=5)
print(f"kept aside: {failed_batches}; failed: {dispatcher.stats().failed}")


# [start fake-clock]
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_items_wait_for_the_delay():
    sent = []
    dispatcher = BackgroundDispatcher(sent.append, delay=0.05, clock=FakeClock())
    try:
        dispatcher.enqueue(1)
        dispatcher.enqueue(2)
        assert dispatcher.stats().pending == 2  # the clock says no time passed
        assert dispatcher.flush()  # a sync point: no sleep needed
        assert sent == [[1, 2]]
    finally:
        dispatcher.shutdown()
# [end fake-clock]


test_items_wait_for_the_delay()
print("test_items_wait_for_the_delay passed")
