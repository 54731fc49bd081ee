# nightly_report.py
import sys

from batchdispatch import BackgroundDispatcher
from batchdispatch.http import HttpSink


def main(url, rows):
    with HttpSink(url) as sink, BackgroundDispatcher(sink, delay=0.1, max_batch_size=100) as dispatcher:
        for row in rows:
            dispatcher.enqueue(row)
    # Leaving the block delivered what was left, or gave up after exit_timeout.
    return 0 if dispatcher.stats().dispatched == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], [{"row": n} for n in range(1000)]))
