"""The scripts page's fork pool, whose tasks flush as they end: ``python docs/snippets/scripts_pool.py``.

Without ``flush_after`` this pool would deliver nothing: pool children
end with ``os._exit``. scripts_pool.out is what it prints.
"""

import os

from batchdispatch.testing import Receiver

if __name__ == "__main__":
    receiver = Receiver().start()
    os.environ["BATCHDISPATCH_URL"] = receiver.url

# [start pool]
import multiprocessing
import os

from batchdispatch import BackgroundDispatcher, flush_after
from batchdispatch.http import HttpSink

events = BackgroundDispatcher(HttpSink(os.environ["BATCHDISPATCH_URL"]), delay=0.5)


@flush_after(events, timeout=5)
def work(n):
    events.enqueue({"task": "work", "n": n})
    return n * n


if __name__ == "__main__":
    with multiprocessing.get_context("fork").Pool(4) as pool:
        print(sum(pool.map(work, range(100))))
# [end pool]
    arrived = sorted(item["n"] for item in receiver.items)
    print(f"the receiver got {len(arrived)} events, each once: {arrived == list(range(100))}")
    receiver.close()
