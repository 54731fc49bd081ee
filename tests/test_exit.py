"""Interpreter exit, in real subprocesses that simply end."""

from __future__ import annotations

from typing import Any

from batchdispatch._deadlines import monotonic

from .conftest import run_python


def _delivered(stdout: str) -> int:
    return sum(int(line) for line in stdout.split())


def test_a_script_that_just_ends_delivers_everything() -> None:
    result = run_python(
        """
        import sys
        from batchdispatch import BackgroundDispatcher

        def send(batch):
            sys.stdout.write(f"{len(batch)}\\n")

        d = BackgroundDispatcher(send, delay=0.1, max_queue_size=None)
        for i in range(100_000):
            d.enqueue(i)
        """
    )
    assert result.returncode == 0, result.stderr
    assert _delivered(result.stdout) == 100_000


def test_a_hung_dispatch_delays_exit_by_exit_timeout_at_most() -> None:
    started = monotonic()
    result = run_python(
        """
        import logging, threading
        from batchdispatch import BackgroundDispatcher

        logging.basicConfig()
        hang = threading.Event()
        d = BackgroundDispatcher(lambda batch: hang.wait(), delay=0.01, exit_timeout=0.5)
        for i in range(3):
            d.enqueue(i)
        """,
        timeout=30,
    )
    elapsed = monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "exit flush timed out with 3 items undelivered" in result.stderr
    assert elapsed < 20  # 0.5 s plus interpreter start-up, with a wide margin


def test_flush_on_exit_false_discards_and_says_so() -> None:
    result = run_python(
        """
        import logging, sys
        from batchdispatch import BackgroundDispatcher

        logging.basicConfig()
        d = BackgroundDispatcher(lambda b: sys.stdout.write(f"{len(b)}\\n"), delay=3600, flush_on_exit=False)
        for i in range(7):
            d.enqueue(i)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "7 items discarded at exit (flush_on_exit=False)" in result.stderr


def test_items_enqueued_by_later_atexit_handlers_are_delivered() -> None:
    """Handlers registered after import run before our hook; those registered
    before it run after, when no worker is left (and on 3.12+ no thread may
    start): their items are dispatched on the calling thread."""
    result = run_python(
        """
        import atexit, sys, threading

        def send(batch):
            where = "worker" if threading.current_thread().name.startswith("batchdispatch") else "caller"
            sys.stdout.write(f"{batch} {where}\\n")

        def late():  # registered first, so it runs last
            from batchdispatch import BackgroundDispatcher
            d.enqueue("late-old")
            BackgroundDispatcher(send, delay=0.01).enqueue("late-new")

        atexit.register(late)
        from batchdispatch import BackgroundDispatcher
        d = BackgroundDispatcher(send, delay=3600)
        atexit.register(lambda: d.enqueue("early"))
        d.enqueue("main")
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "['main', 'early'] worker"
    assert sorted(lines[1:]) == ["['late-new'] caller", "['late-old'] caller"]


def test_an_explicitly_shut_down_dispatcher_stays_closed_at_exit() -> None:
    result = run_python(
        """
        import atexit, sys
        atexit.register(lambda: print(d.enqueue("late"), d.stats().dropped_by_reason["closed"]))
        from batchdispatch import BackgroundDispatcher
        d = BackgroundDispatcher(lambda b: sys.stdout.write(f"{b}\\n"), delay=0.01)
        d.shutdown()
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "1"]


def test_the_exit_hook_waits_for_all_dispatchers_in_one_budget() -> None:
    """Two hung dispatchers with exit_timeout=3 give up together, not 3 s apart."""
    result = run_python(
        """
        import logging, threading
        from batchdispatch import BackgroundDispatcher
        logging.basicConfig(format="%(created)f %(message)s")
        hang = threading.Event()
        for name in ("a", "b"):
            BackgroundDispatcher(lambda b: hang.wait(), delay=0.01, exit_timeout=3, name=name).enqueue(1)
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if "exit flush timed out" in line]
    assert len(lines) == 2, result.stderr
    first, second = (float(line.split()[0]) for line in lines)
    assert second - first < 2.0  # waited in parallel: one budget for all


def test_the_exit_hook_still_waits_for_a_shutdown_that_timed_out() -> None:
    result = run_python(
        """
        import sys, threading
        from batchdispatch import BackgroundDispatcher
        release = threading.Event()

        def send(batch):
            release.wait(10)
            sys.stdout.write(f"{len(batch)}\\n")

        d = BackgroundDispatcher(send, delay=0.01, max_batch_size=10)
        for i in range(50):
            d.enqueue(i)
        print(d.shutdown(timeout=0))  # returns at once; the worker goes on draining
        release.set()
        """
    )
    assert result.returncode == 0, result.stderr
    first, *counts = result.stdout.split()
    assert first == "False"
    assert sum(map(int, counts)) == 50


def test_a_worker_stuck_past_the_exit_budget_gets_no_overlapping_call() -> None:
    """After the exit hook gave up on a hung dispatch, a later atexit handler's
    item is an "exit" drop, not a second call racing the hung one."""
    result = run_python(
        """
        import atexit, sys, threading
        calls = []
        atexit.register(lambda: print(d.enqueue("late"), dict(d.stats().dropped_by_reason), len(calls)))
        from batchdispatch import BackgroundDispatcher
        hang = threading.Event()
        d = BackgroundDispatcher(lambda b: calls.append(b) or hang.wait(), delay=0.01, exit_timeout=0.2)
        d.enqueue(1)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False {'exit': 1} 1"


def test_flush_inside_an_inline_dispatch_at_exit_does_not_wait_for_itself() -> None:
    result = run_python(
        """
        import atexit, sys
        atexit.register(lambda: print(d.enqueue("late")))  # runs after the hook
        from batchdispatch import BackgroundDispatcher

        def send(batch):
            sys.stdout.write(f"{batch} flush={d.flush(timeout=None)}\\n")

        d = BackgroundDispatcher(send, delay=0.01)
        d.enqueue("main")
        """,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["['main'] flush=False", "['late'] flush=False", "True"]


def test_the_exit_drain_keeps_the_queue_bound_and_ends_within_its_budget() -> None:
    """A daemon thread keeps enqueueing through the exit drain."""
    started = monotonic()
    result = run_python(
        """
        import atexit, threading, time

        def report():  # registered first: runs after the exit hook
            stop.set()
            producer.join(5)
            s = d.stats()
            lost = s.enqueued - s.dispatched - s.failed - s.pending
            print(peak[0], lost <= s.dropped_by_reason.get("exit", 0))

        atexit.register(report)
        from batchdispatch import BackgroundDispatcher
        d = BackgroundDispatcher(lambda b: time.sleep(0.001), delay=0.01, max_queue_size=100, exit_timeout=1)
        stop, peak = threading.Event(), [0]

        def produce():
            while not stop.is_set():
                d.enqueue(1)
                s = d.stats()  # one snapshot: what waits is pending less what is out
                peak[0] = max(peak[0], s.pending - s.in_flight)

        producer = threading.Thread(target=produce, daemon=True)
        producer.start()
        time.sleep(0.2)  # let it run; the point is what happens at exit
        """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    peak, accounted = result.stdout.split()
    assert int(peak) <= 101  # the bound, plus at most one racing producer
    assert accounted == "True"
    assert monotonic() - started < 30


def test_an_exit_timeout_beyond_the_platform_limit_still_flushes() -> None:
    result = run_python(
        """
        import sys
        from batchdispatch import BackgroundDispatcher
        d = BackgroundDispatcher(lambda b: sys.stdout.write(f"{b}\\n"), delay=3600, exit_timeout=1e12)
        d.enqueue(1)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[1]"


def test_a_keyed_dispatcher_delivers_every_key_at_exit_and_after_its_hook() -> None:
    result = run_python(
        """
        import atexit, sys, threading

        def deliver(key, batch):
            where = "worker" if threading.current_thread().name.startswith("batchdispatch") else "caller"
            sys.stdout.write(f"{key} {len(batch)} {where}\\n")

        atexit.register(lambda: d.enqueue("late", 1))  # runs after the hook
        from batchdispatch import KeyedDispatcher
        d = KeyedDispatcher(deliver, delay=3600, max_queue_size=None)
        for i in range(30_000):
            d.enqueue(f"key-{i % 3}", i)
        """
    )
    assert result.returncode == 0, result.stderr
    counts: dict = {}
    for line in result.stdout.splitlines():
        key, size, where = line.split()
        counts[key, where] = counts.get((key, where), 0) + int(size)
    assert counts == {
        ("key-0", "worker"): 10_000, ("key-1", "worker"): 10_000, ("key-2", "worker"): 10_000,
        ("late", "caller"): 1,
    }


# -- losses are never silent -------------------------------------------------------------------

LOSSES = """
import logging, sys, threading
from batchdispatch import BackgroundDispatcher
from batchdispatch.spool import SqliteSpool

if sys.argv[1] == "configured":
    logging.basicConfig(stream=sys.stdout, format="LOG %(message)s")
stuck = threading.Event()

class Refused(Exception):
    retryable = False

def hangs(batch):
    stuck.wait()

def refuses(batch):
    raise Refused("400")

if sys.argv[2] == "hangs":
    d = BackgroundDispatcher(hangs, delay=0.01, max_batch_size=3, exit_timeout=0.5)
    for n in range(7):
        d.enqueue(n)
elif sys.argv[2] == "refuses":
    with SqliteSpool(sys.argv[3]) as spool:
        d = BackgroundDispatcher(refuses, delay=0.01, spool=spool)
        d.enqueue("x")
        d.flush(timeout=10)
        d.shutdown(timeout=10)
else:
    d = BackgroundDispatcher(lambda batch: None, delay=0.01, name="fine")
    for n in range(7):
        d.enqueue(n)
"""


def test_what_a_script_loses_at_exit_reaches_stderr_without_logging_configured() -> None:
    result = run_python(LOSSES.replace("sys.argv[1]", "'plain'").replace("sys.argv[2]", "'hangs'"))
    assert result.returncode == 0, result.stderr
    expected = "at exit, not delivered in this process: 4 dropped (exit: 4); 3 abandoned in dispatch"
    assert expected in result.stderr


def test_a_script_that_delivered_everything_says_nothing_at_exit() -> None:
    result = run_python(LOSSES.replace("sys.argv[1]", "'plain'").replace("sys.argv[2]", "'fine'"))
    assert (result.returncode, result.stderr) == (0, "")


def test_the_loss_report_goes_where_the_application_logs_and_counts_dead_letters(tmp_path: Any) -> None:
    code = LOSSES.replace("sys.argv[1]", "'configured'").replace("sys.argv[2]", "'refuses'")
    result = run_python(code.replace("sys.argv[3]", repr(str(tmp_path / "spool.db"))))
    assert result.returncode == 0, result.stderr
    assert "not delivered in this process: 1 failed (1 kept as dead letters)" in result.stdout
    assert "not delivered" not in result.stderr
