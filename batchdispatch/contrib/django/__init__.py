"""batchdispatch for Django: ``dispatchers["alias"].enqueue(item)``, configured by ``BATCHDISPATCH``.

.. code-block:: python

    # settings.py
    INSTALLED_APPS = [..., "batchdispatch.contrib.django"]
    BATCHDISPATCH = {"default": {"URL": "https://events.example.com/ingest", "DELAY": 0.5}}

    # anywhere
    from batchdispatch.contrib.django import dispatchers

    dispatchers["default"].enqueue({"event": "signup"})

Importing this package reads no setting and starts nothing.
"""

from __future__ import annotations

from .handler import DispatcherHandler, UnknownAliasError, dispatchers

__all__ = ["DispatcherHandler", "UnknownAliasError", "dispatchers"]
