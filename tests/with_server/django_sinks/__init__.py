"""A Django app for the ModelSink tests, run under Django's own test runner by ``run.py``.

``tests/with_server/test_sinks_django.py`` runs ``python -m
tests.with_server.django_sinks.run`` in a subprocess: Django's settings
are configured once per process, and the other Django tests of this suite
configure them without a database.
"""

from __future__ import annotations

from typing import Any, Optional

#: The private PostgreSQL behind the alias ``restart`` while the tests run (set by ``run.py``).
SERVER: Optional[Any] = None

#: The password in DATABASES (trust authentication accepts it): it must show nowhere.
SECRET = "s3cret-pw-Zq81"
