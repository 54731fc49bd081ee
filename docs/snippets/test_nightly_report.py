"""The testing page's script and its test: ``python docs/snippets/test_nightly_report.py``.

The script, modules/nightly_report.py, takes the receiver's URL as its
argument, so it is imported here rather than run alone. This prints "ok"
when both tests passed (test_nightly_report.out).
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "modules"))

# [start test-nightly-report]
# test_nightly_report.py
from batchdispatch.testing import Receiver, Response

from nightly_report import main


def test_every_row_arrives_in_batches_of_100():
    rows = [{"row": n} for n in range(250)]
    with Receiver() as receiver:
        assert main(receiver.url, rows) == 0
    assert receiver.items == rows
    assert [len(request.items) for request in receiver.requests] == [100, 100, 50]


def test_a_refused_batch_makes_the_script_fail():
    with Receiver() as receiver:
        receiver.respond(Response(400, body=b"bad row"))  # a 4xx is final: no retry
        assert main(receiver.url, [{"row": 1}]) == 1
    assert receiver.items == []


if __name__ == "__main__":
    test_every_row_arrives_in_batches_of_100()
    test_a_refused_batch_makes_the_script_fail()
    print("ok")
# [end test-nightly-report]
