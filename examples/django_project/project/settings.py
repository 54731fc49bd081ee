"""Settings of the example project: the minimum to serve one view, plus ``BATCHDISPATCH``.

The dispatcher's options come from the environment. Nothing here (or in
the app's ``ready()``) builds a dispatcher or starts a thread, so
``gunicorn --preload`` can import the project before it forks its workers.
"""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "batchdispatch.contrib.django",
    "project",  # for the ``demo`` management command
]
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
DATABASES: dict = {}
USE_TZ = True

# The secrets webhooks are verified with (project/webhooks.py), space-separated in the
# environment: one, or the old and the new one while a key is rotated.
WEBHOOK_SECRETS = os.environ.get(
    "WEBHOOK_SECRETS",
    "whsec_b2xkLWtleS1leGFtcGxlLW9ubHktMzItYnl0ZXM= whsec_bmV3LWtleS1leGFtcGxlLW9ubHktMzItYnl0ZXM=",
).split()

BATCHDISPATCH = {
    "default": {
        # None: `manage.py check` reports batchdispatch.E003, and the first lookup raises.
        "URL": os.environ.get("BATCHDISPATCH_URL"),
        "DELAY": float(os.environ.get("BATCHDISPATCH_DELAY", "0.1")),
        # Keep it below the server's graceful timeout (gunicorn --graceful-timeout, 30 s).
        "EXIT_TIMEOUT": float(os.environ.get("BATCHDISPATCH_EXIT_TIMEOUT", "5")),
    },
}
