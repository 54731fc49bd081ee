"""``batchdispatch.dispatchers()``: the live dispatchers of this process."""

from __future__ import annotations

import gc
import os
import weakref
from typing import Any

import pytest

import batchdispatch

from .conftest import KeyedRecorder, Recorder


def test_it_lists_both_kinds_sorted_by_name_shut_down_ones_included(make, make_keyed) -> None:
    zebra = make(Recorder(), name="live-zebra")
    alpha = make_keyed(KeyedRecorder(), name="live-alpha")
    middle = make(Recorder(), name="live-middle")
    assert middle.shutdown(timeout=10)
    mine = [d for d in batchdispatch.dispatchers() if d.name.startswith("live-")]
    assert mine == [alpha, middle, zebra]
    names = [d.name for d in batchdispatch.dispatchers()]
    assert names == sorted(names)


def test_it_keeps_no_dispatcher_alive() -> None:
    dispatcher = batchdispatch.BackgroundDispatcher(Recorder(), name="live-gone")
    dispatcher.enqueue(1)
    assert dispatcher.shutdown(timeout=10)
    ref = weakref.ref(dispatcher)
    assert ref() in batchdispatch.dispatchers()
    del dispatcher
    gc.collect()
    assert ref() is None
    assert "live-gone" not in [d.name for d in batchdispatch.dispatchers()]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_lists_its_own_fresh_copies(make) -> None:
    from .test_fork import collect, fork

    parent = make(Recorder(), delay=60, name="live-forked")
    parent.enqueue("a")

    def child() -> Any:
        listed = [d for d in batchdispatch.dispatchers() if d.name == "live-forked"]
        stats = listed[0].stats()
        return [len(listed), listed[0] is parent, stats.pending, stats.oldest_pending_age]

    assert collect(fork(child)) == [1, True, 0, None]  # the same object, reset in the child
    assert parent.stats().pending == 1  # the parent keeps its items
