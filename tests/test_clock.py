"""Time: batching keeps real time inside a user's freezegun block."""

from __future__ import annotations

import threading

import freezegun

from batchdispatch._deadlines import monotonic

from .conftest import Recorder, run_python


def test_the_timer_fires_in_real_time_inside_freeze_time(make, recorder: Recorder) -> None:
    with freezegun.freeze_time("2020-01-01"):
        d = make(recorder, delay=0.05)
        d.enqueue(1)
        assert recorder.wait_batches(1, timeout=10)  # frozen time would never get there
    assert recorder.items == [1]


def test_flush_and_shutdown_deadlines_hold_inside_freeze_time(make) -> None:
    hang = threading.Event()
    with freezegun.freeze_time("2020-01-01"):
        d = make(lambda batch: hang.wait(30), delay=0.01)
        d.enqueue(1)
        started = monotonic()
        assert d.flush(timeout=0.2) is False
        assert d.shutdown(timeout=0.2) is False
        assert 0.4 <= monotonic() - started < 10
    hang.set()


def test_the_clock_survives_an_import_inside_freeze_time() -> None:
    """Imported while time is frozen, the engine still reads the real clock."""
    result = run_python(
        """
        import freezegun
        with freezegun.freeze_time("2020-01-01"):
            import batchdispatch
            from batchdispatch import _deadlines
            start = _deadlines.monotonic()
            d = batchdispatch.BackgroundDispatcher(lambda b: None, delay=0.05)
            d.enqueue(1)
            print(d.flush(timeout=10), _deadlines.monotonic() > start)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "True"]
