"""A tiny URLconf for tests/with_server/test_django.py: views that enqueue."""

from __future__ import annotations

import json
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path

from batchdispatch.contrib.django import dispatchers


def enqueue(request: HttpRequest, alias: str) -> JsonResponse:
    """POST a JSON list: each item is enqueued on *alias*'s dispatcher."""
    items: Any = json.loads(request.body)
    accepted = [dispatchers[alias].enqueue(item) for item in items]
    return JsonResponse({"accepted": accepted}, status=202)


urlpatterns = [path("events/<str:alias>/", enqueue)]
