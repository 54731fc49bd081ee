"""Processes that cannot run a worker thread: deciding, once, where batches are delivered.

uWSGI before 2.0.27 without ``--enable-threads`` keeps the GIL between
requests, and a uWSGI master forks its workers from C, past
:func:`os.register_at_fork`. :func:`threadless` tells the engine, at a
dispatcher's first enqueue (never on the hot path), whether this process
delivers on the callers' threads instead, and why; :func:`warn` says so
once per process. The environment variable ``BATCHDISPATCH_INLINE``
overrides the guess. Leaf module: it imports nothing of batchdispatch.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Optional

log = logging.getLogger("batchdispatch")

#: The environment variable that says where batches are delivered: ``1`` (or
#: ``true``, ``yes``, ``on``) on the threads that enqueue, with no worker
#: thread; ``0`` (or ``false``, ``no``, ``off``) on worker threads, even
#: under a uWSGI without threads. Unset or anything else: worker threads,
#: unless uWSGI runs this process without Python threads. Read when a
#: dispatcher starts (its first enqueue).
INLINE_ENV = "BATCHDISPATCH_INLINE"

_uwsgi_threadless: Optional[bool] = None  # found once per process
_warned_pid = 0  # the process that gave the uWSGI warning (uWSGI forks in C, past any fork hook)


def threadless() -> Optional[str]:
    """Why this process delivers on callers' threads, or None (it does not).

    ``"env"`` (the environment says so), ``"uwsgi"`` (a uWSGI without
    threads: warned about) or ``"uwsgi-master"`` (a uWSGI process about to
    fork its workers: see :func:`_uwsgi_master`).
    """
    choice = os.environ.get(INLINE_ENV, "").strip().lower()
    if choice in ("1", "true", "yes", "on"):
        return "env"
    if choice in ("0", "false", "no", "off"):
        return None
    global _uwsgi_threadless
    if _uwsgi_threadless is None:
        _uwsgi_threadless = _uwsgi_without_threads()
    if _uwsgi_threadless:
        return "uwsgi"
    return "uwsgi-master" if _uwsgi_master() else None


def _uwsgi_master() -> bool:
    """Whether this is a uWSGI process that has not become a worker yet.

    Not cached: the workers are forks of it. uWSGI loads the app there
    (unless ``--lazy-apps``) and then forks its workers from C, past
    :func:`os.register_at_fork`; a thread started there could hold the GIL
    at the fork, and every worker would wait for it forever. So that
    process starts no thread and delivers each item as it is enqueued: its
    exit runs no atexit hooks, so nothing may wait there.
    """
    uwsgi = sys.modules.get("uwsgi")  # see _uwsgi_without_threads
    worker_id = getattr(uwsgi, "worker_id", None)
    return callable(worker_id) and worker_id() == 0


def _uwsgi_without_threads() -> bool:
    """Whether this process is a uWSGI one whose Python threads do not run.

    Before uWSGI 2.0.27, the Python plugin enables threads only with
    ``--enable-threads`` or ``--threads``: otherwise a thread the app starts
    gets the GIL only while a request runs Python code (the worker holds it
    while it waits for the next request), so a worker thread delivers late,
    or at exit. The ``uwsgi`` module, importable only inside uWSGI, says so
    in ``has_threads``; ``opt`` (the options, as str keys) is the fallback.
    """
    # uWSGI registers its module before it loads the app. Looked up, never
    # imported: this runs under the engine lock at a first enqueue, and a
    # fork while another thread sat in an import would leave the child's
    # import lock held for ever (found by the fork storm test).
    uwsgi = sys.modules.get("uwsgi")
    if uwsgi is None:
        return False
    has_threads = getattr(uwsgi, "has_threads", None)
    if has_threads is not None:
        return not has_threads
    opt = getattr(uwsgi, "opt", None)
    if not isinstance(opt, dict):
        return False  # some other module called uwsgi
    return not any(name in opt or name.encode() in opt for name in ("enable-threads", "threads"))


def warn() -> None:
    """Warn, once per process, that uWSGI runs it without threads. Lock not held."""
    global _warned_pid
    pid = os.getpid()
    if _warned_pid == pid:
        return
    _warned_pid = pid
    message = (
        f"batchdispatch: uWSGI runs this process (pid {pid}) without Python threads, so"
        " dispatchers deliver due batches on the threads that enqueue, adding the delivery"
        " time to those requests. Run uWSGI with --enable-threads (or --threads N), and"
        " with --lazy-apps if the app is loaded before the fork. Set"
        f" {INLINE_ENV}=1 to keep this mode without this warning."
    )
    try:
        warnings.warn(message, RuntimeWarning, stacklevel=4)  # at the caller of enqueue
    except Exception:  # noqa: BLE001 - a filter made it an error: enqueue must not raise
        log.warning("%s", message)
