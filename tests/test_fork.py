"""Fork safety, with a real os.fork()."""

from __future__ import annotations

import json
import os
import signal
import threading
import warnings
from typing import Any, Callable, List

import pytest

from batchdispatch._deadlines import monotonic

from .conftest import Recorder, worker_threads

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def fork(child: Callable[[], Any]) -> int:
    """Fork; run *child* in the child, send its JSON result through a pipe.

    The child always leaves with os._exit, so it never runs the parent's
    pytest machinery. Returns the pid; the result is read by ``collect``.
    """
    read_fd, write_fd = os.pipe()
    with warnings.catch_warnings():
        # 3.12+ warns that forking a process with threads may deadlock the
        # child: that risk is exactly what these tests check.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            os.close(read_fd)
            os.write(write_fd, json.dumps(child()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    fork.pipes[pid] = read_fd  # type: ignore[attr-defined]
    return pid


fork.pipes = {}  # type: ignore[attr-defined]


def collect(pid: int, timeout: float = 20.0) -> Any:
    """Wait for the child with a deadline; a hung child is a deadlock: kill it and fail."""
    deadline = monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail(f"child {pid} hung (deadlock after fork?)")
        threading.Event().wait(0.01)
    read_fd = fork.pipes.pop(pid)  # type: ignore[attr-defined]
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    assert os.waitstatus_to_exitcode(status) == 0 if hasattr(os, "waitstatus_to_exitcode") else status == 0
    return json.loads(data)


def test_the_child_gets_a_fresh_dispatcher_and_the_parent_keeps_its_items(make, recorder: Recorder) -> None:
    d = make(recorder, delay=3600.0)
    for i in range(5):
        d.enqueue(f"parent-{i}")

    def child() -> Any:
        before = d.stats()
        assert not worker_threads(d)  # the parent's worker does not exist here
        d.enqueue("child")
        flushed = d.flush(timeout=10)
        return {
            "pending_before": before.pending,
            "enqueued_before": before.enqueued,
            "flushed": flushed,
            "items": recorder.items,
            "thread": worker_threads(d)[0].name if worker_threads(d) else None,
        }

    result = collect(fork(child))
    assert result == {
        "pending_before": 0,
        "enqueued_before": 0,
        "flushed": True,
        "items": ["child"],
        "thread": f"batchdispatch:{d.name}",
    }
    assert d.flush(timeout=10)
    assert recorder.items == [f"parent-{i}" for i in range(5)]


def test_a_shut_down_dispatcher_stays_shut_down_in_the_child(make, recorder: Recorder) -> None:
    d = make(recorder, delay=0.01)
    d.enqueue(1)
    assert d.shutdown(timeout=10)
    result = collect(fork(lambda: [d.enqueue(2), dict(d.stats().dropped_by_reason)]))
    assert result == [False, {"closed": 1}]


def test_forks_while_threads_enqueue_never_deadlock_the_child(make, recorder: Recorder) -> None:
    parent, in_child = os.getpid(), Recorder()

    def ship(batch: List[Any]) -> None:  # each child ships to its own copy of in_child
        (recorder if os.getpid() == parent else in_child)(batch)

    d = make(ship, delay=0.001, max_batch_size=50, max_queue_size=None)
    stop = threading.Event()
    counts: List[int] = []

    def produce(tid: int) -> None:
        n = 0
        while not stop.is_set():
            d.enqueue((tid, n))
            n += 1
        counts.append(n)

    producers = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
    for p in producers:
        p.start()
    try:
        for _ in range(20):

            def child() -> Any:
                for i in range(100):
                    d.enqueue(("child", i))
                return [d.flush(timeout=10), len(in_child.items), d.shutdown(timeout=10)]

            assert collect(fork(child)) == [True, 100, True]
    finally:
        stop.set()
        for p in producers:
            p.join()
    assert d.flush(timeout=30)
    items = recorder.items
    assert len(items) == len(set(items)) == sum(counts)  # each parent item once
    assert not any(tid == "child" for tid, _ in items)


def test_a_fork_from_inside_dispatch_leaves_the_child_a_working_dispatcher(make, recorder: Recorder) -> None:
    pids: List[int] = []
    parent, in_child = os.getpid(), Recorder()

    def dispatch(batch: List[Any]) -> None:
        if os.getpid() != parent:
            in_child(batch)
            return
        if pids:
            recorder(batch)
            return
        read_fd, write_fd = os.pipe()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            inherited = threading.current_thread()

            def check() -> None:
                # Let the inherited worker frame return into the engine
                # first: it must leave the child's fresh dispatcher alone.
                inherited.join(10)
                before = d.stats()
                d.enqueue("child")
                result = [not inherited.is_alive(), before.enqueued, before.batches,
                          d.flush(timeout=10), in_child.items]
                os.write(write_fd, json.dumps(result).encode())
                os._exit(0)

            threading.Thread(target=check).start()
            return  # back into the engine, as a dispatch call does
        os.close(write_fd)
        fork.pipes[pid] = read_fd  # type: ignore[attr-defined]
        pids.append(pid)
        recorder(batch)

    d = make(dispatch, delay=0.01)
    d.enqueue("parent")
    assert d.flush(timeout=10)
    assert collect(pids[0]) == [True, 0, 0, True, ["child"]]
    assert recorder.items == ["parent"]
