"""The metrics page's Django app and /metrics view: ``python docs/snippets/metrics_django.py``.

It configures Django with the app of modules/myapp/ and its view at
/metrics, and fetches it with the test client (metrics_django.out).
"""

import os
import sys

import django
from django.conf import settings
from django.urls import path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "modules"))
settings.configure(INSTALLED_APPS=["myapp.apps.MyAppConfig"], ROOT_URLCONF=__name__,
                   ALLOWED_HOSTS=["testserver"], SECRET_KEY="example-only-not-a-secret", USE_TZ=True)
django.setup()  # runs MyAppConfig.ready(), which registers the collector

from django.test import Client

from batchdispatch import BackgroundDispatcher

from myapp import views

urlpatterns = [path("metrics", views.metrics)]

events = BackgroundDispatcher(lambda batch: None, delay=0.01, name="events")
events.enqueue({"event": "signup"})
assert events.flush(timeout=5)
answer = Client().get("/metrics")
print(f"GET /metrics: {answer.status_code} {answer['Content-Type'].split(';')[0]}")
print(next(line for line in answer.content.decode().splitlines()
           if line.startswith("batchdispatch_items_dispatched")))
assert events.shutdown(timeout=5)
