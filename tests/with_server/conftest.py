"""Fixtures for tests against real HTTP servers on 127.0.0.1 (batchdispatch.testing)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from typing import Any, Callable, Iterator, List, Tuple

import pytest
from urllib3.util import Retry

from batchdispatch.http import RETRY_STATUSES, HttpSink, WebhookSink
from batchdispatch.testing import Receiver


def fast_retry(total: int = 5) -> Retry:
    """The default retry policy without its backoff, so tests take milliseconds."""
    return Retry(
        total=total, backoff_factor=0, status_forcelist=RETRY_STATUSES, allowed_methods=None,
        respect_retry_after_header=True, raise_on_status=False,
    )


@pytest.fixture
def make_receiver() -> Iterator[Callable[..., Receiver]]:
    """Start receivers that are always closed after the test."""
    made: List[Receiver] = []

    def factory(**options: Any) -> Receiver:
        receiver = Receiver(**options).start()
        made.append(receiver)
        return receiver

    yield factory
    for receiver in made:
        receiver.close()


@pytest.fixture
def receiver(make_receiver: Callable[..., Receiver]) -> Receiver:
    """A started Receiver on 127.0.0.1, closed after the test."""
    return make_receiver()


@pytest.fixture
def sinks() -> Iterator[Callable[..., Any]]:
    """Build sinks that are always closed (an open Session is a ResourceWarning)."""
    made: List[Any] = []

    def factory(cls: Any, *args: Any, **options: Any) -> Any:
        sink = cls(*args, **options)
        made.append(sink)
        return sink

    yield factory
    for sink in made:
        sink.close()


@pytest.fixture
def http_sink(sinks: Callable[..., Any]) -> Callable[..., HttpSink]:
    def factory(url: str, **options: Any) -> HttpSink:
        options.setdefault("retries", fast_retry())
        sink: HttpSink = sinks(HttpSink, url, **options)
        return sink

    return factory


@pytest.fixture
def webhook_sink(sinks: Callable[..., Any]) -> Callable[..., WebhookSink]:
    def factory(*args: Any, **options: Any) -> WebhookSink:
        options.setdefault("retries", fast_retry())
        sink: WebhookSink = sinks(WebhookSink, *args, **options)
        return sink

    return factory


def free_port() -> int:
    """A port nothing listens on right now (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> Tuple[str, str]:
    """(certfile, keyfile) of a self-signed certificate for 127.0.0.1, made with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    where = tmp_path_factory.mktemp("tls")
    cert, key = str(where / "cert.pem"), str(where / "key.pem")
    result = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
         "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        capture_output=True, check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {result.stderr.decode(errors='replace')}")
    return cert, key


@pytest.fixture
def tls_receiver(make_receiver: Callable[..., Receiver], self_signed: Tuple[str, str]) -> Receiver:
    """A Receiver serving HTTPS with a self-signed certificate."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*self_signed)
    return make_receiver(ssl_context=context)


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    """Poll a server's state until *condition* holds, within *timeout*."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # polling a server's state with a deadline
    return True
