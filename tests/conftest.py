"""Shared fixtures: leak checks, a dispatcher factory, a fake clock, subprocesses."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import textwrap
import threading
from typing import Any, Callable, Iterator, List

import pytest

from batchdispatch import BackgroundDispatcher, KeyedDispatcher, _process
from batchdispatch._deadlines import monotonic
from batchdispatch._gil import appends_need_lock
from batchdispatch._lifecycle import DRAINING, RUNNING
from batchdispatch.spool import SqliteSpool

# The shared servers' fixtures (see tests/services.py), for every test.
from .services import postgres_conninfo, rabbitmq_url, redis_url, spools  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


#: Marks a test of the lock-free append path's races, a path that a
#: free-threaded build (or BATCHDISPATCH_FREE_THREADED=1) never takes.
lock_free_only = pytest.mark.skipif(
    appends_need_lock(), reason="a race of the lock-free append path, which is off without a GIL"
)


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    """Fail a test that leaves a dispatcher running or a thread behind."""
    threads_before = set(threading.enumerate())
    engines_before = set(_process.members())
    yield
    alive = {RUNNING, *DRAINING}
    leaked = [e for e in _process.members() if e not in engines_before and e._state in alive]
    for engine in leaked:
        engine.shutdown(timeout=5)
    extra = [t for t in threading.enumerate() if t not in threads_before]
    for thread in extra:
        thread.join(timeout=5)
    alive = [t.name for t in extra if t.is_alive()]
    assert not leaked, f"dispatchers left running: {leaked}"
    assert not alive, f"threads leaked: {alive}"


@pytest.fixture
def path(tmp_path: Any) -> str:
    """A spool file's path in the test's own directory."""
    return str(tmp_path / "events.db")


@pytest.fixture
def spool(path: str) -> Iterator[SqliteSpool]:
    """A SqliteSpool on *path*, closed after the test."""
    with SqliteSpool(path) as s:
        yield s


@pytest.fixture
def make() -> Iterator[Callable[..., BackgroundDispatcher[Any]]]:
    """Build dispatchers that are always shut down after the test."""
    made: List[BackgroundDispatcher[Any]] = []

    def factory(dispatch: Callable[[List[Any]], object], **options: Any) -> BackgroundDispatcher[Any]:
        dispatcher: BackgroundDispatcher[Any] = BackgroundDispatcher(dispatch, **options)
        made.append(dispatcher)
        return dispatcher

    yield factory
    for dispatcher in made:
        dispatcher.shutdown(timeout=10)


@pytest.fixture
def make_keyed() -> Iterator[Callable[..., KeyedDispatcher[Any]]]:
    """Build keyed dispatchers that are always shut down after the test."""
    made: List[KeyedDispatcher[Any]] = []

    def factory(deliver: Callable[[Any, List[Any]], object], **options: Any) -> KeyedDispatcher[Any]:
        dispatcher: KeyedDispatcher[Any] = KeyedDispatcher(deliver, **options)
        made.append(dispatcher)
        return dispatcher

    yield factory
    for dispatcher in made:
        dispatcher.shutdown(timeout=10)


class KeyedRecorder:
    """A deliver callable that keeps (key, batch) pairs."""

    def __init__(self) -> None:
        self.calls: List[Any] = []
        self.cond = threading.Condition()

    def __call__(self, key: Any, batch: List[Any]) -> None:
        with self.cond:
            self.calls.append((key, list(batch)))
            self.cond.notify_all()

    def wait_calls(self, count: int, timeout: float = 10.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.calls) >= count, timeout)

    def items(self, key: Any) -> List[Any]:
        with self.cond:
            return [item for k, batch in self.calls if k == key for item in batch]


class Recorder:
    """A dispatch callable that keeps every batch, with a lock of its own."""

    def __init__(self) -> None:
        self.batches: List[List[Any]] = []
        self.cond = threading.Condition()

    def __call__(self, batch: List[Any]) -> None:
        with self.cond:
            self.batches.append(list(batch))
            self.cond.notify_all()

    def wait_batches(self, count: int, timeout: float = 10.0) -> bool:
        """Wait until *count* batches have arrived (a sync point, not a sleep)."""
        with self.cond:
            return self.cond.wait_for(lambda: len(self.batches) >= count, timeout)

    @property
    def items(self) -> List[Any]:
        with self.cond:
            return [item for batch in self.batches for item in batch]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


class FakeClock:
    """A clock that moves only when told to: ``clock.advance(seconds)``.

    ``last`` is the value it last returned: the engine reads its clock only
    on the worker thread, right before deciding to take a batch, so a
    dispatch callable can read ``last`` to learn when that decision was made.
    """

    def __init__(self) -> None:
        self.now = 1000.0
        self.last = 0.0
        self.reads = 0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        with self.lock:
            self.last = self.now
            self.reads += 1
            return self.now

    def advance(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@contextlib.contextmanager
def _workers_locked(dispatcher: Any) -> Iterator[Any]:
    """The dispatcher's worker threads' part (``Workers``), with its lock held.

    The helpers below must look inside: whether a worker sleeps, and with
    what timeout, is something no public call shows (a sleeping worker and
    one about to take a batch look alike from outside), and waking one to
    re-read a fake clock has no public trigger. They do it here only, so a
    refactor of the workers changes one place.
    """
    with dispatcher._lock:  # held by a worker unless it waits
        yield dispatcher._workers


def poke(dispatcher: Any, clock: FakeClock) -> None:
    """Make the workers look at their clock again, and wait until one has."""
    reads = clock.reads
    with _workers_locked(dispatcher) as workers:
        workers.kick_all()
    deadline = monotonic() + 10
    while clock.reads == reads:
        assert monotonic() < deadline, "the worker did not wake up"
        threading.Event().wait(0.001)


def worker_threads(dispatcher: Any) -> List[threading.Thread]:
    """The dispatcher's live worker threads, found by their documented names
    (``batchdispatch:<name>``, or ``batchdispatch:<name>-<n>`` for a pool)."""
    pattern = re.compile(re.escape(f"batchdispatch:{dispatcher.name}") + r"(-[0-9]+)?")
    return [t for t in threading.enumerate() if pattern.fullmatch(t.name) and t.is_alive()]


def worker_wait_timeout(dispatcher: BackgroundDispatcher[Any], timeout: float = 10.0) -> Any:
    """Wait until the worker sleeps; return that sleep's timeout (None: none).

    Reads what the worker notes, under the lock, before it lets go of it to
    wait, rather than trusting a sleep of the test's own.
    """
    workers = worker_threads(dispatcher)
    assert workers, "no worker thread"
    ident = workers[0].ident
    deadline = monotonic() + timeout
    while monotonic() < deadline:
        with _workers_locked(dispatcher) as workers:
            if ident in workers.waiting:
                return workers.waiting[ident]
        threading.Event().wait(0.01)
    raise AssertionError("the worker never went to sleep")


def wait_for_idle_workers(dispatcher: Any, count: int, timeout: float = 10.0) -> None:
    """Wait until exactly *count* workers are idle: asleep, and not yet woken."""
    deadline = monotonic() + timeout
    while True:
        with _workers_locked(dispatcher) as workers:
            idle = len(workers.sleepers)
        if idle == count:
            return
        assert monotonic() < deadline, f"{idle} idle workers, not {count}"
        threading.Event().wait(0.001)


def run_python(code: str, *, timeout: float = 60, env: Any = None) -> subprocess.CompletedProcess[str]:
    """Run *code* in a fresh interpreter with the checkout on sys.path."""
    environ = dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="error::ResourceWarning")
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
        check=False,
    )


def run_on_terminal(args: List[str], stdin: bytes = b"", timeout: float = 60) -> Any:
    """Run *args* with stderr on a pseudo-terminal; return (returncode, stdout, what stderr drew)."""
    import pty

    primary, secondary = pty.openpty()
    try:
        with subprocess.Popen(
            args, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=secondary,
        ) as proc:
            os.close(secondary)
            secondary = -1
            stdout, _ = proc.communicate(stdin, timeout=timeout)
        drawn = read_terminal(primary)
    finally:
        os.close(primary)
        if secondary != -1:
            os.close(secondary)
    return proc.returncode, stdout.decode(), drawn.decode()


def run_all_on_terminal(args: List[str], typed: bytes, timeout: float = 60) -> Any:
    """Run *args* with stdin, stdout and stderr on a pseudo-terminal, *typed* there first;
    return (returncode, what the terminal showed)."""
    import pty

    primary, secondary = pty.openpty()
    try:
        with subprocess.Popen(
            args, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
            stdin=secondary, stdout=secondary, stderr=secondary,
        ) as proc:
            os.close(secondary)
            secondary = -1
            os.write(primary, typed)
            proc.wait(timeout)
        drawn = read_terminal(primary)
    finally:
        os.close(primary)
        if secondary != -1:
            os.close(secondary)
    return proc.returncode, drawn.decode()


def read_terminal(primary: int) -> bytes:
    """All a pseudo-terminal's program wrote, once it has ended."""
    drawn = b""
    while True:
        try:
            chunk = os.read(primary, 4096)
        except OSError:  # EIO: the terminal's other end is closed and drained
            break
        if not chunk:
            break
        drawn += chunk
    return drawn
