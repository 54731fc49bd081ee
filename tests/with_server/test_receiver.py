"""The scripted Receiver used by the tests, the demo and the bench."""

from __future__ import annotations

import gzip
import http.client
import threading
import time
from typing import Callable

import pytest
import requests

from batchdispatch.http import sign
from batchdispatch.testing import Receiver, Response


def receiver_threads() -> list:
    return [t for t in threading.enumerate() if t.name.startswith("batchdispatch-receiver")]


def test_keep_alive_connections_do_not_keep_threads_alive_past_close() -> None:
    receiver = Receiver().start()
    with requests.Session() as session:  # pooled keep-alive connections, left open
        for n in range(3):
            assert session.post(receiver.url, json=[n]).status_code == 200
        other = requests.Session()
        other.post(receiver.url, json=["x"])
        assert len(receiver_threads()) == 3  # the server and one thread per open connection
        started = time.monotonic()
        receiver.close()
        assert time.monotonic() - started < 2
        assert receiver_threads() == []
        other.close()
    receiver.close()  # idempotent
    assert receiver.items == [0, 1, 2, "x"]


def test_scripted_answers_come_in_order_then_200(receiver: Receiver) -> None:
    receiver.respond(503, Response(201, headers={"X-Answer": "yes"}, body=b"made"))
    with requests.Session() as session:
        answers = [session.post(receiver.url + f"p{n}", json=[n]) for n in range(3)]
    assert [a.status_code for a in answers] == [503, 201, 200]
    assert (answers[1].headers["X-Answer"], answers[1].content) == ("yes", b"made")
    assert [r.path for r in receiver.requests] == ["/p0", "/p1", "/p2"]
    assert [r.status for r in receiver.requests] == [503, 201, 200]
    assert receiver.items == [1, 2]  # only 2xx answers count
    assert receiver.request_count == 3
    assert receiver.item_count == 2


def test_requests_are_recorded_before_the_answer(receiver: Receiver) -> None:
    with requests.Session() as session:
        session.put(receiver.url, data=b'{"one": 1}', headers={"X-Thing": "a"})
        (request,) = receiver.requests  # no wait needed: recorded before answering
    assert (request.method, request.items, request.headers["x-thing"]) == ("PUT", {"one": 1}, "a")
    assert request.verified is None
    assert receiver.items == [{"one": 1}]


def test_gzip_and_chunked_bodies_are_decoded(receiver: Receiver) -> None:
    with requests.Session() as session:
        session.post(receiver.url, data=gzip.compress(b"[1,2]"), headers={"Content-Encoding": "gzip"})
        session.post(receiver.url, data=iter([b"[3,", b"4]"]))  # a generator: chunked encoding
        session.post(receiver.url, data=b"not json")
    first, second, third = receiver.requests
    assert (first.body, second.body, second.headers["transfer-encoding"]) == (b"[1,2]", b"[3,4]", "chunked")
    assert third.items is None
    assert receiver.items == [1, 2, 3, 4]


def test_with_a_secret_it_verifies_and_refuses_bad_signatures(make_receiver: Callable[..., Receiver]) -> None:
    receiver = make_receiver(secret="k")
    receiver.respond(202)
    body, now = b"[1]", int(time.time())
    with requests.Session() as session:
        bad = session.post(receiver.url, data=body, headers={"X-Webhook-Timestamp": str(now),
                                                             "X-Webhook-Signature": sign(body, "x", now)})
        good = session.post(receiver.url, data=body, headers={"X-Webhook-Timestamp": str(now),
                                                              "X-Webhook-Signature": sign(body, "k", now)})
        unsigned = session.post(receiver.url, data=body)
    assert (bad.status_code, good.status_code, unsigned.status_code) == (401, 202, 401)  # 202 kept for good
    assert [r.verified for r in receiver.requests] == [False, True, False]
    assert receiver.items == [1]


def test_waits_are_sync_points_with_a_timeout(receiver: Receiver) -> None:
    assert receiver.wait_for_requests(1, timeout=0.05) is False
    assert receiver.wait_for_items(1, timeout=0.05) is False

    def post_later() -> None:
        with requests.Session() as session:
            session.post(receiver.url, json=[1, 2])

    thread = threading.Thread(target=post_later)
    thread.start()
    assert receiver.wait_for_items(2, timeout=10)
    assert receiver.wait_for_requests(1, timeout=10)
    thread.join()
    receiver.clear()
    assert receiver.requests == []
    assert receiver.items == []


def test_close_cuts_a_scripted_delay_short() -> None:
    receiver = Receiver().start()
    receiver.respond(Response(delay=30))
    errors = []

    def post() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=10)
        try:
            connection.request("POST", "/", body=b"[1]")
            connection.getresponse()
        except (http.client.HTTPException, OSError) as exc:
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=post)
    thread.start()
    assert receiver.wait_for_requests(1)
    started = time.monotonic()
    receiver.close()
    assert time.monotonic() - started < 2
    thread.join()
    assert len(errors) == 1  # hung up without an answer
    assert receiver.items == []


def test_it_is_quiet(receiver: Receiver, capfd: pytest.CaptureFixture[str]) -> None:
    receiver.respond(500)
    with requests.Session() as session:
        session.post(receiver.url, json=[1])
        session.get(receiver.url)
    connection = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=5)
    connection.request("POST", "/", body=b"x", headers={"Content-Length": "nonsense"})
    assert connection.getresponse().status == 400
    connection.close()
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_url_and_lifecycle() -> None:
    receiver = Receiver()
    with pytest.raises(RuntimeError, match="start"):
        receiver.url  # noqa: B018
    assert "not started" in repr(receiver)
    with receiver:
        assert receiver.url == f"http://127.0.0.1:{receiver.port}/"
        assert receiver.start() is receiver
        assert "running" in repr(receiver)
    assert "closed" in repr(receiver)
    with pytest.raises(RuntimeError, match="closed"):
        receiver.start()
