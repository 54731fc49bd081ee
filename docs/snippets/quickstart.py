"""The quickstart's dispatcher, step by step: ``python docs/snippets/quickstart.py``.

docs/quickstart.rst shows its regions and its output, quickstart.out,
which tests/test_docs.py compares with what this program prints.
"""

# [start define]
from batchdispatch import BackgroundDispatcher


def send(batch):
    print(f"sending {len(batch)} events: {batch}")


dispatcher = BackgroundDispatcher(send, delay=0.1)
# [end define]

# [start enqueue]
dispatcher.enqueue({"event": "signup", "user": 1})
dispatcher.enqueue({"event": "login", "user": 1})
# [end enqueue]

# [start flush]
if not dispatcher.flush(timeout=2.0):
    print("still delivering after 2 seconds")
# [end flush]

# [start stats]
stats = dispatcher.stats()
print(f"enqueued={stats.enqueued} dispatched={stats.dispatched} batches={stats.batches} "
      f"failed={stats.failed} dropped={stats.dropped} pending={stats.pending}")
print(f"dropped_by_reason={dict(stats.dropped_by_reason)} last_error={stats.last_error}")
print(f"batch sizes: {stats.batch_sizes}")
# [end stats]

# [start shutdown]
dispatcher.shutdown(timeout=5.0)
# [end shutdown]

# [start with]
with BackgroundDispatcher(send, delay=0.1) as dispatcher:
    for user in range(3):
        dispatcher.enqueue({"event": "signup", "user": user})
# Here every item has been delivered, or a warning says how many were not.
# [end with]
