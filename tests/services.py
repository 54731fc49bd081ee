"""The servers the sink and spool tests talk to: the shared ones, and private ones a test may stop.

Every machine (a developer's and CI's) runs PostgreSQL, Redis and RabbitMQ
on their usual ports on 127.0.0.1. A test that needs one asks through a
fixture (``redis_url``, ``postgres_conninfo``, ``rabbitmq_url``): when the
server does not answer, the test skips and says why, unless
``BATCHDISPATCH_REQUIRE_SERVICES=1`` (which ``.ci/run`` sets), which makes
it fail: in CI a missing server is a red run, never a silent skip. The
same holds for a server's tool a test runs (``rabbitmqctl``,
``redis-server``): see :func:`need_program`.

Tests share those servers with each other and with other runs on the
machine, so each keeps to its own names: a fresh PostgreSQL schema per
test (dropped after it), and Redis keys and RabbitMQ queues named by the
test (see :func:`unique_name`).

A test that stops or restarts a server never touches the shared one: it
starts its own, on a free port, with :class:`RedisServer` or
:class:`PostgresServer`, and may kill and restart it at will.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from typing import Any, Callable, Iterator, List, NoReturn, Optional

import pytest

from batchdispatch.spool import SqliteSpool

#: Set to 1 (by .ci/run) to make a test fail, not skip, when a server it needs does not answer.
REQUIRE_ENV = "BATCHDISPATCH_REQUIRE_SERVICES"

HOST = "127.0.0.1"
REDIS_PORT = 6379
POSTGRES_PORT = 5432
RABBITMQ_PORT = 5672

#: How each shared server is started again if it stopped (the machine's notes).
START_COMMANDS = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "Redis": (
        'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no'
        " --dir /var/lib/redis --logfile /var/log/redis/ci.log"
    ),
    "RabbitMQ": "rabbitmq-server -detached",
}


def answers(port: int, host: str = HOST, timeout: float = 2.0) -> bool:
    """Whether something accepts TCP connections on *host*:*port*."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def need(name: str, port: int) -> None:
    """Skip (or, with REQUIRE_ENV, fail) the calling test unless the shared *name* server answers."""
    if not answers(port):
        missing(f"{name} does not answer on {HOST}:{port}; start it with: {START_COMMANDS[name]}")


def missing(reason: str) -> NoReturn:
    """Skip the calling test for *reason*, or fail it where a missing server must not pass (REQUIRE_ENV)."""
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1: a missing server fails the run)")
    pytest.skip(reason)


def need_program(program: str, why: str) -> str:
    """The path of *program*, a server's tool a test runs; if it is not installed, the test
    skips (or, with REQUIRE_ENV, fails) through :func:`missing`, saying *why* it needs it."""
    found = shutil.which(program)
    if found is None:
        missing(f"{program} is not installed: {why}")
    return found


def unique_name(prefix: str = "bd") -> str:
    """A name no other test or run uses: for Redis keys, queues, tables."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


# -- the shared servers ------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    """The shared Redis. Keep to keys named with :func:`unique_name`."""
    need("Redis", REDIS_PORT)
    return f"redis://{HOST}:{REDIS_PORT}/0"


@pytest.fixture
def rabbitmq_url() -> str:
    """The shared RabbitMQ (guest/guest). Keep to queues named with :func:`unique_name`."""
    need("RabbitMQ", RABBITMQ_PORT)
    return f"amqp://guest:guest@{HOST}:{RABBITMQ_PORT}/%2F"


@pytest.fixture
def postgres_conninfo() -> Iterator[str]:
    """The shared PostgreSQL's database ``test``, in a schema of this test's own,
    dropped after it: every table the test makes lands there."""
    need("PostgreSQL", POSTGRES_PORT)
    psycopg = pytest.importorskip("psycopg")
    schema = unique_name("test")
    base = f"host={HOST} port={POSTGRES_PORT} dbname=test user=postgres"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{base} options='-c search_path={schema}'"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# -- private servers, for tests that stop them ----------------------------------------------


class _Server:
    """A server process of a test's own, on a free port, that the test may stop and start."""

    name = "server"

    def __init__(self) -> None:
        self.port = free_port()
        self.directory = tempfile.mkdtemp(prefix=f"bd-{self.name}-")

    def __enter__(self) -> _Server:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def wait_until_it_answers(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not answers(self.port, timeout=0.5):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} on port {self.port} did not start in {timeout} s")
            time.sleep(0.05)  # polling a server that starts: not a test's synchronisation


class RedisServer(_Server):
    """``redis-server`` on a free port, nothing kept on disk; ``kill()`` it and ``start()`` it again.

    With *password*, clients must give it (``requirepass``): :attr:`url` does.
    """

    name = "redis"

    def __init__(self, password: Optional[str] = None) -> None:
        super().__init__()
        need_program("redis-server", "a private Redis cannot be started")
        self.password = password
        self.proc: Optional[subprocess.Popen[bytes]] = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    def start(self) -> None:
        auth = ["--requirepass", self.password] if self.password else []
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly", "no",
             "--dir", self.directory, *auth],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.wait_until_it_answers()

    def kill(self) -> None:
        """SIGKILL: the server is gone at once, with what it held in memory."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class PostgresServer(_Server):
    """A PostgreSQL cluster of its own (initdb, trust auth) on a free port; ``stop(mode)`` and ``start()``.

    The server refuses to run as root, so when the tests run as root it
    runs as the ``postgres`` user, which owns its directory.
    """

    name = "postgres"

    def __init__(self) -> None:
        super().__init__()
        self.bin = _postgres_bin()
        self.data = os.path.join(self.directory, "data")
        self._as: List[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def conninfo(self) -> str:
        return f"host={HOST} port={self.port} dbname=postgres user=postgres"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses={HOST} -c fsync=off"
        self._run("pg_ctl", "-D", self.data, "-o", options, "-l", os.path.join(self.directory, "log"),
                  "-w", "start")
        self.wait_until_it_answers()

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast`` (connections cut, a clean stop) or ``immediate`` (as a crash)."""
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The whole server stopped (SIGSTOP to the postmaster and every backend), as a host
        that stops answering: the kernel still takes connections and acknowledges what is sent,
        and nothing answers. Resumed (SIGCONT) on leaving the block."""
        with open(os.path.join(self.data, "postmaster.pid")) as file:
            postmaster = int(file.readline())
        children = subprocess.run(
            ["pgrep", "-P", str(postmaster)], stdout=subprocess.PIPE, text=True, timeout=30,
        ).stdout.split()
        pids = [postmaster, *map(int, children)]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                os.kill(pid, signal.SIGCONT)

    def _run(self, program: str, *args: str) -> None:
        subprocess.run(
            [*self._as, os.path.join(self.bin, program), *args],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120,
        )


def _postgres_bin() -> str:
    found = sorted(
        (os.path.join("/usr/lib/postgresql", version, "bin") for version in _listdir("/usr/lib/postgresql")),
        key=lambda path: [int(part) for part in path.split("/")[-2].split(".") if part.isdigit()],
    )
    for path in reversed(found):
        if os.path.exists(os.path.join(path, "initdb")):
            return path
    missing("PostgreSQL's initdb is not installed: a private server cannot be started")
    raise AssertionError("unreachable")


def _listdir(path: str) -> List[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


# -- every spool, for tests of the Spool contract as dispatchers use it -------------------


class Spools:
    """Spools of one kind on one test's storage (a file, a table, a stream): opened in the test
    process by calling it, and in a child process by the code :meth:`source` gives.

    Every spool it opens in the test process is closed after the test, and the
    storage is removed (the tables dropped, the keys deleted), whatever children
    left in it.
    """

    def __init__(self, kind: str, spool_class: type, *args: Any, **settings: Any) -> None:
        #: "sqlite", "postgres" or "redis": for the parts of a test one kind does differently.
        self.kind = kind
        self._class = spool_class
        self._args = args
        self._settings = settings
        self.opened: List[Any] = []

    def __call__(self, **options: Any) -> Any:
        """A spool open in this process, with a short *timeout* unless *options* say otherwise."""
        options.setdefault("timeout", 2.0)
        spool = self._class(*self._args, **self._settings, **options)
        self.opened.append(spool)
        return spool

    @property
    def imports(self) -> str:
        """The import line :meth:`source`'s expression needs."""
        return f"from batchdispatch.spool import {self._class.__name__}"

    def source(self, **options: Any) -> str:
        """A Python expression that opens this same spool (with *options*) in another process."""
        arguments = [repr(arg) for arg in self._args]
        arguments += [f"{name}={value!r}" for name, value in {**self._settings, **options}.items()]
        return f"{self._class.__name__}({', '.join(arguments)})"


@pytest.fixture(params=["sqlite", "postgres", "redis"])
def spools(request: Any, path: str) -> Iterator[Spools]:
    """Open spools on the test's storage (a file, a table, a stream); see :class:`Spools`.

    The tests that take it are about the Spool contract as a dispatcher uses
    it, so they run against every implementation.
    """
    name = unique_name("spooled")
    cleanup: Callable[[], None] = lambda: None  # noqa: E731
    if request.param == "postgres":
        need("PostgreSQL", POSTGRES_PORT)
        psycopg = pytest.importorskip("psycopg")
        from batchdispatch.spool import PostgresSpool

        conninfo = f"host={HOST} port={POSTGRES_PORT} dbname=test user=postgres"
        opener = Spools("postgres", PostgresSpool, conninfo, table=name)

        def cleanup() -> None:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                for suffix in ("", "_owners", "_dead"):
                    conn.execute(f"DROP TABLE IF EXISTS {name}{suffix}")
    elif request.param == "redis":
        need("Redis", REDIS_PORT)
        redis = pytest.importorskip("redis")
        from batchdispatch.spool import RedisSpool

        url = f"redis://{HOST}:{REDIS_PORT}/0"
        opener = Spools("redis", RedisSpool, url, name)

        def cleanup() -> None:
            client = redis.Redis.from_url(url)
            keys = list(client.scan_iter(match=f"{{{name}}}:*"))
            if keys:
                client.delete(*keys)
            client.close()
    else:
        opener = Spools("sqlite", SqliteSpool, path)

    try:
        yield opener
        for spool in opener.opened:
            spool.close()
    finally:
        cleanup()
