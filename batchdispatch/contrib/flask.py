"""A Flask extension: one HTTP-shipping dispatcher per app, configured from ``app.config``.

.. code-block:: python

    from flask import Flask
    from batchdispatch.contrib.flask import BatchDispatch

    events = BatchDispatch()

    def create_app():
        app = Flask(__name__)
        app.config["BATCHDISPATCH_URL"] = "https://events.example.com/ingest"
        events.init_app(app)

        @app.post("/signup")
        def signup():
            events.enqueue({"event": "signup"})
            return "", 204

        return app

Nothing here starts a thread: the dispatcher starts its worker on the first
:meth:`~BatchDispatch.enqueue`, so an app built before a fork (``gunicorn
--preload``) is safe, and each worker process starts its own.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Union, cast

import click
from flask import Flask, current_app, has_app_context
from flask.cli import AppGroup

from .. import _validate
from .._dispatcher import BackgroundDispatcher
from .._stats import DispatcherStats
from ..http import (
    HttpSink,
    _check_headers,
    _check_max_body_bytes,
    _check_secret,
    _check_signature,
    _check_url,
)
from . import _options
from ._stats_lines import stats_lines

__all__ = ["CONFIG_DEFAULTS", "EXTENSION_KEY", "BatchDispatch"]

#: The key of the per-app state in ``app.extensions``.
EXTENSION_KEY = "batchdispatch"
#: The prefix of every configuration key.
PREFIX = "BATCHDISPATCH_"
#: Every configuration key (without the prefix) and its default; URL has none.
CONFIG_DEFAULTS: Mapping[str, Any] = _options.DEFAULTS
#: Overflow policies allowed here: "block" would stall request threads.
OVERFLOW_POLICIES = ("drop_newest", "drop_oldest", "raise", "spill")


@dataclasses.dataclass(frozen=True)
class _State:
    """What one app keeps in ``app.extensions["batchdispatch"]``."""

    extension: BatchDispatch
    dispatcher: BackgroundDispatcher[Any]
    sink: HttpSink
    exit_timeout: float


def _number(key: str, value: Any, *, allow_zero: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{key} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{key} must be {kind} number, got {value!r}")
    return float(value)


def _read_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """Check every ``BATCHDISPATCH_*`` key; each error names its key."""
    url = config[PREFIX + "URL"]
    if url is None or url == "":
        raise RuntimeError(f"{PREFIX}URL is required: the URL batches are POSTed to")
    overflow = config[PREFIX + "OVERFLOW"]
    if overflow not in OVERFLOW_POLICIES:
        choices = ", ".join(repr(p) for p in OVERFLOW_POLICIES)
        raise ValueError(f"{PREFIX}OVERFLOW must be one of {choices}, got {overflow!r}")
    spool = _options.check_spool(config[PREFIX + "SPOOL"], PREFIX + "SPOOL")
    _options.check_overflow_spool(overflow, spool, PREFIX + "OVERFLOW", PREFIX + "SPOOL")
    return {
        "url": _check_url(url, PREFIX + "URL"),
        "delay": _number(PREFIX + "DELAY", config[PREFIX + "DELAY"], allow_zero=False),
        "max_batch_size": _validate.count(PREFIX + "MAX_BATCH_SIZE", config[PREFIX + "MAX_BATCH_SIZE"]),
        "max_queue_size": _validate.count(PREFIX + "MAX_QUEUE_SIZE", config[PREFIX + "MAX_QUEUE_SIZE"]),
        "overflow": overflow,
        "headers": _check_headers(config[PREFIX + "HEADERS"], PREFIX + "HEADERS"),
        "secret": _check_secret(config[PREFIX + "SECRET"], PREFIX + "SECRET",
                                _options.signature_for_secret(config[PREFIX + "SIGNATURE"])),
        "signature": _check_signature(config[PREFIX + "SIGNATURE"], PREFIX + "SIGNATURE"),
        "max_body_bytes": _check_max_body_bytes(config[PREFIX + "MAX_BODY_BYTES"], PREFIX + "MAX_BODY_BYTES"),
        "exit_timeout": _number(PREFIX + "EXIT_TIMEOUT", config[PREFIX + "EXIT_TIMEOUT"], allow_zero=True),
        "spool": spool,
        "spool_durable": _options.check_spool_durable(
            config[PREFIX + "SPOOL_DURABLE"], PREFIX + "SPOOL_DURABLE",
        ),
    }


class BatchDispatch:
    """Ship items from a Flask app to ``BATCHDISPATCH_URL`` in batches, in the background.

    .. code-block:: python

        from flask import Flask
        from batchdispatch.contrib.flask import BatchDispatch

        app = Flask(__name__)
        app.config["BATCHDISPATCH_URL"] = "https://events.example.com/ingest"
        events = BatchDispatch(app)          # or BatchDispatch() + events.init_app(app)

        @app.post("/signup")
        def signup():
            events.enqueue({"event": "signup"})
            return "", 204

    :meth:`init_app` reads the configuration below, checks it (an error
    names the bad key) and builds, for that app, a
    :class:`~batchdispatch.BackgroundDispatcher` over an
    :class:`~batchdispatch.http.HttpSink`, kept in
    ``app.extensions["batchdispatch"]``. Later changes to ``app.config``
    are not seen. It also registers the ``flask batchdispatch stats`` and
    ``flask batchdispatch flush`` commands. It starts no thread: the worker
    starts on the first enqueue, in the process that enqueues.

    ================================  ===============  =============================================
    Key                               Default          Meaning
    ================================  ===============  =============================================
    ``BATCHDISPATCH_URL``             (required)       ``http://`` or ``https://`` URL to POST to
    ``BATCHDISPATCH_DELAY``           ``0.1``          seconds an item waits for company
    ``BATCHDISPATCH_MAX_BATCH_SIZE``  ``None``         largest batch (None: no limit)
    ``BATCHDISPATCH_MAX_QUEUE_SIZE``  ``100_000``      items held at most (None: no limit)
    ``BATCHDISPATCH_OVERFLOW``        ``drop_newest``  ``drop_newest``, ``drop_oldest``, ``raise`` or
                                                       ``spill`` (needs ``BATCHDISPATCH_SPOOL``)
    ``BATCHDISPATCH_HEADERS``         ``None``         extra request headers (str to str)
    ``BATCHDISPATCH_SECRET``          ``None``         sign every request (Standard Webhooks): a
                                                       ``whsec_`` secret, or a list of them
    ``BATCHDISPATCH_SIGNATURE``       ``standard``     ``x-webhook``: the headers of 0.1, for
                                                       receivers built on it
    ``BATCHDISPATCH_MAX_BODY_BYTES``  ``None``         largest request body in bytes (see
                                                       :doc:`/http`)
    ``BATCHDISPATCH_EXIT_TIMEOUT``    ``5.0``          seconds the exit flush waits at most
    ``BATCHDISPATCH_SPOOL``           ``None``         a spool file (:doc:`/spool`): what cannot be
                                                       delivered goes there, for the next start
    ``BATCHDISPATCH_SPOOL_DURABLE``   ``False``        write every item to the spool before
                                                       ``enqueue`` returns
    ================================  ===============  =============================================

    The ``"block"`` overflow policy is refused: it would stall request
    threads while the receiver is down.

    :param app: register on this app at once (see :meth:`init_app`).

    .. versionadded:: 0.2.0
    """

    def __init__(self, app: Optional[Flask] = None) -> None:
        self._app = app
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        bound = f" app={self._app.name!r}" if self._app is not None else ""
        return f"<BatchDispatch{bound}>"

    def init_app(self, app: Flask) -> None:
        """Configure *app*: check its config, build its dispatcher and register the CLI.

        :raises RuntimeError: if the app already has a BatchDispatch, or
            ``BATCHDISPATCH_URL`` is not set.
        :raises TypeError, ValueError: if a ``BATCHDISPATCH_*`` value is
            invalid; the message names the key.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"a BatchDispatch is already registered on the app {app.name!r}; "
                "call init_app once per app"
            )
        for key, default in CONFIG_DEFAULTS.items():
            app.config.setdefault(PREFIX + key, default)
        options = _read_config(app.config)
        dispatcher, sink = _options.build(f"flask:{app.name}", **options)
        app.extensions[EXTENSION_KEY] = _State(self, dispatcher, sink, options["exit_timeout"])
        app.cli.add_command(_make_cli(app))

    # -- finding the app -------------------------------------------------------

    def _state(self) -> _State:
        app: Optional[Flask] = None
        if has_app_context():
            # One look through the proxy, not one per attribute: this runs on every enqueue.
            current: Flask = cast(Any, current_app)._get_current_object()
            found: Optional[_State] = current.extensions.get(EXTENSION_KEY)
            if found is not None:
                return found
        if self._app is not None:
            app = self._app
        elif has_app_context():
            app = current_app
        if app is None:
            raise RuntimeError(
                "working outside of an application context: use BatchDispatch inside a request, "
                "a CLI command or `with app.app_context():`, or create it as BatchDispatch(app)"
            )
        state: Optional[_State] = app.extensions.get(EXTENSION_KEY)
        if state is None:
            raise RuntimeError(f"BatchDispatch is not registered on the app {app.name!r}; call init_app(app)")
        return state

    # -- the dispatcher's face -------------------------------------------------

    @property
    def dispatcher(self) -> BackgroundDispatcher[Any]:
        """The current app's :class:`~batchdispatch.BackgroundDispatcher`."""
        return self._state().dispatcher

    def enqueue(self, item: Any) -> bool:
        """Queue *item* (anything JSON can encode) for the current app's URL; returns at once.

        :returns: True if accepted, False if dropped (queue full, or shut
            down); drops are counted in :meth:`stats`.
        """
        return self._state().dispatcher.enqueue(item)

    def flush(self, timeout: Optional[float] = 5.0) -> bool:
        """Deliver what the current app has queued; False if *timeout* passed first."""
        return self._state().dispatcher.flush(timeout)

    def stats(self) -> DispatcherStats:
        """The current app's dispatcher counters."""
        return self._state().dispatcher.stats()

    def shutdown(self, timeout: Optional[float] = 5.0) -> bool:
        """Flush and stop the current app's dispatcher, then close its HTTP session (and spool).

        Later :meth:`enqueue` calls return False. If the timeout passes
        first, the session stays open for the batches still in flight
        (the exit hook waits for them). Idempotent.

        :returns: True if everything was delivered and the worker stopped.
        """
        state = self._state()
        done = state.dispatcher.shutdown(timeout)
        if done:
            _options.close(state.dispatcher, state.sink)
        return done


def _make_cli(app: Flask) -> click.Group:
    """The ``flask batchdispatch`` command group for *app*."""
    group = AppGroup("batchdispatch", help="Inspect and flush the batchdispatch dispatcher of this app.")

    def state() -> _State:
        result: _State = app.extensions[EXTENSION_KEY]
        return result

    @group.command("stats")
    def stats_command() -> None:
        """Print the dispatcher's counters, one per line."""
        for line in stats_lines(state().dispatcher.stats()):
            click.echo(line)

    @group.command("flush")
    @click.option(
        "--timeout", type=click.FloatRange(min=0), default=None,
        help="Seconds to wait at most (default: BATCHDISPATCH_EXIT_TIMEOUT).",
    )
    def flush_command(timeout: Union[float, None]) -> None:
        """Deliver what is queued in this process; exit 1 if the timeout passed first."""
        current = state()
        wait = current.exit_timeout if timeout is None else timeout
        if current.dispatcher.flush(wait):
            click.echo(f"flushed: {current.dispatcher.stats().dispatched} items delivered in all")
            return
        pending = current.dispatcher.stats().pending
        click.echo(f"flush timed out after {wait} s with {pending} items pending", err=True)
        raise click.exceptions.Exit(1)

    return group
