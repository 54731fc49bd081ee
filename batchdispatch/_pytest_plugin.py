"""The pytest plugin of batchdispatch: the ``receiver`` and ``recording_sink`` fixtures.

Installing batchdispatch registers this module with pytest through the
``pytest11`` entry point named ``batchdispatch`` (see ``setup.cfg``), so the
fixtures are there in any test session with no ``conftest.py`` code;
``pytest -p no:batchdispatch`` turns it off. A fixture of the same name in
a project's own ``conftest.py`` wins over these.

It is a module of its own, rather than part of :mod:`batchdispatch.testing`,
because it imports pytest, which batchdispatch does not require:
:mod:`batchdispatch.testing` hands these fixtures out lazily, importing this
module only when one is asked for.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from ._receiver import Receiver
from ._recording import RecordingSink

__all__ = ["receiver", "recording_sink"]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A started :class:`~batchdispatch.testing.Receiver` on 127.0.0.1, closed after the test.

    .. code-block:: python

        from batchdispatch import BackgroundDispatcher
        from batchdispatch.http import HttpSink


        def test_events_arrive(receiver):
            with BackgroundDispatcher(HttpSink(receiver.url), delay=0.05) as events:
                for n in range(3):
                    events.enqueue({"n": n})
            assert receiver.wait_for_items(3, timeout=5)
    """
    with Receiver() as started:
        yield started


@pytest.fixture
def recording_sink() -> RecordingSink[Any]:
    """A fresh :class:`~batchdispatch.testing.RecordingSink`."""
    return RecordingSink()
