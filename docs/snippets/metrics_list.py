"""The metrics page's loop over the process's dispatchers: ``python docs/snippets/metrics_list.py``.

Two named dispatchers deliver a few items first. What the loop prints holds
timings, so there is no .out file; the checks after it say what must hold.
"""

from batchdispatch import BackgroundDispatcher, KeyedDispatcher

events = BackgroundDispatcher(lambda batch: None, delay=0.01, name="events")
webhooks = KeyedDispatcher(lambda key, batch: None, delay=0.01, name="webhooks")
for n in range(3):
    events.enqueue({"n": n})
    webhooks.enqueue("ep-1", {"n": n})
assert events.flush(timeout=5)
assert webhooks.flush(timeout=5)

# [start metrics-list]
import batchdispatch

for dispatcher in batchdispatch.dispatchers():
    stats = dispatcher.stats()
    print(dispatcher.name, stats.pending, stats.oldest_pending_age, stats.batch_seconds)
# [end metrics-list]

assert [d.name for d in batchdispatch.dispatchers()] == ["events", "webhooks"]  # sorted by name
assert " p99<=" in str(events.stats().batch_seconds)
assert events.shutdown(timeout=5)
assert webhooks.shutdown(timeout=5)
