"""The Django app: add ``"batchdispatch.contrib.django"`` to ``INSTALLED_APPS``."""

from __future__ import annotations

from django.apps import AppConfig  # type: ignore[import-untyped]


class BatchDispatchConfig(AppConfig):  # type: ignore[misc]
    """Registers the system checks, and nothing else.

    ``ready()`` builds no dispatcher and starts no thread: a server that
    loads the app and then forks (``gunicorn --preload``) would otherwise
    leave the thread behind in the parent.
    """

    name = "batchdispatch.contrib.django"
    label = "batchdispatch"
    verbose_name = "batchdispatch"

    def ready(self) -> None:
        from django.core import checks  # type: ignore[import-untyped]

        from .checks import TAG, check_settings

        checks.register(check_settings, TAG)
