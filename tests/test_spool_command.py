"""``python -m batchdispatch spool PATH``, run as an operator would: a real
file, shared with real processes that live, and one that was killed."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from typing import Any, Dict, Iterator, List, Tuple

import pytest

from batchdispatch import BackgroundDispatcher
from batchdispatch.spool import SqliteSpool
from batchdispatch.testing import Receiver

from .conftest import ROOT, Recorder, run_all_on_terminal
from .services import POSTGRES_PORT, RedisServer, free_port, need, unique_name


def spool_command(*args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchdispatch", "spool", *args],
        input=stdin, capture_output=True, text=True, timeout=timeout, check=False,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )


HOLDER = """
import os, sys
from batchdispatch.spool import SqliteSpool
spool = SqliteSpool(sys.argv[1], durable=True)
claimed = spool.claim(int(sys.argv[2]))
for n in range(int(sys.argv[3])):
    spool.append("logged", n)
print("ready", flush=True)
sys.stdin.readline()  # holds its rows until told to go, or killed
"""


@pytest.fixture
def holders(path: str) -> Iterator[Any]:
    """Start processes that claim rows and append to their logs, and hold them."""
    started: List[subprocess.Popen[str]] = []

    def start(claim: int, append: int) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLDER, path, str(claim), str(append)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT),
        )
        started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdin is not None:
            proc.stdin.close()
        if proc.stdout is not None:
            proc.stdout.close()


def summary(path: str) -> Dict[str, Any]:
    result = spool_command(path, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_summary_tells_live_from_ended_owners_and_changes_nothing(path: str, holders: Any) -> None:
    with SqliteSpool(path) as spool:
        spool.put([("k", n) for n in range(10)])
        spool.bury([(0, "k", "given up")], error=ValueError("400"), attempts=2)
    holders(claim=3, append=2)  # lives
    killed = holders(claim=4, append=5)
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    owner_files = sorted(name for name in os.listdir(os.path.dirname(path)) if "-owner-" in name)
    first = summary(path)
    assert {name: first[name] for name in (
        "waiting", "claimed_live", "claimed_ended", "logged_live", "logged_ended", "undecodable", "dead",
    )} == {
        "waiting": 3, "claimed_live": 3, "claimed_ended": 4, "logged_live": 2, "logged_ended": 5,
        "undecodable": 0, "dead": 1,
    }
    assert first["oldest_age"] >= 0
    assert first["oldest_dead_age"] >= 0
    assert first["size"] > 0
    # Read only: the ended owner's rows are still its own, its files still there.
    again = summary(path)
    assert (again["claimed_ended"], again["logged_ended"]) == (4, 5)
    assert sorted(name for name in os.listdir(os.path.dirname(path)) if "-owner-" in name) == owner_files
    text = spool_command(path)
    assert text.returncode == 0
    assert "claimed, ended owner" in text.stdout
    assert "freed by the next claim" in text.stdout
    assert text.stdout.startswith(f"spool {path}\n")


def test_list_shows_rows_oldest_first_by_key_and_limit_in_text_and_json(path: str) -> None:
    with SqliteSpool(path) as spool:
        spool.put([(("tenant", 1), {"n": 1}), ("other", {"n": 2}), (("tenant", 1), {"n": 3})])
        spool.bury([(0, "5", "dead-1")], error=KeyError("x"), attempts=4)
    rows = [json.loads(line) for line in spool_command(path, "list", "--json").stdout.splitlines()]
    assert [(row["key"], row["item"], row["state"]) for row in rows] == [
        (["tenant", 1], {"n": 1}, "waiting"),
        ("other", {"n": 2}, "waiting"),
        (["tenant", 1], {"n": 3}, "waiting"),
    ]
    keyed = spool_command(path, "list", "--key", '["tenant", 1]', "--limit", "1", "--json")
    assert [json.loads(line)["item"] for line in keyed.stdout.splitlines()] == [{"n": 1}]
    dead = spool_command(path, "list", "--dead", "--key", '"5"', "--json")  # the string "5", not 5
    (letter,) = [json.loads(line) for line in dead.stdout.splitlines()]
    assert (letter["item"], letter["attempts"], letter["error"]) == ("dead-1", 4, "KeyError: 'x'")
    assert spool_command(path, "list", "--dead", "--key", "5").stdout == ""
    text = spool_command(path, "list").stdout.splitlines()
    assert len(text) == 3
    assert 'key=["tenant", 1]' in text[0]
    assert '{"n": 1}' in text[0]


def test_exported_dead_letters_feed_send_for_a_backfill(path: str) -> None:
    with SqliteSpool(path) as spool:
        spool.put([(None, "waiting")])
        spool.bury([(0, None, {"event": n}) for n in range(5)], error=ValueError("400"), attempts=1)
    exported = spool_command(path, "export", "--dead")
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.splitlines() == [f'{{"event":{n}}}' for n in range(5)]
    with Receiver() as receiver:
        sent = subprocess.run(
            [sys.executable, "-m", "batchdispatch", "send", receiver.url],
            input=exported.stdout, capture_output=True, text=True, timeout=60, check=False,
            env=dict(os.environ, PYTHONPATH=ROOT),
        )
        assert sent.returncode == 0, sent.stderr
        assert receiver.wait_for_items(5, timeout=10)
        assert receiver.items == [{"event": n} for n in range(5)]
    assert spool_command(path, "export").stdout == '"waiting"\n'


def test_requeued_dead_letters_are_delivered_by_the_next_start(path: str) -> None:
    with SqliteSpool(path) as spool:
        spool.bury([(0, "a", 1), (0, "b", 2), (0, "a", 3)], error=ValueError("400"), attempts=1)
    result = spool_command(path, "requeue", "--key", "a")
    assert result.returncode == 0
    assert result.stdout == "requeued 2 dead letters: the next start delivers them\n"
    recorder = Recorder()
    with SqliteSpool(path) as spool:
        d = BackgroundDispatcher(recorder, delay=60, spool=spool)
        try:
            assert d.flush(timeout=10)
        finally:
            d.shutdown(timeout=10)
        assert recorder.items == [1, 3]
        assert [letter.item for letter in spool.dead_letters()] == [2]


def test_purge_asks_on_a_terminal_and_refuses_without_one(path: str) -> None:
    with SqliteSpool(path) as spool:
        spool.bury([(0, None, n) for n in range(3)], error=ValueError("400"), attempts=1)
    refused = spool_command(path, "purge", "--dead")
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert on_terminal(path, "n\n")[0] == 1
    code, output = on_terminal(path, "y\n")
    assert code == 0
    assert "delete 3 dead letters" in output
    assert "purged 3 dead letters" in output
    with SqliteSpool(path) as spool:
        spool.bury([(0, None, "new")], error=ValueError("400"), attempts=1)
    kept = spool_command(path, "purge", "--dead", "--older-than", "3600", "--yes")
    assert (kept.returncode, kept.stdout) == (0, "purged 0 dead letters\n")
    gone = spool_command(path, "purge", "--dead", "--yes")
    assert (gone.returncode, gone.stdout) == (0, "purged 1 dead letters\n")
    assert spool_command(path, "purge").returncode == 2  # --dead is required


def on_terminal(path: str, answer: str) -> Tuple[int, str]:
    """Run ``purge --dead`` on a pseudo-terminal, answering *answer*."""
    args = [sys.executable, "-m", "batchdispatch", "spool", path, "purge", "--dead"]
    code, shown = run_all_on_terminal(args, answer.encode())
    return code, shown


def test_a_missing_foreign_or_corrupt_file_is_one_line_and_status_2(tmp_path: Any) -> None:
    missing = str(tmp_path / "missing.db")
    foreign = str(tmp_path / "foreign.db")
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    corrupt = str(tmp_path / "corrupt.db")
    with open(corrupt, "wb") as f:
        f.write(b"this is not a database, not even close" * 100)
    for path, problem in ((missing, "does not exist"), (foreign, "not a batchdispatch spool"),
                          (corrupt, "not a database")):
        for args in ((), ("list",), ("export",), ("requeue",), ("purge", "--dead", "--yes")):
            result = spool_command(path, *args)
            assert result.returncode == 2, (path, args, result.stderr)
            assert result.stderr.count("\n") == 1, result.stderr
            assert path in result.stderr, result.stderr
            assert problem in result.stderr, result.stderr
    assert not os.path.exists(missing)  # not created by a look


# -- a spool on PostgreSQL -------------------------------------------------------------------


@pytest.fixture
def pg_location() -> Iterator[str]:
    need("PostgreSQL", POSTGRES_PORT)
    psycopg = pytest.importorskip("psycopg")
    table = unique_name("cli")
    conninfo = f"postgresql://postgres:not-a-real-secret@127.0.0.1:{POSTGRES_PORT}/test"
    yield f"{conninfo}#{table}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for suffix in ("", "_owners", "_dead"):
            conn.execute(f"DROP TABLE IF EXISTS {table}{suffix}")


PG_HOLDER = """
import sys
from batchdispatch.spool import PostgresSpool
conninfo, _, table = sys.argv[1].partition("#")
spool = PostgresSpool(conninfo, table=table, durable=True)
spool.claim(int(sys.argv[2]))
for n in range(int(sys.argv[3])):
    spool.append("logged", n)
print("ready", flush=True)
sys.stdin.readline()
"""


def test_a_postgres_spool_is_summed_up_listed_requeued_and_purged(pg_location: str) -> None:
    from batchdispatch.spool import PostgresSpool

    conninfo, _, table = pg_location.partition("#")
    with PostgresSpool(conninfo, table=table) as spool:
        spool.put([("k", n) for n in range(6)])
        spool.bury([(0, "k", "dead-1"), (0, "j", "dead-2")], error=ValueError("400"), attempts=3)
    holders = []
    try:
        for claim, append in ((2, 1), (1, 3)):
            holder = subprocess.Popen(
                [sys.executable, "-c", PG_HOLDER, pg_location, str(claim), str(append)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                env=dict(os.environ, PYTHONPATH=ROOT),
            )
            holders.append(holder)
            assert holder.stdout is not None
            assert holder.stdout.readline() == "ready\n"
        holders[1].send_signal(signal.SIGKILL)
        holders[1].wait(10)
        first = summary(pg_location)
        assert {name: first[name] for name in (
            "waiting", "claimed_live", "claimed_ended", "logged_live", "logged_ended", "dead",
        )} == {
            "waiting": 3, "claimed_live": 2, "claimed_ended": 1,
            "logged_live": 1, "logged_ended": 3, "dead": 2,
        }
        assert first["size"] > 0
        assert "not-a-real-secret" not in spool_command(pg_location).stdout
        assert summary(pg_location)["claimed_ended"] == 1  # read only: nothing was freed
    finally:
        for holder in holders:
            if holder.poll() is None:
                holder.kill()
            holder.wait(10)
            for stream in (holder.stdin, holder.stdout):
                if stream is not None:
                    stream.close()
    listed = spool_command(pg_location, "list", "--dead", "--json").stdout.splitlines()
    dead = [json.loads(line) for line in listed]
    assert [(row["key"], row["item"], row["attempts"]) for row in dead] == [
        ("k", "dead-1", 3), ("j", "dead-2", 3),
    ]
    assert spool_command(pg_location, "export", "--dead").stdout == '"dead-1"\n"dead-2"\n'
    requeued = spool_command(pg_location, "requeue", "--key", "j")
    assert requeued.stdout == "requeued 1 dead letters: the next start delivers them\n"
    purged = spool_command(pg_location, "purge", "--dead", "--yes")
    assert purged.stdout == "purged 1 dead letters\n"
    assert summary(pg_location)["dead"] == 0


def test_a_postgres_location_without_tables_or_server_is_one_line_and_status_2(pg_location: str) -> None:
    missing = spool_command(pg_location)
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    assert missing.stderr.count("\n") == 1
    assert "not-a-real-secret" not in missing.stderr
    port = free_port()
    down = spool_command(f"postgresql://postgres:not-a-real-secret@127.0.0.1:{port}/test#t")
    assert down.returncode == 2
    assert "cannot connect" in down.stderr
    assert "not-a-real-secret" not in down.stderr


# -- a spool on Redis ----------------------------------------------------------------------------


REDIS_HOLDER = """
import sys
from batchdispatch.spool import RedisSpool
url, _, name = sys.argv[1].partition("#")
spool = RedisSpool(url, name, durable=True)
spool.claim(int(sys.argv[2]))
for n in range(int(sys.argv[3])):
    spool.append("logged", n)
print("ready", flush=True)
sys.stdin.readline()
"""


@pytest.fixture
def redis_location() -> Iterator[str]:
    """A spool on a private Redis that asks for a password, which must show nowhere."""
    pytest.importorskip("redis")
    with RedisServer(password="not-a-real-secret") as server:
        yield f"{server.url}#{unique_name('cli')}"


def test_a_redis_spool_is_summed_up_listed_requeued_and_purged(redis_location: str) -> None:
    from batchdispatch.spool import RedisSpool

    url, _, name = redis_location.partition("#")
    with RedisSpool(url, name) as spool:
        spool.put([("k", n) for n in range(6)])
        spool.bury([(0, "k", "dead-1"), (0, "j", "dead-2")], error=ValueError("400"), attempts=3)
    holders = []
    try:
        for claim, append in ((2, 1), (1, 3)):
            holder = subprocess.Popen(
                [sys.executable, "-c", REDIS_HOLDER, redis_location, str(claim), str(append)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                env=dict(os.environ, PYTHONPATH=ROOT),
            )
            holders.append(holder)
            assert holder.stdout is not None
            assert holder.stdout.readline() == "ready\n"
        holders[1].send_signal(signal.SIGKILL)
        holders[1].wait(10)
        first = summary(redis_location)
        assert {name: first[name] for name in (
            "waiting", "claimed_live", "claimed_ended", "logged_live", "logged_ended", "dead",
        )} == {
            "waiting": 3, "claimed_live": 2, "claimed_ended": 1,
            "logged_live": 1, "logged_ended": 3, "dead": 2,
        }
        assert "not-a-real-secret" not in spool_command(redis_location).stdout
    finally:
        for holder in holders:
            if holder.poll() is None:
                holder.kill()
            holder.wait(10)
            for stream in (holder.stdin, holder.stdout):
                if stream is not None:
                    stream.close()
    assert spool_command(redis_location, "export", "--dead").stdout == '"dead-1"\n"dead-2"\n'
    assert spool_command(redis_location, "requeue", "--key", "j").stdout.startswith("requeued 1 dead letters")
    assert spool_command(redis_location, "purge", "--dead", "--yes").stdout == "purged 1 dead letters\n"
    missing = spool_command(redis_location.partition("#")[0] + "#nothing-here")
    assert missing.returncode == 2
    assert "not a spool" in missing.stderr
    assert "not-a-real-secret" not in missing.stderr
