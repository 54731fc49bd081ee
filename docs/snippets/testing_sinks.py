"""The testing page's signed webhooks and recording sink: ``python docs/snippets/testing_sinks.py``.

It runs pytest on itself; ``recording_sink`` is the fixture of
batchdispatch's pytest plugin.
"""

# [start signed]
from batchdispatch import KeyedDispatcher
from batchdispatch.http import Endpoint, WebhookSink
from batchdispatch.testing import Receiver


def test_webhooks_are_signed_and_verified():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    with Receiver(secret=secret) as receiver, \
            WebhookSink({"ep-1": Endpoint(receiver.url, secret=secret)}) as sink:
        hooks = KeyedDispatcher(sink, delay=0.01)
        hooks.enqueue("ep-1", {"event": "message.sent"})
        assert hooks.shutdown(timeout=5)
    (request,) = receiver.requests
    assert request.verified is True
    assert request.headers["webhook-id"]         # lower-case keys
    assert receiver.items == [{"event": "message.sent"}]
# [end signed]


# [start recording]
from batchdispatch import BackgroundDispatcher, RetryPolicy


def test_a_failed_batch_is_retried(recording_sink):
    recording_sink.fail(ConnectionError("endpoint down"))
    dispatcher = BackgroundDispatcher(recording_sink, delay=0.01,
                                      retry=RetryPolicy(max_attempts=2, backoff=0.01))
    dispatcher.enqueue({"event": "signup"})
    assert dispatcher.shutdown(timeout=5)
    assert len(recording_sink.batches) == 2         # the failed call, then the retry
    assert recording_sink.items == [{"event": "signup"}]
# [end recording]


if __name__ == "__main__":  # pytest runs this file, in an interpreter of its own
    import subprocess
    import sys

    sys.exit(subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]))
