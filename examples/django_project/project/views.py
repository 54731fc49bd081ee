"""A view that records one event per request and answers at once."""

from __future__ import annotations

import os
import uuid

from django.http import HttpRequest, JsonResponse

from batchdispatch.contrib.django import dispatchers


def view(request: HttpRequest) -> JsonResponse:
    """Enqueue ``{"event": "page_view", "id": <id>, "pid": <worker pid>}``; answer 202."""
    event = {"event": "page_view", "id": request.GET.get("id") or uuid.uuid4().hex, "pid": os.getpid()}
    # The first lookup in this process builds the dispatcher; the first enqueue starts its worker.
    accepted = dispatchers["default"].enqueue(event)
    return JsonResponse({"accepted": accepted}, status=202)
