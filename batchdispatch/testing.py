"""Test helpers for code that uses batchdispatch: a real HTTP receiver and recording sinks.

Use them to test your own integration, as the project tests itself:

* :class:`Receiver` is a real HTTP server on 127.0.0.1 that records every
  request, answers as you script it (status, headers, a delay) and checks
  webhook signatures. Point an :class:`~batchdispatch.http.HttpSink`, a
  Flask or Django app, or any HTTP client at its :attr:`~Receiver.url`.
* :class:`RecordingSink` is a dispatch callable for
  :class:`~batchdispatch.BackgroundDispatcher` that keeps the batches it
  was given and fails when told to; :class:`KeyedRecordingSink` is the same
  for :class:`~batchdispatch.KeyedDispatcher`'s ``deliver(key, batch)``.
* The pytest fixtures ``receiver`` (a started :class:`Receiver`, closed
  after the test) and ``recording_sink`` (a fresh :class:`RecordingSink`)
  come with the package: installing batchdispatch registers them through
  a ``pytest11`` entry point, so no ``conftest.py`` is needed. They can
  also be imported from here (``from batchdispatch.testing import
  receiver``). pytest is imported only then: this module itself needs
  nothing but the standard library, and the fixtures are left out of
  ``__all__`` so that ``from batchdispatch.testing import *`` never
  imports pytest.

.. code-block:: python

    from batchdispatch import BackgroundDispatcher
    from batchdispatch.testing import RecordingSink

    sink = RecordingSink()
    dispatcher = BackgroundDispatcher(sink, delay=0.01)
    dispatcher.enqueue({"event": "signup"})
    assert dispatcher.flush(timeout=5)       # a sync point: no sleep
    assert sink.items == [{"event": "signup"}]
    dispatcher.shutdown(timeout=5)

Assert after a sync point (``flush()``, ``shutdown()``,
:meth:`Receiver.wait_for_items`, :meth:`RecordingSink.wait_for_items`),
never after a bare sleep.

.. versionadded:: 0.2.0
"""


from __future__ import annotations

from typing import Any

from ._receiver import ReceivedRequest, Receiver, Response
from ._recording import KeyedRecordingSink, RecordingSink

__all__ = [
    "KeyedRecordingSink",
    "ReceivedRequest",
    "Receiver",
    "RecordingSink",
    "Response",
]


def __getattr__(name: str) -> Any:
    # The fixtures live in the pytest plugin, imported only when asked for,
    # so that this module never imports pytest by itself.
    if name in ("receiver", "recording_sink"):
        from . import _pytest_plugin

        return getattr(_pytest_plugin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
