"""``manage.py batchdispatch_stats [--flush] [--timeout SECONDS]``.

Prints each configured alias with its options and, if its dispatcher has
been built in this process, every field of its stats, one per line, as
``flask batchdispatch stats`` prints them; otherwise ``not started in this
process``. Stats are per process: a web worker's dispatcher is not visible
from a separate ``manage.py`` process, so run this with ``call_command``
from the process whose stats you want (a shell, a cron command, a task).
"""

from __future__ import annotations

from typing import Any, List, Mapping

from django.core.exceptions import ImproperlyConfigured  # type: ignore[import-untyped]
from django.core.management.base import BaseCommand, CommandError  # type: ignore[import-untyped]

from batchdispatch import _validate
from batchdispatch.contrib._stats_lines import stats_lines
from batchdispatch.contrib.django import conf
from batchdispatch.contrib.django.handler import dispatchers
from batchdispatch.http import _safe_url


class Command(BaseCommand):  # type: ignore[misc]
    help = "Print the stats of each BATCHDISPATCH alias's dispatcher in this process."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--flush", action="store_true",
            help="Deliver what the built dispatchers hold before printing.",
        )
        parser.add_argument(
            "--timeout", type=float, default=5.0,
            help="Seconds --flush waits at most for each dispatcher (default: 5).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            timeout = _validate.seconds("--timeout", options["timeout"], allow_zero=True)
        except (TypeError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        setting = conf.configured()
        if not isinstance(setting, Mapping) or not setting:
            self.stdout.write(f"{conf.SETTING} defines no alias.")
            return
        late: List[str] = []
        for alias, raw in setting.items():
            resolved, problems = conf.resolve(alias, raw)
            if resolved is None:
                raise CommandError(next(p.message for p in problems if p.is_error))
            self.stdout.write(
                f"{alias}: {_safe_url(resolved.url)} (delay {resolved.delay} s, "
                f"max_batch_size {resolved.max_batch_size}, max_queue_size {resolved.max_queue_size}, "
                f"overflow {resolved.overflow})"
            )
            if not dispatchers.is_built(alias):
                self.stdout.write("  not started in this process")
                continue
            try:
                dispatcher = dispatchers[alias]
            except ImproperlyConfigured as exc:
                raise CommandError(str(exc)) from None
            if options["flush"] and not dispatcher.flush(timeout=timeout):
                late.append(alias)
                self.stderr.write(f"  flush timed out after {timeout} s")
            for line in stats_lines(dispatcher.stats()):
                self.stdout.write(f"  {line}")
        if late:
            raise CommandError(f"flush timed out for {', '.join(repr(a) for a in late)}")
