"""``GET /view?id=<id>``: one event per request."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [path("view", views.view)]
