"""GroupCommit alone: durable appends of concurrent threads share writes.

The write is a function that stands in for a server: it records each
group and takes a few milliseconds, the round trip being simulated."""

from __future__ import annotations

import linecache
import signal
import sys
import threading
import time
from typing import List

import pytest

from batchdispatch.exceptions import SpoolError
from batchdispatch.spool._group_commit import GroupCommit


class Server:
    """Stores values in groups; each write takes *seconds*, as a round trip would."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.groups: List[List[int]] = []
        self.lock = threading.Lock()

    def write(self, values: List[int]) -> List[int]:
        time.sleep(self.seconds)  # the simulated round trip
        with self.lock:
            self.groups.append(list(values))
        return [-value for value in values]


def run(commit: GroupCommit[int], threads: int, each: int) -> List[List[int]]:
    results: List[List[int]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads)

    def produce(number: int) -> None:
        barrier.wait()
        for n in range(each):
            value = number * each + n + 1
            results[number].append(commit.submit(value) + value)  # 0 when its own id came back

    workers = [threading.Thread(target=produce, args=(number,)) for number in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert not worker.is_alive()
    return results


def test_each_thread_gets_its_own_id_and_every_value_is_written_once() -> None:
    server = Server(0.001)
    results = run(GroupCommit(server.write, "test"), threads=4, each=50)
    assert all(result == [0] * 50 for result in results)
    written = sorted(value for group in server.groups for value in group)
    assert written == list(range(1, 201))


def test_threads_that_each_wait_for_their_own_value_share_writes() -> None:
    # Four threads, each appending again as soon as its value is stored. Without
    # gathering, the leader's thread is back first and writes alone, while the
    # other three queue for the write after: about 2 values per write.
    server = Server(0.004)
    run(GroupCommit(server.write, "test"), threads=4, each=100)
    sizes = [len(group) for group in server.groups]
    mean = sum(sizes) / len(sizes)
    assert mean > 3.0, f"{mean:.2f} values per write: {sizes[:40]}"


def test_a_thread_alone_never_waits_to_gather() -> None:
    server = Server(0.0)
    commit: GroupCommit[int] = GroupCommit(server.write, "test")
    for n in range(1, 201):
        assert commit.submit(n) == -n
    assert [len(group) for group in server.groups] == [1] * 200


def test_a_failed_write_fails_every_value_of_its_group_and_the_next_write_goes_on() -> None:
    calls: List[List[int]] = []

    def write(values: List[int]) -> List[int]:
        calls.append(list(values))
        if len(calls) == 1:
            raise SpoolError("spool test: the server went away", path="test", kind="unreachable")
        return [-value for value in values]

    commit: GroupCommit[int] = GroupCommit(write, "test")
    with pytest.raises(SpoolError, match="went away"):
        commit.submit(1)
    assert commit.submit(2) == -2


def test_a_waiting_thread_interrupted_leaves_its_value_unwritten_and_the_others_go_on() -> None:
    # The main thread waits for its turn behind another thread's slow write;
    # a signal handler raises in it there (as Ctrl-C would). Its value is
    # withdrawn, and the writes after go on: the lead was not stranded.
    release = threading.Event()
    writing = threading.Event()
    groups: List[List[int]] = []

    def write(values: List[int]) -> List[int]:
        groups.append(list(values))
        writing.set()
        release.wait(30)
        return [-value for value in values]

    commit: GroupCommit[int] = GroupCommit(write, "test")

    class Interrupted(Exception):
        pass

    def interrupt(signum: int, frame: object) -> None:
        raise Interrupted

    leader = threading.Thread(target=commit.submit, args=(1,))
    leader.start()
    assert writing.wait(30)
    main = threading.get_ident()
    sender = threading.Thread(target=lambda: (wait_for_turn(main), signal.pthread_kill(main, signal.SIGUSR1)))
    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        sender.start()
        with pytest.raises(Interrupted):
            commit.submit(2)
        sender.join(30)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    release.set()
    leader.join(30)
    assert not leader.is_alive()
    assert commit.submit(3) == -3
    assert groups == [[1], [3]]  # 2 was withdrawn, never written


def wait_for_turn(thread_id: int) -> None:
    """Return once *thread_id* waits for its turn in GroupCommit (its value queued).

    White-box on purpose: the point to interrupt is one line, found by its
    text in the thread's current frame (``sys._current_frames`` is public)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(thread_id)
        if frame is not None and frame.f_code.co_name == "_join" and "released by a leader" in (
            linecache.getline(frame.f_code.co_filename, frame.f_lineno)
        ):
            return
        time.sleep(0.001)
    raise AssertionError("the thread never waited for its turn")
