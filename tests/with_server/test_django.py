"""The Django app against real receivers, through Django's own test client."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import threading
from typing import Any, Callable, Dict, Iterator, List

import pytest

pytest.importorskip("django")

import django
from django.conf import settings

from batchdispatch import DispatcherStats
from batchdispatch.testing import Receiver
from tests.conftest import run_python

URLCONF = "tests.with_server.django_urls"
APP = "batchdispatch.contrib.django"

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="batchdispatch-tests",
        ALLOWED_HOSTS=["testserver"],
        INSTALLED_APPS=[APP],
        MIDDLEWARE=[],
        ROOT_URLCONF=URLCONF,
        DATABASES={},
        USE_TZ=True,
    )
    django.setup()
elif APP not in settings.INSTALLED_APPS:  # pragma: no cover - another module configured Django
    pytest.skip(f"Django is configured without {APP}", allow_module_level=True)

from django.core import checks  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.core.management import CommandError, call_command  # noqa: E402
from django.test import Client, override_settings  # noqa: E402

from batchdispatch.contrib.django import UnknownAliasError, dispatchers  # noqa: E402


@pytest.fixture(autouse=True)
def _close_dispatchers() -> Iterator[None]:
    """Every dispatcher is shut down by the end of each test (before the leak check)."""
    dispatchers.close_all(timeout=5)
    yield
    assert dispatchers.close_all(timeout=5)


def config(url: str, **options: Any) -> Dict[str, Any]:
    # A long delay: batches leave on flush() or shutdown(), the tests' sync points.
    return {"URL": url, "DELAY": 10.0, **options}


def post(client: Client, alias: str, items: List[Any]) -> Any:
    response = client.post(f"/events/{alias}/", data=json.dumps(items), content_type="application/json")
    assert response.status_code == 202
    return response.json()


def test_a_request_enqueues_and_the_receiver_gets_exactly_those_items(receiver: Receiver) -> None:
    items = [{"event": "signup", "n": n} for n in range(5)]
    with override_settings(BATCHDISPATCH={"default": config(receiver.url)}):
        assert post(Client(), "default", items[:2]) == {"accepted": [True, True]}
        assert post(Client(), "default", items[2:]) == {"accepted": [True, True, True]}
        assert dispatchers["default"].flush(timeout=10)
        assert receiver.items == items
        stats = dispatchers["default"].stats()
        assert (stats.enqueued, stats.dispatched, stats.failed, stats.dropped) == (5, 5, 0, 0)


def test_two_aliases_ship_to_two_receivers(make_receiver: Callable[..., Receiver]) -> None:
    events, audit = make_receiver(), make_receiver(secret="s3cret")
    setting = {
        "default": config(events.url),
        "audit": config(audit.url, SECRET="s3cret", HEADERS={"X-Source": "django"}, MAX_BATCH_SIZE=2),
    }
    with override_settings(BATCHDISPATCH=setting):
        client = Client()
        post(client, "default", ["a", "b", "c"])
        post(client, "audit", [{"who": 1}, {"who": 2}, {"who": 3}])
        assert all(d.flush(timeout=10) for d in dispatchers.all())
        assert events.items == ["a", "b", "c"]
        assert audit.items == [{"who": 1}, {"who": 2}, {"who": 3}]
        assert [len(r.items) for r in audit.requests] == [2, 1]
        assert all(r.verified and r.headers["x-source"] == "django" for r in audit.requests)
        assert all(r.headers["webhook-signature"].startswith("v1,") for r in audit.requests)
        assert all(r.headers.get("webhook-signature") is None for r in events.requests)


def test_signature_and_max_body_bytes_reach_the_sink(make_receiver: Callable[..., Receiver]) -> None:
    receiver = make_receiver(secret="s3cret", max_body_bytes=40)
    setting = {"default": config(receiver.url, SECRET="s3cret", SIGNATURE="x-webhook", MAX_BODY_BYTES=40)}
    events = [{"n": n, "pad": "xxxxxxxxxx"} for n in range(4)]
    with override_settings(BATCHDISPATCH=setting):
        post(Client(), "default", events)
        assert dispatchers["default"].flush(timeout=10)
    assert receiver.items == events
    requests = receiver.requests
    assert len(requests) == 4  # one event per body: two would be over 40 bytes
    assert all(r.verified is True and "x-webhook-signature" in r.headers for r in requests)


def test_dispatchers_are_built_and_started_lazily(receiver: Receiver) -> None:
    threads = set(threading.enumerate())  # a set: the receiver's handler threads may end meanwhile
    with override_settings(BATCHDISPATCH={"default": config(receiver.url), "audit": config(receiver.url)}):
        assert "default" in dispatchers
        assert "audit" in dispatchers
        assert "nope" not in dispatchers
        assert dispatchers.all(initialized_only=True) == []
        assert not dispatchers.all(initialized_only=True)
        assert call_command("check", tags=["batchdispatch"], stdout=io.StringIO()) is None
        assert not dispatchers.all(initialized_only=True)
        dispatcher = dispatchers["default"]
        assert dispatchers.is_built("default")
        assert len(dispatchers.all(initialized_only=True)) == 1
        assert dispatchers["default"] is dispatcher
        assert set(threading.enumerate()) <= threads, "looking an alias up must not start a thread"
        post(Client(), "default", ["x"])
        assert dispatcher.stats().worker_alive
        assert [t.name for t in threading.enumerate()].count("batchdispatch:django:default") == 1
        assert dispatcher.flush(timeout=10)
        assert dispatchers.all(initialized_only=True) == [dispatcher]
    assert receiver.items == ["x"]


def test_nothing_starts_at_import_setup_or_checks_in_a_fresh_process(receiver: Receiver) -> None:
    result = run_python(f"""
        import threading
        import django
        from django.conf import settings
        import batchdispatch.contrib.django
        settings.configure(INSTALLED_APPS=[{APP!r}], DATABASES={{}}, USE_TZ=True,
                           BATCHDISPATCH={{"default": {{"URL": {receiver.url!r}}}}})
        django.setup()
        from django.core import checks
        from batchdispatch.contrib.django import dispatchers
        assert checks.run_checks(tags=["batchdispatch"]) == []
        assert threading.active_count() == 1, threading.enumerate()
        assert not dispatchers.all(initialized_only=True)
        dispatchers["default"].enqueue({{"from": "child"}})
        assert threading.active_count() == 2
        assert dispatchers.close_all(timeout=10)
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert receiver.items == [{"from": "child"}]


def test_override_settings_switches_the_url(make_receiver: Callable[..., Receiver]) -> None:
    old, new = make_receiver(), make_receiver()
    with override_settings(BATCHDISPATCH={"default": config(old.url)}):
        first = dispatchers["default"]
        post(Client(), "default", ["before"])
        # Delivered by the shutdown that the change of setting triggers, not by a flush.
        with override_settings(BATCHDISPATCH={"default": config(new.url)}):
            assert first.stats().worker_alive is False
            assert old.items == ["before"]
            assert not dispatchers.all(initialized_only=True)
            second = dispatchers["default"]
            assert second is not first
            post(Client(), "default", ["after"])
            assert second.flush(timeout=10)
        assert not dispatchers.all(initialized_only=True)
        assert first.enqueue("late") is False
        assert dispatchers["default"] is not second
    assert new.items == ["after"]
    assert old.items == ["before"]


def test_unknown_alias_and_bad_settings_raise_naming_alias_and_key(receiver: Receiver) -> None:
    with override_settings(BATCHDISPATCH={"default": config(receiver.url)}):
        with pytest.raises(UnknownAliasError, match=r"no alias 'x' \(configured: 'default'\)"):
            dispatchers["x"]
        with pytest.raises(KeyError):
            dispatchers["x"]
    with override_settings(BATCHDISPATCH={"audit": config(receiver.url, DELAY=-1)}):
        with pytest.raises(ImproperlyConfigured, match=r"BATCHDISPATCH\['audit'\]\['DELAY'\]: DELAY must be"):
            dispatchers["audit"]
        assert not dispatchers.all(initialized_only=True)
    with override_settings(BATCHDISPATCH=["not", "a", "dict"]), pytest.raises(
        ImproperlyConfigured, match="BATCHDISPATCH must be a dict"
    ):
        dispatchers["default"]
    with override_settings():
        del settings.BATCHDISPATCH
        with pytest.raises(UnknownAliasError, match=r"configured: none"):
            dispatchers["default"]


URL = "http://127.0.0.1:9/ingest"
NONE_ALLOWED = ("MAX_BATCH_SIZE", "MAX_QUEUE_SIZE", "HEADERS", "SECRET", "MAX_BODY_BYTES")


def test_a_spool_takes_what_the_receiver_did_not_and_the_next_dispatcher_delivers_it(
    make_receiver: Callable[..., Receiver], tmp_path: Any,
) -> None:
    spool = str(tmp_path / "events.db")
    down = make_receiver()
    down.respond(*[507] * 5)  # a 5xx urllib3 does not retry: it fails while the dispatcher closes, spilled
    with override_settings(BATCHDISPATCH={"default": config(down.url, SPOOL=spool, OVERFLOW="spill")}):
        assert post(Client(), "default", [{"n": 1}, {"n": 2}]) == {"accepted": [True, True]}
        dispatcher = dispatchers["default"]
        assert dispatchers.close_all(timeout=60)
        assert dispatcher.stats().spilled == 2
    up = make_receiver()
    with override_settings(BATCHDISPATCH={"default": config(up.url, SPOOL=spool)}):
        assert dispatchers["default"].flush(timeout=10)
        assert up.items == [{"n": 1}, {"n": 2}]
        assert dispatchers["default"].stats().replayed == 2


@pytest.mark.parametrize(
    ("setting", "ids"),
    [
        ({"default": {"URL": URL}}, []),
        ({"default": {"URL": URL, **dict.fromkeys(NONE_ALLOWED)}}, []),
        ("https://not-a-dict", ["batchdispatch.E001"]),
        ({"default": "https://example.com"}, ["batchdispatch.E002"]),
        ({"default": {}}, ["batchdispatch.E003"]),
        ({"default": {"URL": "ftp://example.com/x"}}, ["batchdispatch.E003"]),
        ({"default": {"URL": 42}}, ["batchdispatch.E003"]),
        ({"default": {"URL": URL, "DELAY": 0}}, ["batchdispatch.E004"]),
        ({"default": {"URL": URL, "DELAY": "1"}}, ["batchdispatch.E004"]),
        ({"default": {"URL": URL, "MAX_BATCH_SIZE": 0}}, ["batchdispatch.E004"]),
        ({"default": {"URL": URL, "MAX_QUEUE_SIZE": 1.5}}, ["batchdispatch.E004"]),
        ({"default": {"URL": URL, "EXIT_TIMEOUT": float("inf")}}, ["batchdispatch.E004"]),
        ({"default": {"URL": URL, "OVERFLOW": "drop"}}, ["batchdispatch.E005"]),
        ({"default": {"URL": URL, "OVERFLOW": "spill"}}, ["batchdispatch.E005"]),
        ({"default": {"URL": URL, "SPOOL": "/no/such/dir/events.db"}}, ["batchdispatch.E008"]),
        ({"default": {"URL": URL, "SPOOL_DURABLE": 1}}, ["batchdispatch.E008"]),
        ({"default": {"URL": URL, "HEADERS": {"X-Key": 1}}}, ["batchdispatch.E006"]),
        ({"default": {"URL": URL, "SECRET": ""}}, ["batchdispatch.E007"]),
        ({"default": {"URL": URL, "SECRET": "whsec_!"}}, ["batchdispatch.E007"]),
        ({"default": {"URL": URL, "SECRET": ["a", "b"]}}, []),
        ({"default": {"URL": URL, "SECRET": ["a", "b"], "SIGNATURE": "x-webhook"}}, ["batchdispatch.E007"]),
        ({"default": {"URL": URL, "SIGNATURE": "hmac"}}, ["batchdispatch.E007"]),
        ({"default": {"URL": URL, "MAX_BODY_BYTES": "5MB"}}, ["batchdispatch.E004"]),
        ({"default": {"URL": URL, "DELEY": 1}}, ["batchdispatch.W001"]),
        ({"default": {"DELAY": -1}, "audit": {"URL": URL, "OVERFLOW": 1}},
         ["batchdispatch.E003", "batchdispatch.E004", "batchdispatch.E005"]),
    ],
)
def test_system_checks_report_each_bad_setting(setting: Any, ids: List[str]) -> None:
    with override_settings(BATCHDISPATCH=setting):
        found = checks.run_checks(tags=["batchdispatch"])
        assert sorted(message.id for message in found) == ids
        assert not dispatchers.all(initialized_only=True)


def test_a_header_value_with_crlf_fails_the_check_by_key_not_value() -> None:
    headers = {"X-Api-Key": "sk_live_Jx40-secret\r\n"}
    with override_settings(BATCHDISPATCH={"default": {"URL": URL, "HEADERS": headers}}):
        (error,) = checks.run_checks(tags=["batchdispatch"])
        assert not dispatchers.all(initialized_only=True)
    assert error.id == "batchdispatch.E006"
    assert error.msg.startswith(
        "BATCHDISPATCH['default']['HEADERS']: HEADERS: the value of header 'X-Api-Key'",
    )
    assert "sk_live_Jx40" not in error.msg


def test_checks_name_the_alias_and_key_and_hint_at_typos() -> None:
    with override_settings(BATCHDISPATCH={"audit": {"URL": URL, "OVERFLOW": "drop", "DELEY": 1}}):
        warning, error = sorted(checks.run_checks(tags=["batchdispatch"]), key=lambda m: m.id, reverse=True)
    assert error.id == "batchdispatch.E005"
    assert error.is_serious()
    assert error.msg.startswith("BATCHDISPATCH['audit']['OVERFLOW']: overflow must be one of")
    assert warning.id == "batchdispatch.W001"
    assert not warning.is_serious()
    assert "'DELEY'" in warning.msg
    assert warning.hint == "Did you mean 'DELAY'?"


def test_stats_command_prints_each_alias(make_receiver: Callable[..., Receiver]) -> None:
    events, audit = make_receiver(), make_receiver()
    setting = {"default": config(events.url), "audit": config(f"{audit.url}?token=hidden")}
    with override_settings(BATCHDISPATCH=setting):
        out = io.StringIO()
        call_command("batchdispatch_stats", stdout=out)
        assert out.getvalue().splitlines() == [
            f"default: {events.url} (delay 10.0 s, max_batch_size None, max_queue_size 100000, "
            "overflow drop_newest)",
            "  not started in this process",
            f"audit: {audit.url} (delay 10.0 s, max_batch_size None, max_queue_size 100000, "
            "overflow drop_newest)",
            "  not started in this process",
        ]
        assert not dispatchers.all(initialized_only=True)
        post(Client(), "default", [1, 2, 3])
        out = io.StringIO()
        call_command("batchdispatch_stats", "--flush", stdout=out)
        lines = out.getvalue().splitlines()
        # Every stats field, one per line, as `flask batchdispatch stats` prints them.
        audit_at = next(n for n, line in enumerate(lines) if line.startswith("audit: "))
        printed = lines[1:audit_at]
        names = [f"  {field.name}" for field in dataclasses.fields(DispatcherStats)]
        assert [line.split(":")[0] for line in printed] == names
        assert printed[:17] == [
            "  name: django:default",
            "  pending: 0",
            "  in_flight: 0",
            "  enqueued: 3",
            "  dispatched: 3",
            "  batches: 1",
            "  failed: 0",
            "  dead_lettered: 0",
            "  retried: 0",
            "  dropped: 0",
            "  dropped_by_reason: {}",
            "  last_error: None",
            "  worker_alive: True",
            "  active_batches: 0",
            "  spilled: 0",
            "  replayed: 0",
            "  spool_faults: {}",
        ]
        assert printed[17] == "  oldest_pending_age: None"
        assert re.fullmatch(r"  batch_seconds: count=1 mean=\S+ p50<=\S+ p95<=\S+ p99<=\S+", printed[18])
        assert printed[19] == "  batch_sizes: count=1 mean=3 p50<=5 p95<=5 p99<=5"
        assert lines[audit_at + 1:] == ["  not started in this process"]
        assert "hidden" not in out.getvalue()
    assert events.items == [1, 2, 3]


def test_stats_command_reports_bad_settings() -> None:
    with override_settings(BATCHDISPATCH={"default": {"URL": URL, "MAX_QUEUE_SIZE": 0}}), pytest.raises(
        CommandError, match=r"BATCHDISPATCH\['default'\]\['MAX_QUEUE_SIZE'\]"
    ):
        call_command("batchdispatch_stats", skip_checks=True, stdout=io.StringIO())
    with override_settings(BATCHDISPATCH={}):
        out = io.StringIO()
        call_command("batchdispatch_stats", stdout=out)
        assert out.getvalue() == "BATCHDISPATCH defines no alias.\n"


def test_app_config_is_found_and_registers_the_checks() -> None:
    from django.apps import apps

    config = apps.get_app_config("batchdispatch")
    assert config.name == APP
    assert type(config).__name__ == "BatchDispatchConfig"
    assert "batchdispatch" in checks.registry.registry.tags_available()
