"""Prometheus metrics of the dispatchers: :class:`DispatcherCollector`.

A custom collector for ``prometheus_client`` (the ``prometheus`` extra:
``pip install ".[prometheus]"`` from a checkout). Registered once, it
exposes every live dispatcher of the process
(:func:`batchdispatch.dispatchers`), each under the label
``dispatcher="<name>"``:

.. code-block:: python

    from prometheus_client import REGISTRY, start_http_server
    from batchdispatch.contrib.prometheus import DispatcherCollector

    REGISTRY.register(DispatcherCollector())
    start_http_server(9100)  # or serve prometheus_client.make_wsgi_app()

Every scrape calls each dispatcher's ``stats()`` once, on the scraping
thread: nothing is counted on ``enqueue`` for it, and nothing runs between
scrapes. The metrics and what they mean are listed in the docs' "Metrics"
page; the figures of dispatchers that share a name are added together
(the oldest pending age is their largest), so give each dispatcher a name
of its own. There are no per-key labels: a label per key would make one
series per webhook endpoint.

A custom collector reports the process it runs in. Under a server with
several worker processes (gunicorn, uWSGI), each worker has its own
dispatchers and serves its own figures; see the docs for the setup.
"""

from __future__ import annotations

import math
from typing import Iterable, List, Optional, Sequence

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .._live import Dispatcher
from . import _metrics

__all__ = ["DispatcherCollector"]


class DispatcherCollector(Collector):
    """A ``prometheus_client`` collector of the dispatchers' ``stats()``.

    :param dispatchers: the dispatchers to report; None (the default)
        reports every dispatcher alive in the process at each scrape, those
        made after the collector was registered included. Given dispatchers
        are kept alive by the collector.
    :raises TypeError: if *dispatchers* is not an iterable of
        :class:`~batchdispatch.BackgroundDispatcher` and
        :class:`~batchdispatch.KeyedDispatcher` objects.

    .. code-block:: python

        from prometheus_client import CollectorRegistry, generate_latest
        from batchdispatch import BackgroundDispatcher, KeyedDispatcher
        from batchdispatch.contrib.prometheus import DispatcherCollector

        events = BackgroundDispatcher(print, delay=0.5, name="events")
        webhooks = KeyedDispatcher(lambda key, batch: print(key, batch), delay=1.0, name="webhooks")
        registry = CollectorRegistry()
        registry.register(DispatcherCollector(dispatchers=[events, webhooks]))
        print(generate_latest(registry).decode())

    .. versionadded:: 0.2.0
    """

    def __init__(self, dispatchers: Optional[Iterable[Dispatcher]] = None) -> None:
        self._dispatchers = _metrics.check_dispatchers(dispatchers)

    def __repr__(self) -> str:
        if self._dispatchers is None:
            return "<DispatcherCollector of every live dispatcher>"
        return f"<DispatcherCollector of {len(self._dispatchers)} dispatchers>"

    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples: what a registry checks names against."""
        return self._families([])

    def collect(self) -> Iterable[Metric]:
        """The metric families with one sample set per dispatcher name, read now."""
        return self._families(_metrics.read(self._dispatchers))

    @staticmethod
    def _families(read: Sequence[_metrics.Figures]) -> List[Metric]:
        families: List[Metric] = []
        for metric in _metrics.METRICS:
            if not metric.prometheus:
                continue
            labels = ["dispatcher", metric.label] if metric.label else ["dispatcher"]
            unit = "seconds" if metric.prometheus.endswith("_seconds") else ""
            family: Metric
            if metric.kind == "histogram":
                histograms = HistogramMetricFamily(metric.prometheus, metric.doc, labels=labels, unit=unit)
                for figures in read:
                    histogram = figures.histograms[metric.source]
                    buckets = [(_le(bound), float(count)) for bound, count in histogram.cumulative()]
                    histograms.add_metric([figures.name], buckets, histogram.sum)
                family = histograms
            else:
                kind = CounterMetricFamily if metric.kind == "counter" else GaugeMetricFamily
                family = kind(metric.prometheus, metric.doc, labels=labels, unit=unit)
                for figures in read:
                    if metric.keyed and not figures.keyed:
                        continue
                    if metric.label:
                        for value_label, value in sorted(figures.labelled[metric.source].items()):
                            family.add_metric([figures.name, value_label], value)
                    else:
                        family.add_metric([figures.name], figures.values[metric.source])
            families.append(family)
        return families


def _le(bound: float) -> str:
    """A bucket's ``le`` label, as prometheus_client writes its own (``0.005``, ``10.0``, ``+Inf``)."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))
