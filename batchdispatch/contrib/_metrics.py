"""What the metrics integrations share: the metrics, their meanings, and one read of them.

:data:`METRICS` lists every metric with its Prometheus name, its
OpenTelemetry name and unit, and what it means, so that
:mod:`.prometheus` and :mod:`.opentelemetry` export the same figures
under the same descriptions. :func:`read` takes one ``stats()`` snapshot
of each dispatcher and adds up the figures of dispatchers that share a
name: the ``dispatcher`` label is the name, and two series with one label
would be one series counted twice.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .._dispatcher import BackgroundDispatcher
from .._keyed import KeyedDispatcher
from .._live import Dispatcher, dispatchers
from .._stats import DispatcherStats, Histogram, KeyedStats

#: Drop reasons reported at 0 before the first drop, so that a rate or an
#: alert over them has a series from the start.
DROP_REASONS: Tuple[str, ...] = ("queue_full", "closed", "exit", "worker_died")


@dataclasses.dataclass(frozen=True)
class Metric:
    """One exported figure."""

    #: Where it comes from: a ``DispatcherStats`` field, or one of the
    #: derived keys of :func:`read` (``batch_seconds_sum``, ...).
    source: str
    #: ``"counter"``, ``"gauge"`` (a level that goes up and down), or ``"histogram"``.
    kind: str
    #: The Prometheus name, without the ``_total`` a counter gets.
    prometheus: str
    #: The OpenTelemetry instrument name, or "" for none.
    otel: str
    #: The OpenTelemetry unit (UCUM, with ``{item}`` style annotations).
    unit: str
    #: What it means: the HELP line and the instrument's description.
    doc: str
    #: A second label, for a figure broken down (``reason``, ``kind``), or None.
    label: Optional[str] = None
    #: Whether only KeyedDispatcher has it.
    keyed: bool = False


METRICS: Tuple[Metric, ...] = (
    Metric("enqueued", "counter", "batchdispatch_items_enqueued", "batchdispatch.items.enqueued", "{item}",
           "Items accepted by enqueue."),
    Metric("dispatched", "counter", "batchdispatch_items_dispatched", "batchdispatch.items.dispatched",
           "{item}", "Items delivered: dispatch returned, or they were not among a PartialFailure's."),
    Metric("failed", "counter", "batchdispatch_items_failed", "batchdispatch.items.failed", "{item}",
           "Items given up after their last attempt failed."),
    Metric("dropped_by_reason", "counter", "batchdispatch_items_dropped", "batchdispatch.items.dropped",
           "{item}", "Items dropped, by reason (queue_full, closed, exit, worker_died).", label="reason"),
    Metric("dead_lettered", "counter", "batchdispatch_items_dead_lettered",
           "batchdispatch.items.dead_lettered", "{item}",
           "Of the failed items, those kept in the spool's dead letters."),
    Metric("spilled", "counter", "batchdispatch_items_spilled", "batchdispatch.items.spilled", "{item}",
           "Items written to the spool instead of being dropped or given up."),
    Metric("replayed", "counter", "batchdispatch_items_replayed", "batchdispatch.items.replayed", "{item}",
           "Items taken back from the spool to be delivered again."),
    Metric("batches", "counter", "batchdispatch_batches", "batchdispatch.batches", "{batch}",
           "Calls to dispatch, successful or not, retries included."),
    Metric("retried", "counter", "batchdispatch_retries", "batchdispatch.items.retried", "{item}",
           "Items scheduled for another attempt (each retry counts its items)."),
    Metric("spool_faults", "counter", "batchdispatch_spool_faults", "batchdispatch.spool.faults", "{fault}",
           "Spool operations that failed, by kind; the dispatcher went on in memory.", label="kind"),
    Metric("pending", "gauge", "batchdispatch_items_pending", "batchdispatch.items.pending", "{item}",
           "Items accepted and not yet delivered or given up"
           " (queued, in dispatch, or waiting to be retried)."),
    Metric("oldest_pending_age", "gauge", "batchdispatch_oldest_pending_age_seconds",
           "batchdispatch.items.oldest_pending_age", "s",
           "Seconds the oldest pending item has waited; 0 when nothing is pending."),
    Metric("keys_with_pending", "gauge", "batchdispatch_keys_pending", "batchdispatch.keys.pending", "{key}",
           "Keys with pending items (KeyedDispatcher).", keyed=True),
    Metric("batch_seconds", "histogram", "batchdispatch_batch_duration_seconds", "", "s",
           "Seconds each dispatch call took, retries included."),
    Metric("batch_sizes", "histogram", "batchdispatch_batch_size", "", "{item}",
           "Items given to each dispatch call, retries included."),
    # OpenTelemetry has no observable histogram: the histograms' sums go
    # out as counters (their counts are batchdispatch.batches).
    Metric("batch_seconds_sum", "counter", "", "batchdispatch.batches.duration", "s",
           "Seconds spent in dispatch calls, added up (the sum of batchdispatch_batch_duration_seconds)."),
    Metric("batch_sizes_sum", "counter", "", "batchdispatch.batches.items", "{item}",
           "Items given to dispatch calls, retries included, added up"
           " (the sum of batchdispatch_batch_size)."),
)


@dataclasses.dataclass
class Figures:
    """The figures of one dispatcher name: those of every dispatcher with that name, added up."""

    name: str
    #: By ``Metric.source``, for the figures without a second label.
    values: Dict[str, float] = dataclasses.field(default_factory=dict)
    #: By ``Metric.source``: label value -> figure.
    labelled: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)
    #: By ``Metric.source``.
    histograms: Dict[str, Histogram] = dataclasses.field(default_factory=dict)
    #: Whether one of them is a KeyedDispatcher.
    keyed: bool = False

    def add(self, stats: DispatcherStats) -> None:
        values = self.values
        for metric in METRICS:
            if metric.kind == "histogram" or metric.label or metric.keyed:
                continue
            if metric.source == "oldest_pending_age":
                age = stats.oldest_pending_age or 0.0
                values[metric.source] = max(values.get(metric.source, 0.0), age)
            elif metric.source.endswith("_sum"):
                histogram: Histogram = getattr(stats, metric.source[: -len("_sum")])
                values[metric.source] = values.get(metric.source, 0) + histogram.sum
            else:
                values[metric.source] = values.get(metric.source, 0) + getattr(stats, metric.source)
        drops = self.labelled.setdefault("dropped_by_reason", dict.fromkeys(DROP_REASONS, 0))
        for reason, count in stats.dropped_by_reason.items():
            drops[reason] = drops.get(reason, 0) + count
        faults = self.labelled.setdefault("spool_faults", {})
        for kind, count in stats.spool_faults.items():
            faults[kind] = faults.get(kind, 0) + count
        if isinstance(stats, KeyedStats):
            self.keyed = True
            values["keys_with_pending"] = values.get("keys_with_pending", 0) + stats.keys_with_pending
        for source in ("batch_seconds", "batch_sizes"):
            mine: Histogram = getattr(stats, source)
            seen = self.histograms.get(source)
            self.histograms[source] = mine if seen is None else add_histograms(seen, mine)


def add_histograms(one: Histogram, other: Histogram) -> Histogram:
    """Two snapshots with the same bounds, bucket by bucket."""
    if one.bounds != other.bounds:
        raise ValueError(f"histograms with other bounds cannot be added: {one.bounds} and {other.bounds}")
    counts = tuple(a + b for a, b in zip(one.counts, other.counts))
    return Histogram(one.bounds, counts, one.sum + other.sum, one.count + other.count)


def check_dispatchers(given: Optional[Iterable[Dispatcher]]) -> Optional[List[Dispatcher]]:
    """The ``dispatchers=`` argument, checked: None (every live one), or a list of dispatchers."""
    if given is None:
        return None
    if isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
        raise TypeError(f"dispatchers must be an iterable of dispatchers or None, got {type(given).__name__}")
    found = list(given)
    for each in found:
        if not isinstance(each, (BackgroundDispatcher, KeyedDispatcher)):
            raise TypeError(
                "dispatchers must hold BackgroundDispatcher or KeyedDispatcher objects,"
                f" got {type(each).__name__}"
            )
    return found


def read(chosen: Optional[Sequence[Dispatcher]]) -> List[Figures]:
    """One ``stats()`` of each dispatcher (*chosen*, or every live one), added up by name, sorted."""
    by_name: Dict[str, Figures] = {}
    for dispatcher in dispatchers() if chosen is None else chosen:
        stats = dispatcher.stats()
        figures = by_name.get(stats.name)
        if figures is None:
            figures = by_name[stats.name] = Figures(stats.name)
        figures.add(stats)
    return [by_name[name] for name in sorted(by_name)]
