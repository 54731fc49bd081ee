"""System checks for ``BATCHDISPATCH``, registered under the tag ``batchdispatch``.

========================  ==========================================================
``batchdispatch.E001``    ``BATCHDISPATCH`` is not a dict.
``batchdispatch.E002``    An alias's options are not a dict.
``batchdispatch.E003``    An alias has no ``URL``, or it is not an http(s) URL with a host.
``batchdispatch.E004``    A bad ``DELAY``, ``MAX_BATCH_SIZE``, ``MAX_QUEUE_SIZE``, ``EXIT_TIMEOUT`` or
                          ``MAX_BODY_BYTES``.
``batchdispatch.E005``    An unknown ``OVERFLOW`` policy, or ``"spill"`` without a ``SPOOL``.
``batchdispatch.E006``    ``HEADERS`` is not a mapping of str to str.
``batchdispatch.E007``    ``SECRET`` is not a valid secret (a non-empty str or bytes, a ``whsec_`` secret
                          in base64, or a list of them) for ``SIGNATURE``, or ``SIGNATURE`` is not
                          ``"standard"`` or ``"x-webhook"``.
``batchdispatch.E008``    ``SPOOL`` is not a path in an existing directory, or ``SPOOL_DURABLE`` not a bool.
``batchdispatch.W001``    An unknown option (a typo?); it is ignored.
========================  ==========================================================
"""

from __future__ import annotations

from typing import Any, List

from django.core import checks  # type: ignore[import-untyped]

from . import conf

#: The tag: ``manage.py check --tag batchdispatch``.
TAG = "batchdispatch"


def check_settings(app_configs: Any = None, **kwargs: Any) -> List[Any]:
    """Report every problem of the ``BATCHDISPATCH`` setting, without building anything."""
    found: List[Any] = []
    for problem in conf.problems():
        kind = checks.Error if problem.is_error else checks.Warning
        found.append(kind(problem.message, hint=problem.hint, id=problem.id))
    return found
