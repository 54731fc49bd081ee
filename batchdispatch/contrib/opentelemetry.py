"""OpenTelemetry metrics of the dispatchers: :func:`instrument`.

Observable instruments on a meter named ``batchdispatch`` (the
``opentelemetry`` extra: ``pip install ".[opentelemetry]"`` from a
checkout; an SDK and an exporter of your choice do the rest), with the
meanings of the Prometheus collector's metrics and the attribute
``dispatcher`` = the dispatcher's name:

.. code-block:: python

    from batchdispatch.contrib.opentelemetry import instrument

    instrumentation = instrument()  # the global meter provider
    ...
    instrumentation.uninstrument()

Each collection calls each dispatcher's ``stats()`` once, on the thread
that collects: the callbacks of one collection share that read, so the
figures agree with each other, and nothing is counted on ``enqueue``.

OpenTelemetry has no observable histogram (a histogram is recorded as
values happen, and this module records nothing on the worker), so the
histograms of ``stats()`` are not exported as histograms: their sums go
out as the counters ``batchdispatch.batches.duration`` (seconds spent in
dispatch calls) and ``batchdispatch.batches.items`` (items given to
them), and their counts are ``batchdispatch.batches``; a rate of each
over a rate of ``batchdispatch.batches`` is the mean duration and size.
For quantiles, use :mod:`batchdispatch.contrib.prometheus`.
"""

from __future__ import annotations

import threading
import weakref
from typing import Callable, Iterable, List, Optional, Set

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

from .. import __version__
from .._deadlines import monotonic
from .._live import Dispatcher
from . import _metrics

__all__ = ["Instrumentation", "instrument"]

#: Seconds after which a callback reads the dispatchers again even within
#: what looks like one collection (one reader's callbacks run in a burst).
REREAD_AFTER = 1.0


class Instrumentation:
    """What :func:`instrument` returns; :meth:`uninstrument` undoes it.

    .. versionadded:: 0.2.0
    """

    def __init__(self, state: _State, dispatchers: Optional[List[Dispatcher]]) -> None:
        self._state = state
        self._dispatchers = dispatchers

    def uninstrument(self) -> None:
        """Stop reporting: from the next collection, the instruments observe nothing. Idempotent.

        The OpenTelemetry API cannot remove an instrument from its meter, so
        the instruments stay, silent, and :func:`instrument` may bring them
        back on the same meter provider.
        """
        self._state.stop(self)

    def __repr__(self) -> str:
        return f"<Instrumentation {'active' if self._state.active is self else 'stopped'}>"


class _State:
    """The instruments on one meter provider, the instrumentation they serve, and one read of the figures."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active: Optional[Instrumentation] = None
        self.figures: List[_metrics.Figures] = []
        self.served: Set[str] = set()  # metrics observed since the figures were read
        self.read_at = -float("inf")

    def start(self, dispatchers: Optional[List[Dispatcher]]) -> Instrumentation:
        with self.lock:
            if self.active is not None:
                raise RuntimeError(
                    "batchdispatch is instrumented on this meter provider already;"
                    " call uninstrument() on what instrument() returned first"
                )
            self.active = Instrumentation(self, dispatchers)
            self.figures, self.served, self.read_at = [], set(), -float("inf")
            return self.active

    def stop(self, instrumentation: Instrumentation) -> None:
        with self.lock:
            if self.active is instrumentation:
                self.active = None
                self.figures = []

    def observe(self, metric: _metrics.Metric) -> List[Observation]:
        """A callback's observations of *metric*, for every dispatcher name."""
        with self.lock:
            active = self.active
            if active is None:
                return []
            # One collection calls each callback once: a metric served
            # already means the next collection has begun.
            now = monotonic()
            if metric.source in self.served or now - self.read_at > REREAD_AFTER:
                self.figures = _metrics.read(active._dispatchers)
                self.served, self.read_at = set(), now
            self.served.add(metric.source)
            figures = self.figures
        observations = []
        for each in figures:
            if metric.keyed and not each.keyed:
                continue
            if metric.label:
                for value_label, value in sorted(each.labelled[metric.source].items()):
                    attributes = {"dispatcher": each.name, metric.label: value_label}
                    observations.append(Observation(value, attributes))
            else:
                observations.append(Observation(each.values[metric.source], {"dispatcher": each.name}))
        return observations


_states: weakref.WeakKeyDictionary[MeterProvider, _State] = weakref.WeakKeyDictionary()
_states_lock = threading.Lock()


def instrument(
    meter_provider: Optional[MeterProvider] = None, *, dispatchers: Optional[Iterable[Dispatcher]] = None
) -> Instrumentation:
    """Report the dispatchers' ``stats()`` through observable instruments.

    :param meter_provider: where to make the instruments (None: the global
        meter provider, ``opentelemetry.metrics.get_meter_provider()``).
    :param dispatchers: the dispatchers to report; None (the default)
        reports every dispatcher alive in the process at each collection.
    :returns: an :class:`Instrumentation`, whose ``uninstrument()`` stops
        the reports.
    :raises RuntimeError: if this meter provider is instrumented already
        (and not uninstrumented since).
    :raises TypeError: if *dispatchers* is not an iterable of dispatchers.

    The instruments (their units follow OpenTelemetry's conventions):

    * observable counters: ``batchdispatch.items.enqueued``,
      ``.dispatched``, ``.failed``, ``.dead_lettered``, ``.spilled``,
      ``.replayed`` and ``.retried`` (``{item}``),
      ``batchdispatch.items.dropped`` (``{item}``, attribute ``reason``),
      ``batchdispatch.spool.faults`` (``{fault}``, attribute ``kind``),
      ``batchdispatch.batches`` (``{batch}``),
      ``batchdispatch.batches.duration`` (``s``) and
      ``batchdispatch.batches.items`` (``{item}``);
    * observable up-down counters: ``batchdispatch.items.pending``
      (``{item}``) and ``batchdispatch.keys.pending`` (``{key}``,
      KeyedDispatcher only);
    * an observable gauge: ``batchdispatch.items.oldest_pending_age``
      (``s``, 0 when nothing is pending).

    .. code-block:: python

        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from batchdispatch.contrib.opentelemetry import instrument

        reader = InMemoryMetricReader()
        instrumentation = instrument(MeterProvider(metric_readers=[reader]))
        print(reader.get_metrics_data())
        instrumentation.uninstrument()

    .. versionadded:: 0.2.0
    """
    chosen = _metrics.check_dispatchers(dispatchers)
    provider = metrics.get_meter_provider() if meter_provider is None else meter_provider
    with _states_lock:
        state = _states.get(provider)
        if state is None:
            state = _states[provider] = _State()
            _make_instruments(provider.get_meter("batchdispatch", __version__), state)
    return state.start(chosen)


def _make_instruments(meter: Meter, state: _State) -> None:
    for metric in _metrics.METRICS:
        if not metric.otel:
            continue  # a histogram (see the module's notes)
        create: Callable[..., object]
        if metric.kind == "counter":
            create = meter.create_observable_counter
        elif metric.source == "oldest_pending_age":
            create = meter.create_observable_gauge  # not additive: an age summed over processes means nothing
        else:
            create = meter.create_observable_up_down_counter  # a level that adds up across processes
        create(metric.otel, callbacks=[_callback(state, metric)], unit=metric.unit, description=metric.doc)


def _callback(state: _State, metric: _metrics.Metric) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        return state.observe(metric)

    return observe
