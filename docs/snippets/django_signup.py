"""The Django page's settings, view and test: ``python docs/snippets/django_signup.py``.

It configures Django in this one file (an in-memory SQLite database, the
URLs below), runs the ``SignupTests`` case with Django's test runner and
prints "ok" when it passed (django_signup.out).
"""

import os
import sys
import unittest

import django
from django.conf import settings

os.environ.setdefault("EVENTS_KEY", "example-only")
os.environ.setdefault("AUDIT_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")

# [start settings]
# settings.py
import os

INSTALLED_APPS = [
    "django.contrib.auth",             # ... and the project's other apps
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "batchdispatch.contrib.django",
]

BATCHDISPATCH = {
    "default": {
        "URL": "https://events.example.com/ingest",
        "DELAY": 0.5,
        "MAX_BATCH_SIZE": 500,
        "HEADERS": {"api-key": os.environ["EVENTS_KEY"]},
    },
    "audit": {
        "URL": "https://audit.example.com/hook",
        "SECRET": os.environ["AUDIT_SECRET"],
        "OVERFLOW": "block",
    },
}
# [end settings]

settings.configure(
    INSTALLED_APPS=INSTALLED_APPS, BATCHDISPATCH=BATCHDISPATCH, ROOT_URLCONF=__name__, USE_TZ=True,
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
    MIDDLEWARE=["django.contrib.sessions.middleware.SessionMiddleware",
                "django.contrib.auth.middleware.AuthenticationMiddleware"],
    SECRET_KEY="example-only-not-a-secret",
)
django.setup()

# [start view]
from django.contrib.auth.models import User
from django.shortcuts import redirect

from batchdispatch.contrib.django import dispatchers


def signup(request):
    user = User.objects.create_user(username=request.POST["email"])
    dispatchers["default"].enqueue({"event": "signup", "user": user.pk})
    dispatchers["audit"].enqueue({"who": request.user.pk, "did": "signup"})
    return redirect("welcome")
# [end view]


from django.http import HttpResponse
from django.urls import path

urlpatterns = [
    path("signup/", signup),
    path("welcome/", lambda request: HttpResponse("welcome"), name="welcome"),
]

# [start test]
from django.test import TestCase, override_settings

from batchdispatch.contrib.django import dispatchers
from batchdispatch.testing import Receiver


class SignupTests(TestCase):
    def test_signup_sends_an_event(self):
        with Receiver() as events, Receiver() as audit, override_settings(BATCHDISPATCH={
                "default": {"URL": events.url}, "audit": {"URL": audit.url}}):
            self.client.post("/signup/", {"email": "a@example.com"})
            self.assertTrue(dispatchers["default"].flush(timeout=5))
            self.assertEqual(events.items, [{"event": "signup", "user": 1}])

    def tearDown(self):
        dispatchers.close_all(timeout=5)  # no worker thread outlives the test
# [end test]


if __name__ == "__main__":
    from django.test.runner import DiscoverRunner

    runner = DiscoverRunner(verbosity=0)
    runner.setup_test_environment()
    databases = runner.setup_databases()
    result = runner.run_suite(unittest.defaultTestLoader.loadTestsFromTestCase(SignupTests))
    runner.teardown_databases(databases)
    runner.teardown_test_environment()
    if not result.wasSuccessful():
        sys.exit(1)
    print("ok")
