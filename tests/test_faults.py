"""The fault suite of issue 6: fork storms, ten million items on a full
queue, gevent, and items enqueued after the exit hook has run.

Every test runs its scenario in a fresh interpreter (``run_python``), so the
test process itself never forks with threads running, is never
monkey-patched, and the scenarios exit for real. Each script prints one
JSON line (or plain lines) that the test checks; a script that hangs dumps
its threads' stacks (faulthandler) before pytest's timeout would.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from typing import Any, Dict, Iterator

import pytest

from batchdispatch._deadlines import monotonic

from .conftest import ROOT, run_python


def _last_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


# -- fork storm -------------------------------------------------------------------
#
# Four threads enqueue into a BackgroundDispatcher and a KeyedDispatcher (and
# a fifth flushes both in a loop) while the main thread forks 100 children,
# four at a time. Each child enqueues a few items of its own, flushes and
# shuts down with timeouts, writes what its sinks delivered to a pipe and
# leaves with os._exit. The parent reads each pipe to its end with a
# deadline, and kills a child that does not get there (SIGABRT, so that
# faulthandler prints where it is stuck).

FORK_STORM = r"""
import faulthandler, json, os, select, signal, threading, time, warnings

warnings.simplefilter("error")
# 3.12+ warns on forking a process with threads: that is what this storm does.
warnings.filterwarnings("ignore", r"This process \(pid=\d+\) is multi-threaded", DeprecationWarning)
faulthandler.enable()  # a hung child gets SIGABRT: its threads' stacks go to stderr
faulthandler.dump_traceback_later(100, exit=True)  # and so does a hung parent

from batchdispatch import BackgroundDispatcher, KeyedDispatcher, RetryPolicy

FORKS, WINDOW, CHILD_ITEMS, CHILD_TIMEOUT = 100, 4, 12, 20.0
KEYS = ("k0", "k1", "k2")
FAIL_EVERY = int(os.environ["STORM_FAIL_EVERY"])  # 0: never; else fail some batches once
QUEUE = int(os.environ["STORM_QUEUE"]) or None
PARENT = os.getpid()
lock = threading.Lock()
got = {}  # ("bg" or key, producer) -> the n the parent's sinks delivered, in order
failed_once = set()  # first items of the batches the parent's sinks failed
child_pipe = [-1]  # in a child: where its sinks write what they deliver


def child_sink(kind, key, batch):
    os.write(child_pipe[0], (json.dumps([kind, key, batch]) + "\n").encode())


def parent_sink(kind, batch):
    first = tuple(batch[0])
    if FAIL_EVERY and first[1] % FAIL_EVERY == 0 and first not in failed_once:
        failed_once.add(first)
        raise ConnectionError("the first attempt of this batch fails")
    with lock:
        for tid, n in batch:
            got.setdefault((kind, tid), []).append(n)


def send(batch):
    if os.getpid() != PARENT:
        return child_sink("bg", None, batch)
    return parent_sink("bg", batch)


def deliver(key, batch):
    if os.getpid() != PARENT:
        return child_sink("keyed", key, batch)
    return parent_sink(key, batch)


retry = RetryPolicy(max_attempts=3, backoff=0.002) if FAIL_EVERY else None
bg = BackgroundDispatcher(send, delay=0.002, max_batch_size=200, max_queue_size=QUEUE, retry=retry,
                          on_error=lambda exc, batch: None)
keyed = KeyedDispatcher(deliver, delay=0.002, max_batch_size=200, max_queue_size=QUEUE, retry=retry,
                        on_error=lambda exc, batch: None, max_concurrent_batches=3)
stop = threading.Event()
produced = [0] * 4
accepted = {}  # like got: the n that enqueue accepted


started = [threading.Event() for _ in range(4)]


def produce(tid):
    mine = accepted["bg", tid] = []
    per_key = [accepted.setdefault((key, tid), []) for key in KEYS]
    n = 0
    while not stop.is_set():
        if bg.enqueue((tid, n)):
            mine.append(n)
        if keyed.enqueue(KEYS[n % 3], (tid, n)):
            per_key[n % 3].append(n)
        n += 1
        started[tid].set()
        if n % 200 == 0:
            time.sleep(0.0002)  # paces the producers, to bound what the parent keeps
    produced[tid] = n


flushes = [0]


def flusher():
    # Forks also land while a flush waits, with the parent's flush targets set.
    while not stop.is_set():
        ok = bg.flush(timeout=10) and keyed.flush(10, key=KEYS[flushes[0] % 3])
        flushes[0] += 1 if ok else 10**6


def child(pipe):
    code = 1
    try:
        child_pipe[0] = pipe
        me = os.getpid()
        before = [bg.stats().enqueued, keyed.stats().enqueued, bg.stats().worker_alive]
        ok = [bg.enqueue(["child", me, i]) for i in range(CHILD_ITEMS)]
        ok += [keyed.enqueue(KEYS[i % 3], ["child", me, i]) for i in range(CHILD_ITEMS)]
        flushed = [bg.flush(timeout=10), keyed.flush(timeout=10)]
        closed = [bg.shutdown(timeout=10), keyed.shutdown(timeout=10)]
        counts = [[s.enqueued, s.dispatched, s.dropped] for s in (bg.stats(), keyed.stats())]
        done = {"before": before, "accepted": all(ok), "flushed": flushed, "closed": closed, "counts": counts}
        os.write(pipe, (json.dumps(["done", None, done]) + "\n").encode())
        code = 0
    finally:
        os._exit(code)


def check_child(pid, text):
    problems = []
    delivered = {"bg": {}, "keyed": {}}
    done = None
    for line in text.splitlines():
        kind, key, payload = json.loads(line)
        if kind == "done":
            done = payload
            continue
        for item in payload:
            if item[:2] != ["child", pid]:
                problems.append(f"child {pid} delivered {item!r}, not its own item")
            delivered[kind].setdefault(key, []).append(item[2])
    per_key = {key: list(range(k, CHILD_ITEMS, 3)) for k, key in enumerate(KEYS)}
    if delivered != {"bg": {None: list(range(CHILD_ITEMS))}, "keyed": per_key}:
        problems.append(f"child {pid} delivered {delivered}")
    expected = {"before": [0, 0, False], "accepted": True, "flushed": [True, True],
                "closed": [True, True], "counts": [[CHILD_ITEMS, CHILD_ITEMS, 0]] * 2}
    if done != expected:
        problems.append(f"child {pid} reported {done}")
    return problems


threads = [threading.Thread(target=produce, args=(t,)) for t in range(4)]
threads.append(threading.Thread(target=flusher))
for thread in threads:
    thread.start()
# Both dispatchers have started: a fork during a dispatcher's very first
# enqueue is the subject of a test of its own.
assert all(event.wait(10) for event in started)
live = {}  # read end of a child's pipe -> [pid, what was read, when it was forked]
forks = 0
hung, failed = [], []
while forks < FORKS or live:
    while forks < FORKS and len(live) < WINDOW:
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            child(write_fd)
        os.close(write_fd)
        live[read_fd] = [pid, b"", time.monotonic()]
        forks += 1
    ready, _, _ = select.select(list(live), [], [], 0.5)
    for fd in ready:
        chunk = os.read(fd, 65536)
        if chunk:
            live[fd][1] += chunk
            continue
        pid, data, _ = live.pop(fd)  # end of file: the child has gone
        os.close(fd)
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        if status != 0:
            failed.append(f"child {pid} exited with {status}")
        failed.extend(check_child(pid, data.decode()))
    for fd, (pid, data, forked_at) in list(live.items()):
        if time.monotonic() - forked_at > CHILD_TIMEOUT:
            os.kill(pid, signal.SIGABRT)
            os.waitpid(pid, 0)
            hung.append(pid)
            del live[fd]
            os.close(fd)
stop.set()
for thread in threads:
    thread.join()
flushed = [bg.flush(timeout=30), keyed.flush(timeout=30)]
closed = [bg.shutdown(timeout=30), keyed.shutdown(timeout=30)]
wrong = [f"{stream}: accepted {len(items)}, delivered {got.get(stream, [])[:5]}..."
         for stream, items in accepted.items() if got.get(stream, []) != items]
totals = [sum(len(items) for (kind, _), items in accepted.items() if (kind == "bg") == is_bg)
          for is_bg in (True, False)]
print(json.dumps({
    "forks": forks,
    "hung": hung,
    "failed": failed[:10],
    "wrong": wrong[:10],
    "flushed": flushed,
    "closed": closed,
    "flushes": 0 < flushes[0] < 10**6,
    "totals": totals,
    "stats": [{"enqueued": s.enqueued, "dispatched": s.dispatched, "failed": s.failed,
               "retried": s.retried, "dropped": dict(s.dropped_by_reason)}
              for s in (bg.stats(), keyed.stats())],
}))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize(
    ("fail_every", "queue"), [(0, 0), (5, 3000)], ids=["unbounded", "retrying-and-bounded"]
)
def test_a_fork_storm_never_deadlocks_a_child_nor_delivers_an_item_twice(fail_every: int, queue: int) -> None:
    """100 forks while four threads enqueue and a fifth flushes.

    Every child ends (none deadlocks), delivers its own items exactly once
    and none of the parent's; the parent delivers each item it accepted
    exactly once, in each producer's order (per key for the keyed one),
    batches waiting for a retry and a bounded queue included.
    """
    result = run_python(
        FORK_STORM, timeout=110, env={"STORM_FAIL_EVERY": str(fail_every), "STORM_QUEUE": str(queue)}
    )
    report = _last_json(result)
    assert report["forks"] == 100
    assert report["hung"] == [], result.stderr
    assert report["failed"] == []
    assert report["wrong"] == []
    assert report["flushed"] == report["closed"] == [True, True]
    assert report["flushes"]
    for stats, total in zip(report["stats"], report["totals"]):
        assert total > 0
        assert stats["enqueued"] == stats["dispatched"] == total
        assert stats["failed"] == 0
        assert set(stats["dropped"]) <= ({"queue_full"} if queue else set())
        assert (stats["retried"] > 0) == bool(fail_every)


FORK_DURING_FIRST_ENQUEUE = r"""
import json, os, select, signal, sys, threading, warnings

warnings.simplefilter("error")
warnings.filterwarnings("ignore", r"This process \(pid=\d+\) is multi-threaded", DeprecationWarning)

from batchdispatch import BackgroundDispatcher, KeyedDispatcher

paused, release = threading.Event(), threading.Event()


def hold_after_an_import_search(frame, event, arg):
    # Holds the thread where importlib has searched for a module and holds
    # that module's lock, but not the global import lock os.fork() waits for.
    if frame.f_code.co_name != "_find_spec":
        return None

    def local(frame, event, arg):
        if event == "return" and not paused.is_set():
            paused.set()
            release.wait(10)
        return local

    return local


def first_enqueue():
    sys.settrace(hold_after_an_import_search)
    try:
        parent.enqueue("parent's item")
    finally:
        sys.settrace(None)
        paused.set()  # it imported nothing: the fork comes after it


parent = BackgroundDispatcher(lambda batch: None, delay=0.01)
other = KeyedDispatcher(lambda key, batch: None, delay=0.01)
first = threading.Thread(target=first_enqueue)
first.start()
assert paused.wait(10)
read_fd, write_fd = os.pipe()
pid = os.fork()
if pid == 0:
    ok = other.enqueue("key", "child's item") and other.flush(timeout=5)
    os.write(write_fd, b"delivered" if ok else b"not flushed")
    os._exit(0)
os.close(write_fd)
release.set()
first.join()
if select.select([read_fd], [], [], 3)[0]:
    child = os.read(read_fd, 100).decode() or "exited"
else:
    os.kill(pid, signal.SIGKILL)
    child = "hung"
os.waitpid(pid, 0)
print(json.dumps({"child": child, "parent": parent.flush(timeout=5)}))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_fork_while_another_thread_makes_its_first_enqueue_leaves_the_child_working() -> None:
    """A thread's first enqueue may be where the fork lands (the storm's
    first milliseconds): the child must still enqueue and flush."""
    report = _last_json(run_python(FORK_DURING_FIRST_ENQUEUE, timeout=60))
    assert report == {"child": "delivered", "parent": True}


# -- bounded memory -------------------------------------------------------------------
#
# Ten million enqueues into a queue of 10,000 held by a slow sink. The sink's
# first call waits until the producers have been refused once, so the bound
# is reached whatever the machine's speed. Memory is the kernel's count:
# the peak RSS at the end (VmHWM) less the RSS before the first enqueue
# (VmRSS), an upper bound on what the run added. Ten million retained items
# would need over 300 MiB (a pointer and an int object each); the script
# also checks that the meter sees a million retained ints.

BOUNDED_MEMORY = r"""
import faulthandler, json, os, threading, time, warnings

warnings.simplefilter("error")
faulthandler.dump_traceback_later(170, exit=True)

from batchdispatch import BackgroundDispatcher, KeyedDispatcher

KIND, PRODUCERS = os.environ["MEMORY_KIND"], int(os.environ["MEMORY_PRODUCERS"])
ATTEMPTS, QUEUE, BATCH = 10_000_000, 10_000, 5_000
KEYS = ("a", "b", "c", "d")
lock = threading.Lock()
refused_once = threading.Event()
delivered, peak_pending = [0], [0]


def send(batch):
    if not refused_once.wait(120):
        raise RuntimeError("the producers were never refused")
    pending = d.stats().pending  # queued, plus this batch
    with lock:
        delivered[0] += len(batch)
        peak_pending[0] = max(peak_pending[0], pending)
    time.sleep(0.002)  # the slow part: a few million items a second at most


if KIND == "bg":
    d = BackgroundDispatcher(send, delay=0.01, max_batch_size=BATCH, max_queue_size=QUEUE)
else:  # two workers, each with half a batch out at most
    d = KeyedDispatcher(lambda key, batch: send(batch), delay=0.01, max_batch_size=BATCH // 2,
                        max_queue_size=QUEUE, max_concurrent_batches=2)


def kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


accepted = [0] * PRODUCERS


def produce(tid):
    enqueue, n, refused = d.enqueue, 0, 0
    for i in range(ATTEMPTS // PRODUCERS):
        if KIND == "bg":
            ok = enqueue(i)
        else:
            ok = enqueue(KEYS[i & 3], i)
        if ok:
            n += 1
        else:
            refused += 1
            if refused == 1:
                refused_once.set()
    accepted[tid] = n


base = kib("VmRSS")
started = time.monotonic()
threads = [threading.Thread(target=produce, args=(t,)) for t in range(PRODUCERS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
closed = d.shutdown(timeout=60)
growth = kib("VmHWM") - base
retained = list(range(10**6, 2 * 10**6))  # what the meter shows for a million retained ints
meter = kib("VmHWM") - base - growth
del retained
s = d.stats()
print(json.dumps({
    "closed": closed,
    "growth_mib": growth / 1024,
    "million_ints_mib": meter / 1024,
    "accepted": sum(accepted),
    "enqueued": s.enqueued,
    "dispatched": s.dispatched,
    "failed": s.failed,
    "pending": s.pending,
    "dropped": s.dropped,
    "dropped_by_reason": dict(s.dropped_by_reason),
    "delivered": delivered[0],
    "peak_pending": peak_pending[0],
    "bound": QUEUE + BATCH + PRODUCERS,  # queued, out with the sink, one racing append per producer
    "seconds": round(time.monotonic() - started, 1),
}))
"""

#: kind -> producer threads.
MEMORY_RUNS = {"bg": 1, "keyed": 2}


@pytest.fixture(scope="module")
def memory_runs() -> Iterator[Dict[str, subprocess.Popen[str]]]:
    """Start both ten-million-item runs at once: they take one core each."""
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="error::ResourceWarning")
    runs = {
        kind: subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(BOUNDED_MEMORY)],
            env=dict(env, MEMORY_KIND=kind, MEMORY_PRODUCERS=str(producers)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for kind, producers in MEMORY_RUNS.items()
    }
    try:
        yield runs
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the RSS from /proc")
@pytest.mark.parametrize("kind", list(MEMORY_RUNS))
def test_ten_million_items_through_a_slow_sink_keep_memory_bounded_and_every_drop_counted(
    memory_runs: Dict[str, subprocess.Popen[str]], kind: str
) -> None:
    proc = memory_runs[kind]
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 0, stderr
    report = json.loads(stdout.splitlines()[-1])
    assert report["closed"]
    assert report["million_ints_mib"] > 20, report  # the meter sees retained items
    assert report["growth_mib"] < 40, report  # ten million retained items: over 300 MiB
    assert report["peak_pending"] <= report["bound"], report
    reasons = report["dropped_by_reason"]
    assert set(reasons) == {"queue_full"}, report
    assert report["dropped"] == reasons["queue_full"] > 0
    assert report["accepted"] == report["enqueued"]
    assert report["enqueued"] + reasons["queue_full"] == 10_000_000
    assert report["dispatched"] + report["failed"] == report["enqueued"] == report["delivered"]
    assert report["failed"] == report["pending"] == 0


# -- gevent ---------------------------------------------------------------------------

needs_gevent = pytest.mark.skipif(importlib.util.find_spec("gevent") is None, reason="needs gevent")

GEVENT_GREENLETS = r"""
from gevent import monkey
monkey.patch_all()  # before batchdispatch, threading and logging are imported

import json
import gevent
from batchdispatch import BackgroundDispatcher, KeyedDispatcher

got, per_key = [], {}
bg = BackgroundDispatcher(lambda batch: got.extend(batch), delay=0.01, max_batch_size=100)
keyed = KeyedDispatcher(lambda key, batch: per_key.setdefault(key, []).extend(batch),
                        delay=0.01, max_batch_size=100, max_concurrent_batches=3)


def produce(g):
    accepted = 0
    for i in range(1000):
        accepted += bg.enqueue((g, i)) + keyed.enqueue(f"k{i % 3}", (g, i))
        if i % 50 == 0:
            gevent.sleep(0)  # let the other greenlets, and the workers, run
    return accepted


greenlets = [gevent.spawn(produce, g) for g in range(5)]
gevent.joinall(greenlets, timeout=30, raise_error=True)
flushed = [bg.flush(timeout=10), keyed.flush(timeout=10)]
delivered = [len(got), sum(map(len, per_key.values()))]
closed = [bg.shutdown(timeout=10), keyed.shutdown(timeout=10)]
in_order = all([i for g2, i in got if g2 == g] == list(range(1000)) for g in range(5)) and all(
    [i for g2, i in items if g2 == g] == list(range(k, 1000, 3))
    for k, (key, items) in enumerate(sorted(per_key.items())) for g in range(5)
)
print(json.dumps({
    "patched": monkey.is_module_patched("threading"),
    "accepted": [g.value for g in greenlets],
    "flushed": flushed,
    "delivered_at_flush": delivered,
    "closed": closed,
    "in_order": in_order,
    "stats": [[s.enqueued, s.dispatched, s.dropped] for s in (bg.stats(), keyed.stats())],
}))
"""


@needs_gevent
def test_gevent_greenlets_enqueue_and_flush() -> None:
    report = _last_json(run_python(GEVENT_GREENLETS, timeout=60))
    assert report["patched"]
    assert report["accepted"] == [2000] * 5
    assert report["flushed"] == [True, True]
    assert report["delivered_at_flush"] == [5000, 5000]
    assert report["closed"] == [True, True]
    assert report["in_order"]
    assert report["stats"] == [[5000, 5000, 0], [5000, 5000, 0]]


GEVENT_EXIT = r"""
from gevent import monkey
monkey.patch_all()

import atexit, sys, threading
import gevent


def late():  # registered first: runs after batchdispatch's exit hook
    bg.enqueue("late")
    keyed.enqueue("late", "late")


atexit.register(late)
from batchdispatch import BackgroundDispatcher, KeyedDispatcher


def where():
    return "worker" if threading.current_thread().name.startswith("batchdispatch") else "caller"


def send(batch):
    gevent.sleep(0.001)  # a cooperative sink: the exit hook must yield to it
    sys.stdout.write(f"bg {len(batch)} {where()}\n")


def deliver(key, batch):
    gevent.sleep(0.001)
    sys.stdout.write(f"{key} {len(batch)} {where()}\n")


bg = BackgroundDispatcher(send, delay=3600, max_batch_size=500, max_queue_size=None)
keyed = KeyedDispatcher(deliver, delay=3600, max_batch_size=500, max_queue_size=None)


def produce(g):
    for i in range(1000):
        bg.enqueue((g, i))
        keyed.enqueue(f"k{i % 3}", (g, i))
        if i % 100 == 0:
            gevent.sleep(0)


gevent.joinall([gevent.spawn(produce, g) for g in range(5)], raise_error=True)
# The script simply ends: the delay is an hour, so only the exit flush delivers.
"""


@needs_gevent
def test_gevent_exit_flush_delivers_everything_and_late_items_inline() -> None:
    result = run_python(GEVENT_EXIT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    counts: Dict[Any, int] = {}
    for line in result.stdout.splitlines():
        key, size, where = line.split()
        counts[key, where] = counts.get((key, where), 0) + int(size)
    assert counts == {
        ("bg", "worker"): 5000,
        ("k0", "worker"): 1670, ("k1", "worker"): 1665, ("k2", "worker"): 1665,
        ("bg", "caller"): 1, ("late", "caller"): 1,
    }


GEVENT_BLOCKED = r"""
from gevent import monkey
monkey.patch_all()

import json, logging, time
import gevent
from batchdispatch import BackgroundDispatcher, KeyedDispatcher
from batchdispatch._deadlines import monotonic

logging.basicConfig()
entered = gevent.event.Event()


def stuck(*args):
    entered.set()
    gevent.sleep(60)  # a dispatch that never comes back in time


bg = BackgroundDispatcher(stuck, delay=0.01, exit_timeout=0.5)
keyed = KeyedDispatcher(stuck, delay=0.01, exit_timeout=0.5)
timings = {}
for name, d, enqueue in (("bg", bg, lambda: bg.enqueue(1)), ("keyed", keyed, lambda: keyed.enqueue("k", 1))):
    entered.clear()
    enqueue()
    assert entered.wait(10)
    enqueue()  # queued behind the stuck batch
    started = monotonic()
    flushed = d.flush(timeout=0.3)
    flush_took = monotonic() - started
    started = monotonic()
    closed = d.shutdown(timeout=0.5)
    timings[name] = [flushed, round(flush_took, 2), closed, round(monotonic() - started, 2)]
print(json.dumps(timings), flush=True)
# Both workers are still inside gevent.sleep(60): the exit hook waits 0.5 s at most.
"""


@needs_gevent
def test_gevent_flush_shutdown_and_exit_hold_their_timeouts_when_dispatch_blocks() -> None:
    started = monotonic()
    result = run_python(GEVENT_BLOCKED, timeout=60)
    elapsed = monotonic() - started
    report = _last_json(result)
    for name in ("bg", "keyed"):
        flushed, flush_took, closed, shutdown_took = report[name]
        assert not flushed
        assert not closed
        assert 0.3 <= flush_took < 2.0, report
        assert 0.5 <= shutdown_took < 2.5, report
    assert result.stderr.count("exit flush timed out") == 2, result.stderr
    assert elapsed < 20  # the exit hook gave up after 0.5 s, not after the sleeps' 60 s


# -- finalization ---------------------------------------------------------------------
#
# tests/test_exit.py covers items enqueued on a BackgroundDispatcher (old or
# new) and on a KeyedDispatcher by an atexit handler that runs after the
# hook, and the queue bound while a daemon thread enqueues through the
# drain. These add logging through a BatchHandler (and logging's own
# shutdown after the hook), dispatchers first used in atexit handlers on
# either side of the hook (3.12+ refuses them a thread), and daemon threads
# that go on enqueueing after the hook.

LATE_LOGGING = r"""
import atexit, logging, sys, threading  # logging first: its shutdown (flush, close) runs after our hook


def late():  # registered before batchdispatch is imported: runs after its exit hook
    log.warning("late record")
    keyed.enqueue("late", "late keyed")
    KeyedDispatcher(deliver, delay=3600, name="late-new").enqueue("new", "late new keyed")


atexit.register(late)
from batchdispatch import BackgroundDispatcher, KeyedDispatcher
from batchdispatch.handlers import BatchHandler


def where():
    return "worker" if threading.current_thread().name.startswith("batchdispatch") else "caller"


def send(batch):
    for record in batch:
        sys.stdout.write(f"{record['message']}|{where()}\n")


def deliver(key, batch):
    for item in batch:
        sys.stdout.write(f"{item}|{where()}\n")


logged = BackgroundDispatcher(send, delay=3600, name="logged")
keyed = KeyedDispatcher(deliver, delay=3600, name="keyed")
log = logging.getLogger("app")
log.propagate = False
log.addHandler(BatchHandler(logged))


def early():  # registered after the import: runs before the hook (3.12 refuses new threads here)
    log.warning("early record")
    KeyedDispatcher(deliver, delay=3600, name="early-new").enqueue("new", "early new keyed")
    BackgroundDispatcher(send, delay=3600, name="early-new-bg").enqueue({"message": "early new bg"})


atexit.register(early)
log.warning("main record")
keyed.enqueue("main", "main keyed")
"""


def test_atexit_handlers_on_both_sides_of_the_hook_log_and_enqueue_without_a_drop() -> None:
    result = run_python(LATE_LOGGING)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no drop warning, no logging error at its shutdown
    delivered = dict(line.split("|") for line in result.stdout.splitlines())
    assert len(delivered) == len(result.stdout.splitlines())  # each item once
    assert delivered.pop("main record") == delivered.pop("main keyed") == "worker"
    assert delivered.pop("early record") == "worker"  # the dispatcher's worker was running
    # A dispatcher first used there gets a worker if the Python version allows one.
    assert delivered.pop("early new keyed") in ("worker", "caller")
    assert delivered.pop("early new bg") in ("worker", "caller")
    assert delivered == {"late record": "caller", "late keyed": "caller", "late new keyed": "caller"}


DAEMON_AT_EXIT = r"""
import atexit, json, os, sys, threading, time

PACE, SLOW_SINK = float(os.environ["PACE"]), float(os.environ["SLOW_SINK"])


def after_hook():  # registered before batchdispatch is imported: runs after its exit hook
    hook_done.set()
    late_enough = went_on.wait(20)
    stop.set()
    producer.join(20)
    report = {"late_enough": late_enough, "stopped": not producer.is_alive(), "attempts": attempts[0]}
    for name, d, got in (("bg", bg, got_bg), ("keyed", keyed, got_keyed)):
        # A sync point: a batch still in dispatch when the hook gave up settles first,
        # so that what the sink got and what stats() counts agree.
        d.shutdown(timeout=10)
        s = d.stats()
        report[name] = {
            "accepted": accepted[name], "delivered": got, "enqueued": s.enqueued,
            "dispatched": s.dispatched, "dropped": dict(s.dropped_by_reason), "pending": s.pending,
        }
    report["late_places"] = sorted(late_places)
    print(json.dumps(report))


atexit.register(after_hook)
from batchdispatch import BackgroundDispatcher, KeyedDispatcher

got_bg, got_keyed, late_places = [], [], set()
hook_done, went_on, stop, started = (threading.Event() for _ in range(4))


def place():
    name = threading.current_thread().name
    return "worker" if name.startswith("batchdispatch") else name


def send(batch):
    if hook_done.is_set():
        late_places.add(place())
    got_bg.extend(batch)
    if SLOW_SINK:
        time.sleep(SLOW_SINK)


def deliver(key, batch):
    if hook_done.is_set():
        late_places.add(place())
    got_keyed.extend(batch)


bg = BackgroundDispatcher(send, delay=0.05, exit_timeout=1)
keyed = KeyedDispatcher(deliver, delay=0.05, exit_timeout=1)
accepted = {"bg": [], "keyed": []}
attempts = [0]


def produce():
    n = late = refused = 0
    while not stop.is_set():
        after = hook_done.is_set()
        if bg.enqueue(n):
            accepted["bg"].append(n)
            late += after
            if late == 100:
                went_on.set()  # accepted 100 items after the hook
        elif after:
            refused += 1
            if refused == 100:
                went_on.set()  # or refused 100: the exit budget is spent
        if keyed.enqueue("k", n):
            accepted["keyed"].append(n)
        n += 1
        attempts[0] = n
        if n == 100:
            started.set()
        if PACE:
            time.sleep(PACE)  # a thread that logs now and then, not a sync


producer = threading.Thread(target=produce, name="daemon-producer", daemon=True)
producer.start()
started.wait(10)
# The main module ends with the daemon thread still enqueueing.
"""


def _daemon_at_exit(pace: float, slow_sink: float) -> Any:
    result = run_python(DAEMON_AT_EXIT, timeout=60, env={"PACE": str(pace), "SLOW_SINK": str(slow_sink)})
    report = _last_json(result)
    assert report["late_enough"]
    assert report["stopped"]
    return report


def test_a_daemon_thread_enqueueing_through_exit_has_every_item_delivered() -> None:
    """A thread that enqueues now and then: the hook drains what came before
    it, and what comes after it is delivered on that thread; nothing is
    dropped, nothing delivered twice."""
    report = _daemon_at_exit(pace=0.0005, slow_sink=0)
    for name in ("bg", "keyed"):
        stats = report[name]
        assert stats["dropped"] == {}
        assert stats["accepted"] == list(range(report["attempts"]))
        assert stats["delivered"] == stats["accepted"]  # once each, in order
        assert stats["enqueued"] == stats["dispatched"] == report["attempts"]
        assert stats["pending"] == 0
    assert report["late_places"] == ["daemon-producer"]


def test_a_daemon_thread_outrunning_a_slow_sink_at_exit_loses_nothing_as_closed() -> None:
    """A tight loop that keeps the drain busy for the whole exit budget: what
    the hook gives up, and what comes once the budget is spent (when a late
    item would make exit outlast it), is counted as "exit", each item once,
    and none is refused as "closed"."""
    report = _daemon_at_exit(pace=0, slow_sink=0.001)
    for name in ("bg", "keyed"):
        stats = report[name]
        assert set(stats["dropped"]) <= {"exit", "queue_full"}, stats["dropped"]
        delivered, accepted = stats["delivered"], stats["accepted"]
        assert len(delivered) == len(set(delivered)) == stats["dispatched"]
        assert delivered == sorted(delivered)
        assert set(delivered) <= set(accepted)
        refused = report["attempts"] - len(accepted)
        given_up = len(accepted) - len(delivered)
        assert refused + given_up == sum(stats["dropped"].values())
        assert stats["enqueued"] == len(accepted)
        assert stats["pending"] == 0
    # Delivered after the hook: within its budget on the producing thread, or the batch in
    # dispatch at the deadline, finishing on the worker.
    assert set(report["late_places"]) <= {"daemon-producer", "worker"}
