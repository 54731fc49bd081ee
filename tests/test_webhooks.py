"""batchdispatch.webhooks: Standard Webhooks signatures, checked against the reference library.

``standardwebhooks`` is the specification's own Python library (a test
dependency only): what it signs, :func:`verify_webhook` accepts, and both
refuse the same forgeries. The sinks' side, over real HTTP, is in
``tests/with_server/test_standard_webhooks.py``.
"""

from __future__ import annotations

import base64
import email.message
import math
import time
from datetime import datetime, timezone
from typing import Any, Dict

import pytest
from freezegun import freeze_time
from standardwebhooks import Webhook, WebhookVerificationError

from batchdispatch import webhooks
from batchdispatch.webhooks import sign, sign_webhook, verify_signature, verify_webhook

from .conftest import run_python

KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
OTHER = "whsec_" + base64.b64encode(b"another key, rotated out").decode()
BODY = b'[{"event":"invoice.paid","invoice":1001}]'
NOW = 1_714_564_800


def signed(body: bytes = BODY, secret: Any = SECRET, webhook_id: str = "msg_1",
           at: int = NOW) -> Dict[str, str]:
    return {"webhook-id": webhook_id, "webhook-timestamp": str(at),
            "webhook-signature": sign_webhook(body, secret, webhook_id, at)}


def library_signed(body: bytes = BODY, secret: Any = SECRET, webhook_id: str = "msg_1",
                   at: int = NOW) -> Dict[str, str]:
    when = datetime.fromtimestamp(at, tz=timezone.utc)
    # A str payload: before 1.3 (the last release for Python 3.9 is 1.1) the
    # library's sign() formats bytes with their repr.
    return {"webhook-id": webhook_id, "webhook-timestamp": str(at),
            "webhook-signature": Webhook(secret).sign(webhook_id, when, body.decode("utf-8"))}


def library_accepts(body: bytes, headers: Dict[str, str], secret: Any = SECRET) -> bool:
    try:
        Webhook(secret).verify(body, headers, json_parse=False)
    except WebhookVerificationError:
        return False
    return True


def test_the_specifications_example_signature() -> None:
    # The example of the Standard Webhooks specification and of Svix's documentation.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    msg_id, at = "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330
    assert sign_webhook(body, secret, msg_id, at) == expected
    assert library_signed(body, secret, msg_id, at)["webhook-signature"] == expected


@freeze_time(datetime.fromtimestamp(NOW, tz=timezone.utc))
def test_each_side_accepts_what_the_other_signs() -> None:
    ours, theirs = signed(), library_signed()
    assert ours == theirs  # byte for byte
    assert library_accepts(BODY, ours)
    assert verify_webhook(BODY, theirs, SECRET) is True


@freeze_time(datetime.fromtimestamp(NOW, tz=timezone.utc))
@pytest.mark.parametrize("change", ["id", "timestamp", "body", "signature", "key"])
def test_both_sides_reject_a_change_to_what_is_signed(change: str) -> None:
    body, headers, secret = BODY, library_signed(), SECRET
    if change == "id":  # a captured request replayed under a fresh id: issue 15
        headers["webhook-id"] = "msg_2"
    elif change == "timestamp":
        headers["webhook-timestamp"] = str(NOW - 1)
    elif change == "body":
        body = BODY.replace(b"paid", b"void")
    elif change == "signature":
        headers["webhook-signature"] = "v1," + base64.b64encode(b"x" * 32).decode()
    else:
        secret = OTHER
    assert verify_webhook(body, headers, secret) is False
    assert library_accepts(body, headers, secret) is False


@pytest.mark.parametrize(("age", "accepted"), [(-301, False), (-299, True), (299, True), (301, False)])
def test_both_sides_keep_a_300_second_window(age: int, accepted: bool) -> None:
    headers = signed(at=NOW)
    with freeze_time(datetime.fromtimestamp(NOW + age, tz=timezone.utc)):
        assert verify_webhook(BODY, headers, SECRET) is accepted
        assert library_accepts(BODY, headers) is accepted
        assert verify_webhook(BODY, headers, SECRET, tolerance=600) is True


@freeze_time(datetime.fromtimestamp(NOW, tz=timezone.utc))
def test_rotation_one_signature_per_secret_and_any_match_accepts() -> None:
    headers = signed(secret=[OTHER, SECRET])
    first, second = headers["webhook-signature"].split(" ")
    assert first == sign_webhook(BODY, OTHER, "msg_1", NOW)
    assert second == sign_webhook(BODY, SECRET, "msg_1", NOW)
    # A receiver on either key accepts, the library included; one on a third key does not.
    assert library_accepts(BODY, headers, SECRET)
    assert library_accepts(BODY, headers, OTHER)
    assert verify_webhook(BODY, headers, SECRET)
    assert verify_webhook(BODY, headers, OTHER)
    third = "whsec_" + base64.b64encode(b"third").decode()
    assert not verify_webhook(BODY, headers, third)
    assert not library_accepts(BODY, headers, third)
    # A receiver that knows several secrets accepts a request signed with any of them.
    assert verify_webhook(BODY, library_signed(secret=OTHER), [third, OTHER]) is True
    assert verify_webhook(BODY, library_signed(secret=OTHER), (third,)) is False


@freeze_time(datetime.fromtimestamp(NOW, tz=timezone.utc))
def test_a_raw_secret_is_the_key_itself() -> None:
    # str (UTF-8) and bytes without the prefix are the key; the library takes bytes as the key.
    assert signed(secret="raw key") == signed(secret=b"raw key")
    assert library_accepts(BODY, signed(secret="raw key"), b"raw key")
    # Unpadded base64 after whsec_ is the same key.
    assert signed(secret=SECRET.rstrip("=")) == signed()


@freeze_time(datetime.fromtimestamp(NOW, tz=timezone.utc))
def test_headers_are_read_from_any_mapping_in_any_case() -> None:
    headers = signed()
    message = email.message.Message()  # what http.server hands a handler
    for name, value in headers.items():
        message[name.title()] = value
    assert verify_webhook(BODY, message, SECRET) is True
    assert verify_webhook(BODY, {k.upper(): v for k, v in headers.items()}, SECRET) is True
    assert verify_webhook(BODY.decode(), headers, SECRET) is True  # a str body is its UTF-8
    assert verify_webhook(bytearray(BODY), headers, SECRET) is True
    raw = {k.encode(): v.encode() for k, v in headers.items()}  # bytes, as some servers give them
    assert verify_webhook(BODY, raw, SECRET) is True


@freeze_time(datetime.fromtimestamp(NOW, tz=timezone.utc))
@pytest.mark.parametrize(
    "change",
    [
        {"webhook-id": None}, {"webhook-timestamp": None}, {"webhook-signature": None},
        {"webhook-id": ""}, {"webhook-timestamp": "not a time"}, {"webhook-timestamp": f"{NOW}.0"},
        {"webhook-timestamp": f" {NOW}x"}, {"webhook-timestamp": "1_714_564_800"},
        {"webhook-timestamp": "-1"}, {"webhook-timestamp": "9" * 400},
        {"webhook-signature": "v1a,abc"}, {"webhook-signature": "v2,abc"}, {"webhook-signature": "    "},
        {"webhook-signature": "\udcff"},
    ],
)
def test_malformed_requests_are_false_never_an_exception(change: Dict[str, Any]) -> None:
    headers: Dict[str, Any] = signed()
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    assert verify_webhook(BODY, headers, SECRET) is False


@freeze_time(datetime.fromtimestamp(NOW, tz=timezone.utc))
def test_a_body_of_the_wrong_type_is_false() -> None:
    assert verify_webhook(None, signed(), SECRET) is False  # type: ignore[arg-type]
    assert verify_webhook(12, signed(), SECRET) is False  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("secret", "error", "match"),
    [
        ("", ValueError, "secret must not be empty"),
        (b"", ValueError, "secret must not be empty"),
        ([], ValueError, "secret must hold at least one secret"),
        ([SECRET, ""], ValueError, r"secret\[1\] must not be empty"),
        ("whsec_", ValueError, "has no key after its prefix"),
        ("whsec_not base64!", ValueError, "is not valid base64"),
        (None, TypeError, "secret must be a str or bytes"),
        (42, TypeError, "secret must be a str or bytes"),
        ({SECRET}, TypeError, "secret must be a str or bytes"),
    ],
)
def test_a_bad_secret_is_an_error_naming_it_on_both_sides(secret: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match) as raised:
        verify_webhook(BODY, signed(), secret)
    with pytest.raises(error, match=match):
        sign_webhook(BODY, secret, "msg_1", NOW)
    assert "not base64!" not in str(raised.value)  # never the value


@pytest.mark.parametrize("tolerance", [-1, math.nan, math.inf, -math.inf])
def test_a_tolerance_that_turns_replay_protection_off_is_an_error(tolerance: float) -> None:
    with pytest.raises(ValueError, match="tolerance"):
        verify_webhook(BODY, signed(at=int(time.time())), SECRET, tolerance=tolerance)
    with pytest.raises(TypeError, match="tolerance"):
        verify_webhook(BODY, signed(), SECRET, tolerance="300")  # type: ignore[arg-type]


def test_headers_that_are_not_a_mapping_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="headers must be a mapping"):
        verify_webhook(BODY, [("webhook-id", "x")], SECRET)


def test_the_module_gives_both_schemes_without_requests() -> None:
    assert webhooks.sign is sign
    assert webhooks.verify_signature is verify_signature
    assert (webhooks.WEBHOOK_ID, webhooks.WEBHOOK_TIMESTAMP, webhooks.WEBHOOK_SIGNATURE) == (
        "webhook-id", "webhook-timestamp", "webhook-signature")
    assert all(hasattr(webhooks, name) for name in webhooks.__all__)
    result = run_python(
        """
        import sys
        from batchdispatch.webhooks import verify_webhook
        assert "requests" not in sys.modules and "urllib3" not in sys.modules, "imported requests"
        print("ok")
        """
    )
    assert (result.returncode, result.stdout.strip()) == (0, "ok"), result.stderr
