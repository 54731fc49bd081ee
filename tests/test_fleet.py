"""The fleet: processes standing in for hosts share one spool on a server, and the
survivors finish the work of a host that died.

Each host is a real process with a durable BackgroundDispatcher on the
shared spool; the endpoint is a real HTTP receiver that is "down" (the
hosts' dispatch raises ConnectionError) until the test brings it up. A host
is SIGKILLed (its death is told at once on this machine), or SIGSTOPped
(cut off, as a host elsewhere is: only its lease running out frees its
pairs), or the spool's server itself is restarted.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any, Counter, Dict, Iterator, List, Tuple

import pytest

from batchdispatch.testing import Receiver

from .conftest import ROOT
from .services import POSTGRES_PORT, REDIS_PORT, PostgresServer, RedisServer, need, unique_name

psycopg = pytest.importorskip("psycopg")
redis = pytest.importorskip("redis")

HOST = """
import json, os, sys
from batchdispatch import BackgroundDispatcher, RetryPolicy
from batchdispatch.spool import PostgresSpool, RedisSpool
import requests

location, table, url, up_flag, host, lease = sys.argv[1:7]
if location.startswith("redis://"):
    spool = RedisSpool(location, table, durable=True, lease=float(lease), timeout=2)
else:
    spool = PostgresSpool(location, table=table, durable=True, lease=float(lease), timeout=2)
session = requests.Session()

def dispatch(batch):
    if not os.path.exists(up_flag):
        raise ConnectionError("the endpoint is down")
    session.post(url, json=batch, timeout=5).raise_for_status()

d = BackgroundDispatcher(
    dispatch, delay=0.05, max_batch_size=50, spool=spool, name=f"host{host}",
    retry=RetryPolicy(max_attempts=1_000_000, backoff=0.05, max_backoff=0.3, jitter=False),
)
sent = 0
for line in sys.stdin:
    command = line.split()
    if command[0] == "enqueue":
        accepted = [n for n in range(sent, sent + int(command[1])) if d.enqueue({"host": host, "n": n})]
        sent += int(command[1])
        print(json.dumps({"accepted": accepted}), flush=True)
    elif command[0] == "finish":
        d.flush(timeout=60)
        d.shutdown(timeout=30)
        spool.close()
        stats = d.stats()
        print(json.dumps({"faults": dict(stats.spool_faults), "pending": stats.pending}), flush=True)
        break
"""


class Fleet:
    """Hosts (processes) sharing one PostgresSpool table, and the endpoint they deliver to."""

    def __init__(self, conninfo: str, directory: str, lease: float) -> None:
        self.conninfo = conninfo
        self.table = unique_name("fleet")
        self.up_flag = os.path.join(directory, "endpoint-up")
        self.lease = lease
        self.receiver = Receiver().start()
        self.hosts: List[subprocess.Popen[str]] = []
        self.accepted: Dict[int, List[int]] = collections.defaultdict(list)

    def start(self, count: int) -> None:
        for host in range(count):
            self.hosts.append(subprocess.Popen(
                [sys.executable, "-c", HOST, self.conninfo, self.table, self.receiver.url, self.up_flag,
                 str(host), str(self.lease)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                env=dict(os.environ, PYTHONPATH=ROOT),
            ))

    def ask(self, host: int, command: str) -> Dict[str, Any]:
        proc = self.hosts[host]
        assert proc.stdin is not None
        assert proc.stdout is not None
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        assert line, f"host {host} ended without answering {command!r}"
        answer: Dict[str, Any] = json.loads(line)
        return answer

    def enqueue(self, count: int, hosts: Any = None) -> None:
        for host in range(len(self.hosts)) if hosts is None else hosts:
            self.accepted[host] += self.ask(host, f"enqueue {count}")["accepted"]

    def endpoint_up(self) -> None:
        with open(self.up_flag, "w"):
            pass

    def received(self) -> Counter[Tuple[int, int]]:
        return collections.Counter((int(item["host"]), item["n"]) for item in self.receiver.items)

    def close(self) -> None:
        if self.receiver is None:
            return
        for proc in self.hosts:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()
        self.receiver.close()
        self.receiver = None  # type: ignore[assignment]
        if self.conninfo.startswith("redis://"):
            client = redis.Redis.from_url(self.conninfo)
            keys = list(client.scan_iter(match=f"{{{self.table}}}:*"))
            if keys:
                client.delete(*keys)
            client.close()
            return
        with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
            for suffix in ("", "_owners", "_dead"):
                conn.execute(f"DROP TABLE IF EXISTS {self.table}{suffix}")


def wait_for_unique(receiver: Receiver, count: int, timeout: float) -> bool:
    """Wait until *receiver* has *count* distinct items (duplicates do not count)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len({json.dumps(item, sort_keys=True) for item in receiver.items}) >= count:
            return True
        left = max(0.0, deadline - time.monotonic())
        receiver.wait_for_items(receiver.item_count + 1, timeout=min(1.0, left))
    return False


@pytest.fixture
def fleet(tmp_path: Any) -> Iterator[Any]:
    made: List[Fleet] = []

    def make(conninfo: str, lease: float) -> Fleet:
        fleet = Fleet(conninfo, str(tmp_path), lease)
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.close()


def shared(kind: str) -> str:
    """Where the shared server of *kind* is, as the hosts take it."""
    if kind == "redis":
        need("Redis", REDIS_PORT)
        return f"redis://127.0.0.1:{REDIS_PORT}/0"
    need("PostgreSQL", POSTGRES_PORT)
    return f"host=127.0.0.1 port={POSTGRES_PORT} dbname=test user=postgres"


def check(fleet: Fleet, timeout: float, dead: Tuple[int, ...]) -> Counter[Tuple[int, int]]:
    wanted = {(host, n) for host, ns in fleet.accepted.items() for n in ns}
    assert wait_for_unique(fleet.receiver, len(wanted), timeout), (
        f"{len(wanted - set(fleet.received()))} accepted items never arrived"
    )
    received = fleet.received()
    assert set(received) == wanted  # at least once, and nothing else
    duplicates = sum(count - 1 for count in received.values())
    assert duplicates <= 50 * max(1, len(dead)), f"{duplicates} duplicates: more than a batch per lost host"
    return received


@pytest.mark.parametrize("kind", ["postgres", "redis"])
@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_the_survivors_deliver_what_a_dead_host_had_accepted(
    fleet: Any, how: str, kind: str, record_property: Any,
) -> None:
    lease = 3.0
    hosts = fleet(shared(kind), lease)
    hosts.start(3)
    hosts.enqueue(200)
    victim = hosts.hosts[0]
    victim.send_signal(getattr(signal, how))  # SIGSTOP: alive but silent, as a host cut off elsewhere
    hosts.endpoint_up()
    started = time.monotonic()
    # Its 200 items are in the spool, held by it: freed at once (SIGKILL, this machine tells)
    # or once its lease runs out (SIGSTOP), then claimed by a survivor at its next poll (a
    # third of the lease). "Within the lease plus a few seconds", with room for a loaded
    # machine: a bound, not a measurement.
    received = check(hosts, timeout=lease + 10, dead=(0,))
    record_property("seconds_to_deliver", round(time.monotonic() - started, 2))
    record_property("duplicates", sum(count - 1 for count in received.values()))
    for host in (1, 2):
        report = hosts.ask(host, "finish")
        assert report["pending"] == 0
    victim.kill()


@pytest.mark.parametrize("kind", ["postgres", "redis"])
def test_a_restart_of_the_spools_server_loses_nothing_accepted(fleet: Any, kind: str) -> None:
    with PostgresServer() if kind == "postgres" else RedisServer() as server:
        hosts = fleet(server.conninfo if kind == "postgres" else server.url, 10.0)  # type: ignore[union-attr]
        hosts.start(2)
        hosts.enqueue(100)
        if kind == "postgres":
            server.stop("immediate")  # type: ignore[union-attr, call-arg]
        else:
            server.kill()  # type: ignore[union-attr]
        hosts.enqueue(100)  # accepted in memory: each append is an "unreachable" fault
        server.start()
        hosts.enqueue(100)
        hosts.endpoint_up()
        check(hosts, timeout=60, dead=())
        for host in (0, 1):
            report = hosts.ask(host, "finish")
            assert report["pending"] == 0
            assert report["faults"].get("unreachable", 0) >= 1
        hosts.close()  # while its server runs: the tables are dropped
