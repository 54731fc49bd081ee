"""The spool page's SqliteSpool, alone and under dispatchers: ``python docs/snippets/spool_sqlite.py``.

It runs in a temporary directory of its own, which it removes;
spool_sqlite.out is what it prints.
"""

import os
import tempfile

workdir = tempfile.TemporaryDirectory()
os.chdir(workdir.name)

# [start spool-alone]
from batchdispatch.spool import SqliteSpool


def deliver(items):  # yours: post them, insert them...
    print(f"delivering {items}")


with SqliteSpool("events.db") as spool:  # a file on a local disk: /var/spool/myapp/events.db, say
    spool.put([(None, {"event": "signup"}), (None, {"event": "login"})])
    rows = spool.claim(100)          # [(row_id, key, item), ...], oldest first
    deliver([item for _, _, item in rows])
    spool.ack([row_id for row_id, _, _ in rows])
# [end spool-alone]

# [start spool-dispatchers]
from batchdispatch import BackgroundDispatcher
from batchdispatch.spool import SqliteSpool


def send(batch):
    print(f"sending {batch}")


# Spill what cannot be delivered: at the exit deadline, while closing,
# over the queue limit (overflow="spill"), after the retries (spill_exhausted=True).
d = BackgroundDispatcher(send, delay=0.1, spool=SqliteSpool("events.db"))

# Every item on disk before enqueue returns; removed once delivered.
d = BackgroundDispatcher(send, delay=0.1, spool=SqliteSpool("durable.db", durable=True))
# [end spool-dispatchers]

d.enqueue({"event": "purchase"})
assert d.shutdown(timeout=5)
with SqliteSpool("durable.db") as check:
    print(f"left in durable.db once delivered: {check.count()}")
os.chdir(os.path.dirname(workdir.name))
workdir.cleanup()
