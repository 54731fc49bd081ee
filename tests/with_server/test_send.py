"""``python -m batchdispatch send`` end to end: a real subprocess against a real Receiver.

Every test synchronises on the process's exit: the receiver records each
request before answering it, so once ``send`` has exited, whatever it
delivered is already in ``receiver.requests``.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from batchdispatch.http import verify_signature, verify_webhook
from batchdispatch.testing import Response

from ..conftest import run_on_terminal
from .conftest import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: Seconds any one command may take before the test fails instead of hanging.
TIMEOUT = 60

#: The environment variable the signing tests pass the secret in.
SECRET_ENV = "BATCHDISPATCH_TEST_SECRET"


def send(
    url: str, *args: str, stdin: bytes, env: Optional[Dict[str, str]] = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m batchdispatch send URL ARGS`` with *stdin* piped in."""
    environ = dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="error::ResourceWarning")
    environ.pop(SECRET_ENV, None)
    environ.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "batchdispatch", "send", url, *args],
        input=stdin, capture_output=True, timeout=TIMEOUT, env=environ, cwd=ROOT, check=False,
    )
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode("utf-8"), result.stderr.decode("utf-8")
    )


def jsonl(items: List[Any]) -> bytes:
    return b"".join(json.dumps(item).encode("utf-8") + b"\n" for item in items)


def summary(stdout: str) -> Dict[str, str]:
    return dict(re.findall(r"^  (\S+)  +(\S.*)$", stdout, flags=re.MULTILINE))


def attempts_per_batch(receiver: Any) -> List[int]:
    """How many requests each batch took, by its webhook-id."""
    return list(collections.Counter(r.headers["webhook-id"] for r in receiver.requests).values())


def test_every_line_is_delivered_in_order(receiver: Any) -> None:
    events = [{"event": "page_view", "n": n} for n in range(250)]
    lines = jsonl(events[:100]) + b"\n   \n" + jsonl(events[100:]) + b"\r\n"  # blank lines are skipped
    result = send(receiver.url, "--max-batch-size", "100", "--delay", "0.05", stdin=lines)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # not a terminal: no progress line, and nothing went wrong
    assert receiver.items == events
    assert all(len(r.items) <= 100 for r in receiver.requests)
    assert {r.headers["content-type"] for r in receiver.requests} == {"application/json"}
    fields = summary(result.stdout)
    assert fields["read"] == "250 items from 253 lines"
    assert (fields["delivered"], fields["failed"], fields["dropped"]) == ("250", "0", "0")
    assert re.fullmatch(r"(\d+) delivered in \1 attempts?", fields["batches"])
    assert int(fields["batches"].split()[0]) == receiver.request_count
    assert re.fullmatch(r"[\d.]+ s", fields["elapsed"])
    assert re.fullmatch(r"[\d,]+", fields["items/s"])
    assert result.stdout.startswith(f"batchdispatch send: {receiver.url}, delay 0.05 s, max batch size 100\n")


def test_any_json_value_is_an_item(receiver: Any) -> None:
    lines = b'{"a": 1}\n[1, 2]\n"text"\n3.5\nnull\n'
    result = send(receiver.url, stdin=lines)
    assert result.returncode == 0, result.stderr
    assert receiver.requests[0].items == [{"a": 1}, [1, 2], "text", 3.5, None]


def test_empty_input_sends_nothing(receiver: Any) -> None:
    result = send(receiver.url, stdin=b"")
    assert result.returncode == 0, result.stderr
    assert receiver.request_count == 0
    assert summary(result.stdout)["read"] == "0 items from 0 lines"


def test_headers_and_signature_reach_the_receiver(make_receiver: Callable[..., Any]) -> None:
    secret = "s3cret-never-printed"
    receiver = make_receiver(secret=secret)
    events = [{"n": n} for n in range(30)]
    result = send(
        receiver.url, "--header", "api-key: 123", "--header", "X-Tenant:42", "--secret-env", SECRET_ENV,
        "--max-batch-size", "10", stdin=jsonl(events), env={SECRET_ENV: secret},
    )
    assert result.returncode == 0, result.stderr
    assert receiver.items == events
    for request in receiver.requests:
        assert request.verified is True  # the receiver checked it with its own secret
        assert request.headers["webhook-signature"].startswith("v1,")
        assert verify_webhook(request.body, request.headers, secret)
        assert not verify_webhook(request.body, request.headers, "another secret")
        assert request.headers["api-key"] == "123"
        assert request.headers["x-tenant"] == "42"
    assert secret not in result.stdout + result.stderr


def test_signature_x_webhook_signs_as_0_1_did(make_receiver: Callable[..., Any]) -> None:
    secret = "s3cret-never-printed"
    receiver = make_receiver(secret=secret)
    result = send(receiver.url, "--secret-env", SECRET_ENV, "--signature", "x-webhook",
                  stdin=jsonl([{"n": 1}]), env={SECRET_ENV: secret})
    assert result.returncode == 0, result.stderr
    (request,) = receiver.requests
    assert request.verified is True
    signature, timestamp = request.headers["x-webhook-signature"], request.headers["x-webhook-timestamp"]
    assert verify_signature(request.body, signature, secret, timestamp)
    assert "webhook-signature" not in request.headers


def test_max_body_bytes_sends_a_batch_in_bodies_within_it(receiver: Any) -> None:
    events = [{"n": n, "pad": "x" * 40} for n in range(30)]
    result = send(receiver.url, "--max-body-bytes", "200", "--max-batch-size", "30", stdin=jsonl(events))
    assert result.returncode == 0, result.stderr
    assert receiver.items == events
    assert receiver.request_count > 1
    assert all(len(r.body) <= 200 for r in receiver.requests)


def test_a_wrong_secret_is_refused_and_reported(make_receiver: Callable[..., Any]) -> None:
    receiver = make_receiver(secret="the right one")
    result = send(receiver.url, "--secret-env", SECRET_ENV, stdin=jsonl([{"n": 1}, {"n": 2}]),
                  env={SECRET_ENV: "the wrong one"})
    assert result.returncode == 1
    assert "error: 2 of 2 items were not delivered (2 given up)" in result.stderr
    assert "answered 401" in result.stderr
    assert attempts_per_batch(receiver) == [1]  # a 401 is final: not retried
    assert "the wrong one" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        (b'{"n": 5', "not valid JSON: Expecting ',' delimiter (column 8)"),
        (b"{} {}", "not valid JSON: Extra data (column 4)"),
        (b'{"n": NaN}', "NaN is not valid JSON"),
        (b"\xff{}", "not UTF-8 (byte 1)"),
    ],
)
def test_a_bad_line_stops_the_input_there(receiver: Any, bad_line: bytes, reason: str) -> None:
    before = [{"n": n} for n in range(1, 5)]  # lines 1 to 4
    after = [{"n": n} for n in range(6, 11)]  # lines 6 to 10
    lines = jsonl(before) + bad_line + b"\n" + jsonl(after)
    # Batches of 2: lines 1 to 4 leave as full batches while the reader is still going.
    result = send(receiver.url, "--max-batch-size", "2", stdin=lines)
    assert result.returncode == 3
    assert f"error: line 5: {reason}; stopped reading there, nothing after it was sent\n" in result.stderr
    assert receiver.items == before
    assert summary(result.stdout)["read"] == "4 items from 5 lines"  # the bad line was read, not sent


def test_a_bad_first_line_sends_nothing(receiver: Any) -> None:
    result = send(receiver.url, stdin=b"not json\n" + jsonl([{"n": 2}]))
    assert result.returncode == 3
    assert "error: line 1: not valid JSON: Expecting value (column 1)" in result.stderr
    assert receiver.request_count == 0


def test_a_bom_on_the_first_line_is_accepted(receiver: Any) -> None:
    result = send(receiver.url, stdin=b"\xef\xbb\xbf" + jsonl([{"n": 1}, {"n": 2}]))
    assert result.returncode == 0, result.stderr
    assert receiver.items == [{"n": 1}, {"n": 2}]


@pytest.mark.parametrize(("status", "attempts"), [(400, 1), (500, 3)])
def test_an_endpoint_failing_everything_is_reported(receiver: Any, status: int, attempts: int) -> None:
    receiver.respond(*[Response(status, body=b"no thanks")] * 100)
    # --retries 0: no urllib3 retries, so each batch is tried by the dispatcher's
    # RetryPolicy alone: 3 attempts for a 500, 1 for a 400, which is final.
    # One batch, sent at the end of the input: the 25 items are all read first.
    result = send(receiver.url, "--retries", "0", "--max-batch-size", "100", "--delay", "30",
                  stdin=jsonl(list(range(25))))
    assert result.returncode == 1
    fields = summary(result.stdout)
    assert (fields["read"], fields["delivered"], fields["failed"]) == ("25 items from 25 lines", "0", "25")
    assert fields["batches"] == f"0 delivered in {attempts} attempt{'s' if attempts > 1 else ''}"
    assert (
        f"error: 25 of 25 items were not delivered (25 given up);"
        f" last error: DeliveryError: POST {receiver.url} answered {status}"
    ) in result.stderr
    assert "no thanks" in result.stderr  # the start of the answer's body
    assert attempts_per_batch(receiver) == [attempts]
    assert receiver.items == []


def test_reading_stops_once_a_batch_is_given_up(receiver: Any) -> None:
    receiver.respond(*[400] * 10_000)
    lines = 5_000
    result = send(receiver.url, "--max-batch-size", "10", stdin=jsonl(list(range(lines))))
    assert result.returncode == 1
    match = re.search(
        r"^error: delivery failed, so reading stopped after line ([\d,]+)$", result.stderr, re.MULTILINE
    )
    assert match, result.stderr
    stopped = int(match[1].replace(",", ""))
    # The queue holds 8 batches: the reader waits for room long before line 5,000.
    assert stopped < lines
    assert summary(result.stdout)["read"] == f"{stopped:,} items from {stopped:,} lines"
    assert f"error: {stopped:,} of {stopped:,} items were not delivered" in result.stderr


def test_a_retried_batch_keeps_its_id_and_is_delivered_once(receiver: Any) -> None:
    receiver.respond(503, 503)
    result = send(receiver.url, "--retries", "0", stdin=jsonl([{"n": 1}, {"n": 2}]))
    assert result.returncode == 0, result.stderr
    assert receiver.items == [{"n": 1}, {"n": 2}]
    assert [r.status for r in receiver.requests] == [503, 503, 200]
    assert attempts_per_batch(receiver) == [3]
    assert summary(result.stdout)["batches"] == "1 delivered in 3 attempts"


def test_connection_refused_is_reported() -> None:
    url = f"http://127.0.0.1:{free_port()}/ingest"
    result = send(url, "--retries", "0", stdin=jsonl([{"n": 1}]))
    assert result.returncode == 1
    assert "error: 1 of 1 items were not delivered (1 given up)" in result.stderr
    assert "connection failed" in result.stderr


def test_what_is_pending_at_the_shutdown_timeout_counts_as_failed(receiver: Any) -> None:
    receiver.respond(Response(200, delay=30))  # answered only when the receiver closes
    result = send(
        receiver.url, "--retries", "0", "--shutdown-timeout", "0.5", "--delay", "0.01",
        stdin=jsonl([{"n": 1}, {"n": 2}]),
    )
    assert result.returncode == 1
    assert "still pending after the 0.5 s shutdown timeout" in result.stderr
    fields = summary(result.stdout)
    assert (fields["delivered"], fields["failed"]) == ("0", "2")


@pytest.mark.skipif(sys.platform == "win32", reason="sends SIGINT")
def test_ctrl_c_stops_at_once_and_prints_the_summary(receiver: Any) -> None:
    receiver.respond(Response(200, delay=30))  # the endpoint hangs
    with subprocess.Popen(
        [sys.executable, "-m", "batchdispatch", "send", receiver.url, "--delay", "0.01"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdin is not None
        proc.stdin.write('{"n": 1}\n{"n": 2}\n')
        proc.stdin.close()
        # The batch is at the endpoint, so send is waiting in its shutdown.
        assert receiver.wait_for_requests(1, timeout=TIMEOUT)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=TIMEOUT)  # its output is a few lines: the pipes cannot fill up
        assert proc.stdout is not None
        assert proc.stderr is not None
        stdout, stderr = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 130
    assert stderr.splitlines() == [
        "error: 2 of 2 items were not delivered (0 given up, 2 still pending when interrupted)",
        "interrupted",
    ]
    fields = summary(stdout)
    assert (fields["read"], fields["delivered"], fields["failed"]) == ("2 items from 2 lines", "0", "2")


@pytest.mark.parametrize(("value", "state"), [(None, "is not set"), ("", "is empty")])
def test_a_missing_secret_is_a_usage_error(receiver: Any, value: Optional[str], state: str) -> None:
    env = {} if value is None else {SECRET_ENV: value}
    result = send(receiver.url, "--secret-env", SECRET_ENV, stdin=jsonl([{"n": 1}]), env=env)
    assert result.returncode == 2
    assert result.stderr == f"error: --secret-env: the environment variable {SECRET_ENV} {state}\n"
    assert result.stdout == ""
    assert receiver.request_count == 0


def test_credentials_in_the_url_are_not_printed(receiver: Any) -> None:
    url = receiver.url.replace("http://", "http://user:hunter2@") + "ingest?key=abc123"
    result = send(url, stdin=jsonl([{"n": 1}]))
    assert result.returncode == 0, result.stderr
    assert receiver.requests[0].path == "/ingest?key=abc123"
    assert f"http://***@127.0.0.1:{receiver.port}/ingest?…" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr
    assert "abc123" not in result.stdout + result.stderr


def test_progress_is_drawn_on_a_terminal(receiver: Any) -> None:
    returncode, stdout, drawn = run_on_terminal(
        [sys.executable, "-m", "batchdispatch", "send", receiver.url], jsonl([{"n": n} for n in range(100)]),
    )
    assert returncode == 0
    assert "\rsend: " in drawn
    assert "delivered" in drawn
    assert "items/s" in drawn
    assert "delivered  100" in stdout  # the summary still goes to stdout
    assert receiver.item_count == 100


# -- the analytics example, run as documented ------------------------------------------


def test_the_analytics_example_ships_every_event() -> None:
    path = os.path.join(ROOT, "examples", "analytics_events.py")
    result = subprocess.run(
        [sys.executable, path], capture_output=True, text=True, timeout=TIMEOUT, check=False,
        env=dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="error::ResourceWarning"),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "enqueued 1,000 events from 4 request threads" in lines
    received = r"^receiver: 1,000 events in \d+ requests, all signed and verified$"
    assert re.search(received, result.stdout, re.MULTILINE)
    assert "stats: enqueued 1000, dispatched 1000, failed 0, dropped 0" in lines
    retried = "receiver: one request answered 503; its batch was sent 2 times under the same webhook-id"
    assert retried in lines
    assert "gave up" not in result.stdout


# -- output that cannot be written: the status still follows delivery -------------------

#: What each run sends and what its status and stderr must then be: (input
#: lines, answers of the receiver, items it must hold, status, stderr lines
#: after the one about the output).
OUTCOMES = {
    "all delivered": (jsonl([{"n": 1}, {"n": 2}]), [], [{"n": 1}, {"n": 2}], 0, []),
    "a bad line": (
        jsonl([{"n": 1}, {"n": 2}]) + b"oops\n" + jsonl([{"n": 4}]), [], [{"n": 1}, {"n": 2}], 3,
        ["error: line 3: not valid JSON: Expecting value (column 1); stopped reading there,"
         " nothing after it was sent"],
    ),
    "delivery failed": (
        jsonl([{"n": 1}, {"n": 2}]), [400] * 10, [], 1,
        ["error: 2 of 2 items were not delivered (2 given up); last error: DeliveryError: POST"],
    ),
}


@pytest.fixture(params=["closed pipe", "/dev/full"])
def unwritable(request: pytest.FixtureRequest) -> Iterator[Tuple[int, str]]:
    """A file descriptor every write to fails, and the reason the command must give."""
    if sys.platform == "win32":
        pytest.skip("EPIPE and /dev/full are POSIX")
    if request.param == "closed pipe":  # what `send ... | head -0` meets
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            yield write_end, "Broken pipe"
        finally:
            os.close(write_end)
    else:
        if not os.path.exists("/dev/full"):
            pytest.skip("no /dev/full here")
        fd = os.open("/dev/full", os.O_WRONLY)
        try:
            yield fd, "No space left on device"
        finally:
            os.close(fd)


def send_to(
    url: str, *args: str, stdin: bytes, stdout: Any, stderr: Any, buffered: bool
) -> subprocess.CompletedProcess[bytes]:
    """Run ``send`` with its output on the given descriptors (or subprocess.PIPE)."""
    environ = dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="error::ResourceWarning")
    environ.pop(SECRET_ENV, None)
    # Buffered, a failed write shows first at a flush, and again at the
    # interpreter's own flush at exit; unbuffered, at the write itself.
    environ.pop("PYTHONUNBUFFERED", None)
    if not buffered:
        environ["PYTHONUNBUFFERED"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "batchdispatch", "send", url, "--retries", "0", *args],
        input=stdin, stdout=stdout, stderr=stderr, timeout=TIMEOUT, env=environ, cwd=ROOT, check=False,
    )


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("outcome", list(OUTCOMES))
def test_an_unwritable_stdout_does_not_change_the_status(
    receiver: Any, unwritable: Tuple[int, str], outcome: str, buffered: bool
) -> None:
    lines, answers, delivered, status, errors = OUTCOMES[outcome]
    receiver.respond(*answers)
    fd, reason = unwritable
    result = send_to(receiver.url, stdin=lines, stdout=fd, stderr=subprocess.PIPE, buffered=buffered)
    stderr = result.stderr.decode("utf-8")
    assert "Traceback" not in stderr
    assert "Exception ignored" not in stderr
    assert result.returncode == status, stderr
    assert receiver.items == delivered
    # One line about the output, then what the run says about delivery.
    first, *rest = stderr.splitlines()
    assert first == f"error: the summary was not written: stdout: {reason}"
    assert len(rest) == len(errors), stderr
    for line, expected in zip(rest, errors):
        assert line.startswith(expected), stderr


@pytest.mark.parametrize("buffered", [True, False], ids=["buffered", "unbuffered"])
@pytest.mark.parametrize("outcome", ["a bad line", "delivery failed"])  # all delivered: no stderr
def test_an_unwritable_stderr_does_not_change_the_status(
    receiver: Any, unwritable: Tuple[int, str], outcome: str, buffered: bool
) -> None:
    lines, answers, delivered, status, _ = OUTCOMES[outcome]
    receiver.respond(*answers)
    fd, _ = unwritable
    # No traceback can be seen here, but a crash would change the status.
    result = send_to(receiver.url, stdin=lines, stdout=subprocess.PIPE, stderr=fd, buffered=buffered)
    assert result.returncode == status
    assert receiver.items == delivered
    fields = summary(result.stdout.decode("utf-8"))  # the summary is whole all the same
    assert fields["delivered"] == str(len(delivered))


def test_unwritable_stdout_and_stderr_do_not_change_the_status(receiver: Any) -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    lines, _, delivered, status, _ = OUTCOMES["a bad line"]
    with open("/dev/full", "wb") as full:
        result = send_to(receiver.url, stdin=lines, stdout=full, stderr=full, buffered=True)
    assert result.returncode == status
    assert receiver.items == delivered


@pytest.mark.parametrize("outcome", ["all delivered", "a bad line"])
def test_a_closed_stdout_does_not_change_the_status(receiver: Any, outcome: str) -> None:
    # `send ... >&-`: Python starts with sys.stdout None; writing to it raised AttributeError.
    lines, _, delivered, status, _ = OUTCOMES[outcome]
    environ = dict(os.environ, PYTHONPATH=ROOT)
    environ.pop(SECRET_ENV, None)
    result = subprocess.run(
        [sys.executable, "-m", "batchdispatch", "send", receiver.url, "--retries", "0"],
        input=lines, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=TIMEOUT, env=environ,
        cwd=ROOT, check=False, preexec_fn=lambda: os.close(1),
    )
    assert result.returncode == status, result.stderr
    assert receiver.items == delivered
    assert b"Traceback" not in result.stderr
    assert b"the summary was not written: stdout: closed" in result.stderr
