"""The Django ORM page's ModelSink: ``python docs/snippets/django_orm.py``.

The analytics app is in modules/django_orm/. It uses the shared PostgreSQL
on 127.0.0.1, in a schema of its own (PGOPTIONS sets the search_path of
every connection) where it creates the app's tables, dropped at the end.
django_orm.out is what it prints.
"""
# needs: postgres

import atexit
import gc
import os
import sys
import uuid
import warnings
from types import SimpleNamespace

import django
import psycopg
from django.conf import settings

server = "postgresql://postgres@127.0.0.1:5432/test"
schema = f"snippet_{uuid.uuid4().hex[:12]}"
with psycopg.connect(server, autocommit=True) as conn:
    conn.execute(f"CREATE SCHEMA {schema}")
os.environ["PGOPTIONS"] = f"-c search_path={schema}"
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "modules", "django_orm"))


@atexit.register
def drop_schema():  # even when a check below fails
    # The workers' kept connections (CONN_MAX_AGE) are reference cycles, as the page says:
    # the collector frees them unclosed, which psycopg reports as a ResourceWarning.
    warnings.filterwarnings("ignore", "<psycopg.Connection object", ResourceWarning)
    gc.collect()
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


# [start django-orm-settings]
# settings.py: keep the worker's connection between batches
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "test", "USER": "postgres", "HOST": "127.0.0.1",  # yours, with PASSWORD and PORT
        "CONN_MAX_AGE": 60,
        "CONN_HEALTH_CHECKS": True,
    },
}
# [end django-orm-settings]

settings.configure(INSTALLED_APPS=["analytics"], DATABASES=DATABASES, USE_TZ=True,
                   DEFAULT_AUTO_FIELD="django.db.models.BigAutoField")
django.setup()

from django.db import connection

from analytics.events import page_views
from analytics.models import AuditEntry, PageView
from analytics.views import product

with connection.schema_editor() as editor:  # the tables a migration would make
    editor.create_model(PageView)
    editor.create_model(AuditEntry)

product(SimpleNamespace(path="/products/tea", user=SimpleNamespace(pk=42)), "tea")  # as Django calls it
assert page_views().flush(timeout=10)  # a sync point: the row is committed
print(f"PageView: {list(PageView.objects.values_list('path', 'user_id'))}")

# [start django-orm-audit]
import uuid

from batchdispatch import BackgroundDispatcher, RetryPolicy
from batchdispatch.sinks.django import ModelSink

from analytics.models import AuditEntry

audit = BackgroundDispatcher(ModelSink(AuditEntry, ignore_conflicts=True), delay=0.5,
                             retry=RetryPolicy(max_attempts=20, max_backoff=60))


def logged_in(user):
    audit.enqueue({"event_id": uuid.uuid4(), "action": "login", "user_id": user.pk})
# [end django-orm-audit]


logged_in(SimpleNamespace(pk=42))
assert audit.flush(timeout=10)
(entry,) = AuditEntry.objects.values("event_id", "action", "user_id")
audit.enqueue(entry)  # the same event again, as a retry after a lost answer would write it
assert audit.shutdown(timeout=10)
assert page_views().shutdown(timeout=10)
print(f"AuditEntry: {AuditEntry.objects.count()} row, action {entry['action']!r}")
connection.close()
