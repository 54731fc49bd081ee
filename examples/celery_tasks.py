"""A Celery task that enqueues events, and the flush that delivers them: ``python examples/celery_tasks.py``.

A prefork pool child leaves with ``os._exit``, which skips the exit hook
that would deliver what its dispatcher still holds. Connecting a flush to
``worker_process_shutdown`` fixes that: each child delivers before it goes.

The command runs the whole thing on this machine: a receiver on 127.0.0.1,
a real Celery worker (prefork, two children) on a broker kept in files, 20
tasks, then a warm shutdown (SIGTERM). It prints how many events arrived
and exits 0 when all 20 did. It needs Celery (``pip install celery``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile

from celery import Celery
from celery.signals import worker_process_shutdown

from batchdispatch import BackgroundDispatcher
from batchdispatch.http import HttpSink

#: Where the demo keeps its broker's messages and its results (a real deployment uses Redis or RabbitMQ).
STATE = os.environ.get("CELERY_DEMO_DIR", os.path.join(tempfile.gettempdir(), "batchdispatch-celery-demo"))


def _filesystem_broker(app: Celery) -> None:
    for folder in ("queue", "processed", "results", "control"):
        os.makedirs(os.path.join(STATE, folder), exist_ok=True)
    app.conf.broker_transport_options = {
        "data_folder_in": os.path.join(STATE, "queue"), "data_folder_out": os.path.join(STATE, "queue"),
        "processed_folder": os.path.join(STATE, "processed"),
        "control_folder": os.path.join(STATE, "control"),  # else Celery makes ./control
    }
    app.conf.result_backend = "file://" + os.path.join(STATE, "results")


# The recipe: a dispatcher at module level (nothing starts until the first
# enqueue, in the child), and a flush when each pool child shuts down.
app = Celery("celery_tasks", broker=os.environ.get("CELERY_BROKER_URL", "filesystem://"))
if app.conf.broker_url == "filesystem://":
    _filesystem_broker(app)

events = BackgroundDispatcher(HttpSink(os.environ.get("BATCHDISPATCH_URL", "http://127.0.0.1:9/")),
                              delay=60.0, max_batch_size=500, name="celery-events")


@app.task
def charge(order_id: int) -> int:
    events.enqueue({"event": "charged", "order": order_id})
    return order_id


@worker_process_shutdown.connect
def deliver_before_the_child_exits(**kwargs: object) -> None:
    # Runs in each pool child just before it leaves with os._exit.
    events.flush(timeout=5)


def main() -> int:
    from batchdispatch.testing import Receiver

    global STATE
    tasks = 20
    STATE = tempfile.mkdtemp(prefix="batchdispatch-celery-")  # this run's broker, shared with the worker
    _filesystem_broker(app)
    try:
        return _run_worker(Receiver, tasks)
    finally:
        shutil.rmtree(STATE, ignore_errors=True)


def _run_worker(receiver_class: type, tasks: int) -> int:
    with receiver_class() as receiver:
        environ = dict(os.environ, BATCHDISPATCH_URL=receiver.url, CELERY_DEMO_DIR=STATE)
        here = os.path.dirname(os.path.abspath(__file__))
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, environ.get("PYTHONPATH")]))
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_tasks", "worker", "--pool", "prefork",
             "--concurrency", "2", "--loglevel", "WARNING", "--without-heartbeat", "--without-gossip",
             "--without-mingle"],
            env=environ, cwd=here, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        try:
            results = [charge.delay(n) for n in range(tasks)]
            done = sorted(result.get(timeout=60) for result in results)
        finally:
            worker.send_signal(signal.SIGTERM)  # a warm shutdown: the children finish, then exit
            _, errors = worker.communicate(timeout=60)
        orders = sorted(item["order"] for item in receiver.items)
        print(f"{len(done)} tasks done; the receiver got {len(orders)} events "
              f"in {receiver.request_count} request(s)")
        if worker.returncode != 0:
            print(errors, file=sys.stderr)
        return 0 if orders == list(range(tasks)) and worker.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
