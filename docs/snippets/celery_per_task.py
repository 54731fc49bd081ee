"""The Celery page's per-task flushes: ``python docs/snippets/celery_per_task.py``.

Runs each task eagerly (in this process), which is enough to show that the
flush runs when the task ends: the event has arrived before ``apply``
returns. examples/celery_tasks.py runs a real prefork worker.
"""

import os

from batchdispatch.testing import Receiver

receiver = Receiver().start()
os.environ["BATCHDISPATCH_URL"] = receiver.url

from celery import Celery

from batchdispatch import BackgroundDispatcher
from batchdispatch.http import HttpSink

app = Celery("tasks", broker="memory://")
events = BackgroundDispatcher(HttpSink(os.environ["BATCHDISPATCH_URL"]), delay=60.0, max_batch_size=500)


# [start flush-after-task]
from batchdispatch import flush_after


@app.task
@flush_after(events, timeout=5)      # under @app.task: the task body includes the flush
def charge(order_id):
    ...
    events.enqueue({"event": "charged", "order": order_id})
# [end flush-after-task]


charge.apply(args=(1,))
assert receiver.items == [{"event": "charged", "order": 1}], receiver.items


# [start task-postrun]
from celery.signals import task_postrun


@task_postrun.connect
def deliver_after_each_task(**kwargs):
    events.flush(timeout=5)
# [end task-postrun]


@app.task
def refund(order_id):
    events.enqueue({"event": "refunded", "order": order_id})


refund.apply(args=(1,))
assert receiver.items[-1] == {"event": "refunded", "order": 1}, receiver.items
print(f"delivered as each task ended: {receiver.items}")
events.shutdown(timeout=5)
receiver.close()
