"""``GET /view?id=<id>``: one event per request; ``POST /hooks``: signed webhooks received."""

from __future__ import annotations

from django.urls import path

from . import views, webhooks

urlpatterns = [
    path("view", views.view),
    path("hooks", webhooks.hooks),
    path("hooks/standardwebhooks", webhooks.hooks_standardwebhooks),
]
