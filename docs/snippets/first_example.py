"""The first example of the README and of the docs' front page: ``python docs/snippets/first_example.py``.

first_example.out is what it prints; tests/test_docs.py checks it.
"""

# [start first-example]
from batchdispatch import BackgroundDispatcher


def send(batch):
    # Runs on the worker thread with a non-empty list, in enqueue order.
    print(f"shipping {len(batch)} events")


with BackgroundDispatcher(send, delay=0.5, max_batch_size=500) as dispatcher:
    for n in range(1000):
        dispatcher.enqueue({"event": "page_view", "n": n})  # returns at once
# Leaving the block delivered what was left and stopped the worker.
stats = dispatcher.stats()
print(f"enqueued {stats.enqueued}, dispatched {stats.dispatched} in {stats.batches} batches, "
      f"dropped {stats.dropped}")
# [end first-example]
