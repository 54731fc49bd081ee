#!/usr/bin/env python
"""The example Django project's manage.py: run ``python examples/django_project/manage.py demo``.

That one command starts a receiver on 127.0.0.1 (the small one that ships
with batchdispatch, a private module), serves the project on another port
of 127.0.0.1, sends it a few requests and prints what reached the receiver
(see ``project/management/commands/demo.py``).

Served for real, the project reads ``BATCHDISPATCH_URL`` (required),
``BATCHDISPATCH_DELAY`` and ``BATCHDISPATCH_EXIT_TIMEOUT`` from the
environment (see ``project/settings.py``)::

    export BATCHDISPATCH_URL=https://events.example.com/ingest
    gunicorn -w 2 --chdir examples/django_project project.wsgi
    BATCHDISPATCH_URL=http://127.0.0.1:9000/ python examples/django_project/manage.py runserver

Without ``BATCHDISPATCH_URL``, ``manage.py check`` and ``runserver`` report
``batchdispatch.E003``, and a request that enqueues fails with
ImproperlyConfigured; only ``demo`` brings its own receiver.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
