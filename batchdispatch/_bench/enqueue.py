"""The ``enqueue`` section: what an enqueue costs, next to the alternatives.

It runs the four designs of :mod:`.designs` (and (p), (d) scraped by
Prometheus, if prometheus_client is installed) and the keyed ones of
:mod:`.keyed`, with 1 and with 4 producer threads, in interleaved rounds so
that a slow patch of the machine hits every design alike, and keeps the
best figure of each; then parallel delivery across keys, and the idle
wake-ups of :mod:`.idle`. It reports the wall time per enqueue and the
end-to-end rate of each design, and their ratios.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, TextIO, Tuple

from .designs import DESIGNS, Scraped, run_once, scraped_design
from .harness import DELAY, THREAD_COUNTS
from .idle import measure_idle
from .keyed import (
    KEYED_BATCH,
    KEYED_DELAY,
    KEYED_DESIGNS,
    KEYED_WORKERS,
    KEYS,
    PARALLEL_BATCH,
    PARALLEL_KEYS,
    PARALLEL_SLEEP,
    PARALLEL_WORKERS,
    Keyed,
    LockedDict,
    run_keyed,
)
from .options import BenchOptions
from .output import ratio, status, table


@dataclasses.dataclass
class _Results:
    """What the section measured, the best of each figure over the rounds."""

    #: Best seconds per enqueue, by (design key, producer threads).
    per_enqueue: Dict[Tuple[str, int], float] = dataclasses.field(default_factory=dict)
    #: Best end-to-end items/s, by (design key, producer threads).
    rate: Dict[Tuple[str, int], float] = dataclasses.field(default_factory=dict)
    wakeups: int = 0
    timed_waits: int = 0
    #: Keyed designs over KEYS keys: best seconds per enqueue and items/s, by (label, threads).
    keyed_per_enqueue: Dict[Tuple[str, int], float] = dataclasses.field(default_factory=dict)
    keyed_rate: Dict[Tuple[str, int], float] = dataclasses.field(default_factory=dict)
    #: Parallel delivery: best items/s by worker count.
    parallel: Dict[int, float] = dataclasses.field(default_factory=dict)

    def add(self, key: Tuple[str, int], seconds: float, items_per_s: Optional[float]) -> None:
        self.per_enqueue[key] = min(seconds, self.per_enqueue.get(key, seconds))
        if items_per_s is not None:
            self.rate[key] = max(items_per_s, self.rate.get(key, items_per_s))


def measure(options: BenchOptions, err: TextIO) -> _Results:
    """Run every design, plain and keyed, then parallel delivery and the idle check."""
    results = _Results()
    scraped = scraped_design()
    designs = [*DESIGNS, scraped] if scraped is not None else DESIGNS
    for round_no in range(1, options.repeat + 1):
        for threads in THREAD_COUNTS:
            for design in designs:
                status(err, f"bench: round {round_no} of {options.repeat}, {design.label}, {threads} thr")
                results.add((design.key, threads), *run_once(design, threads, options.items))
            for keyed in KEYED_DESIGNS:
                status(err, f"bench: round {round_no} of {options.repeat}, {keyed.label}, {threads} thr")
                per, rate = run_keyed(keyed, threads, options.items, KEYS)
                entry = (keyed.label, threads)
                results.keyed_per_enqueue[entry] = min(per, results.keyed_per_enqueue.get(entry, per))
                results.keyed_rate[entry] = max(rate, results.keyed_rate.get(entry, rate))
    parallel_items = max(PARALLEL_KEYS * PARALLEL_BATCH, options.items // 50)
    for workers in PARALLEL_WORKERS:
        status(err, f"bench: parallel delivery with {workers} workers")
        _, rate = run_keyed(
            Keyed, 1, parallel_items, PARALLEL_KEYS, workers, PARALLEL_SLEEP, PARALLEL_BATCH, DELAY
        )
        results.parallel[workers] = rate
    status(err, f"bench: idle wake-ups over {options.idle:g} s")
    results.wakeups, results.timed_waits = measure_idle(options.idle)
    return results


def figures(results: _Results) -> Dict[str, Any]:
    """The plain designs' figures, for ``bench --json``: ns per enqueue and items/s, by thread count."""
    return {
        "designs": [
            {
                "key": design.key,
                "label": design.label,
                "ns_per_enqueue": {str(t): results.per_enqueue[design.key, t] * 1e9 for t in THREAD_COUNTS},
                "items_per_s": {
                    str(t): results.rate[design.key, t]
                    for t in THREAD_COUNTS if (design.key, t) in results.rate
                },
            }
            for design in DESIGNS
        ],
        "idle_wakeups": results.wakeups,
    }


def report(options: BenchOptions, results: _Results) -> List[str]:
    """The section's lines: the plain designs' table, then the keyed one's."""
    header = ["design"]
    for threads in THREAD_COUNTS:
        header += [f"ns/enq {threads} thr", "vs (b)"]
    for threads in THREAD_COUNTS:
        header += [f"e2e/s {threads} thr", "vs (c)"]
    rows = []
    for design in DESIGNS:
        cells = [design.label]
        for threads in THREAD_COUNTS:
            ns = results.per_enqueue[design.key, threads] * 1e9
            cells += [f"{ns:,.1f}", ratio(ns, results.per_enqueue["b", threads] * 1e9)]
        for threads in THREAD_COUNTS:
            rate = results.rate.get((design.key, threads))
            cells += ["-" if rate is None else f"{rate:,.0f}", ratio(rate, results.rate.get(("c", threads)))]
        rows.append(cells)
    d_over_c = ", ".join(
        f"{ratio(results.rate.get(('d', t)), results.rate.get(('c', t)))}"
        f" with {t} producer thread{'s' if t > 1 else ''}"
        for t in THREAD_COUNTS
    )
    return [
        *table(header, rows),
        "",
        "ns/enq: wall time from barrier release to the last producer's join, per item",
        "        (consumer threads run meanwhile and share the GIL); lower is better.",
        "e2e/s:  items per second from barrier release until the sink had all of them;",
        "        higher is better. (a) has no consumer.",
        "vs (b), vs (c): ratio to that design's figure from this same run.",
        "",
        f"end-to-end (d)/(c): {d_over_c}",
        f"idle wake-ups in {options.idle:g} s: {results.wakeups}"
        f" (waits with a timeout: {results.timed_waits})",
        "",
        *_scraped_report(results),
        *_keyed_report(results),
    ]


def _scraped_report(results: _Results) -> List[str]:
    """(p) next to (d): what a Prometheus scrape on another thread costs an enqueue."""
    if ("p", THREAD_COUNTS[0]) not in results.per_enqueue:
        return ["prometheus: not measured (prometheus_client is not installed)", ""]
    cells = []
    for threads in THREAD_COUNTS:
        ns, base = results.per_enqueue["p", threads] * 1e9, results.per_enqueue["d", threads] * 1e9
        cells.append(f"{ns:,.1f} ns/enq vs {base:,.1f} for (d) with {threads} thr, {ratio(ns, base)}")
    return [
        f"prometheus: (p) is (d) with DispatcherCollector registered and scraped every"
        f" {Scraped.SCRAPE_INTERVAL * 1000:g} ms on another thread ({Scraped.scrapes:,} scrapes in all):",
        *(f"  {cell}" for cell in cells),
        "",
    ]


def _keyed_report(results: _Results) -> List[str]:
    header = ["keyed design"]
    for threads in THREAD_COUNTS:
        header += [f"ns/enq {threads} thr", "vs (b)", "vs (b) per key"]
    for threads in THREAD_COUNTS:
        header += [f"e2e/s {threads} thr"]
    rows = []
    for keyed in KEYED_DESIGNS:
        cells = [keyed.label]
        for threads in THREAD_COUNTS:
            ns = results.keyed_per_enqueue[keyed.label, threads] * 1e9
            floor = results.keyed_per_enqueue[LockedDict.label, threads] * 1e9
            cells += [f"{ns:,.1f}", ratio(ns, results.per_enqueue["b", threads] * 1e9), ratio(ns, floor)]
        for threads in THREAD_COUNTS:
            cells += [f"{results.keyed_rate[keyed.label, threads]:,.0f}"]
        rows.append(cells)
    slow, fast = (results.parallel[w] for w in PARALLEL_WORKERS)
    return [
        f"keyed: {KEYS:,} keys in turn; (e) with delay={KEYED_DELAY:g}, max_batch_size={KEYED_BATCH},"
        f" max_concurrent_batches={KEYED_WORKERS};",
        "e2e/s here flushes once the producers are done.",
        "",
        *table(header, rows),
        "",
        f"parallel delivery: {PARALLEL_KEYS} keys, batches of {PARALLEL_BATCH},"
        f" deliver sleeps {PARALLEL_SLEEP * 1000:g} ms per batch:",
        *(
            f"  max_concurrent_batches={w}: {results.parallel[w]:,.0f} items/s"
            for w in PARALLEL_WORKERS
        ),
        f"  speed-up: {ratio(fast, slow)}",
    ]
