"""The guarantees page's SIGTERM handler: ``python docs/snippets/guarantees_sigterm.py``.

The script sends itself SIGTERM with an item still queued: the handler
makes it a normal exit, so the exit hook delivers the item.
guarantees_sigterm.out is what it prints.
"""

from batchdispatch import BackgroundDispatcher


def send(batch):
    print(f"delivered at exit: {batch}")


dispatcher = BackgroundDispatcher(send, delay=60)  # nothing is due before the exit
dispatcher.enqueue({"event": "signup"})

# [start sigterm]
import signal
import sys

signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
# [end sigterm]

signal.raise_signal(signal.SIGTERM)  # what a process manager sends to stop the script
raise AssertionError("not reached: the handler ran sys.exit(0), and the exit hook delivers")
