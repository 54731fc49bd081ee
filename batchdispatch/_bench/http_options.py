"""The ``http`` section's last part: what HttpSink's options of issue 15 cost, every batch under the limit.

Four sinks (:data:`VARIANTS`): HttpSink with its defaults, with
*max_body_bytes* of 1 MiB (far above every batch sent), with a *secret*
(Standard Webhooks signing, the default scheme), and with both. Each is
measured three ways:

* items per second as (h) is (:func:`.http._batched_posts`), batches of 100;
* the worker's CPU per event as the worker CPU rows are
  (:func:`.http._worker_cpu`), json_serializer, batches of 100 and 1,000;
* what the sink does per batch before the POST, with no network: serialize
  the batch, plan its bodies, build the headers and the signature (the
  sink's own functions, timed as :mod:`timeit` does).

The variants take turns, round after round, each round starting one
further along, so that a busy moment of the machine weighs on each alike
and their ratios to the defaults come from the same run. Each figure is the
best of its rounds. The first two go through a Receiver on 127.0.0.1 in
this process and move by tens of percent from one run to the next on a
shared machine; the third has no network, and resolves a few microseconds.
The receiver does not check signatures: its work is the same for every
variant, and only the sink's differs.
"""

from __future__ import annotations

import base64
import dataclasses
import timeit
from typing import Any, Callable, Dict, List, Mapping, TextIO, Tuple

from .harness import BenchError
from .http import CPU_BATCHES, HTTP_BATCH, _batched_posts, _worker_cpu, event
from .options import BenchOptions
from .output import ratio, status, table

#: The *max_body_bytes* of the variants that set one: CloudWatch's limit, and
#: far above the largest batch measured (1,000 events are about 120 kB).
MAX_BODY_BYTES = 1024 * 1024
#: The key the signing variants sign with: 32 bytes, written as Standard Webhooks writes a secret.
SECRET = "whsec_" + base64.b64encode(b"batchdispatch bench signing key!").decode("ascii")
#: Events serialized per timing of the work before the POST (30 batches of 100, 3 of 1,000): a
#: few milliseconds, short enough that some timings are not cut by another process on a busy machine.
PREPARE_EVENTS = 3_000
#: Rounds of that timing per ``--repeat``: each is cheap, and only the best of them counts.
PREPARE_ROUNDS = 20


@dataclasses.dataclass(frozen=True)
class Variant:
    """An HttpSink as an application would build it: *options* are its keyword arguments."""

    label: str
    options: Mapping[str, Any]

    @property
    def signed(self) -> bool:
        return "secret" in self.options


#: The defaults first: the other rows' ratios are to them.
VARIANTS = (
    Variant("defaults", {}),
    Variant("max_body_bytes=1 MiB", {"max_body_bytes": MAX_BODY_BYTES}),
    Variant("secret (Standard Webhooks)", {"secret": SECRET}),
    Variant("secret + max_body_bytes=1 MiB", {"secret": SECRET, "max_body_bytes": MAX_BODY_BYTES}),
)


@dataclasses.dataclass(frozen=True)
class VariantFigures:
    """One variant's best figures; seconds are per event (*cpu*) or per batch (*prepare*), by batch size."""

    variant: Variant
    items_per_s: float
    cpu: Dict[int, float]
    prepare: Dict[int, float]


@dataclasses.dataclass(frozen=True)
class OptionsMeasured:
    """The variants' figures, in the order of :data:`VARIANTS`, and the rounds they are the best of."""

    variants: List[VariantFigures]
    rounds: int


def _check(receiver: Any, variant: Variant, label: str) -> Callable[[Any], None]:
    """A check that the sink sent each batch as one body, signed if *variant* has a secret."""

    def check(sink: Any) -> None:
        stats = sink.stats()
        if stats.chunked or stats.splits:
            raise BenchError(
                f"{label}: {stats.chunked:,} batches sent in several bodies,"
                f" {stats.splits:,} bodies split after a 413"
            )
        signature = receiver.requests[-1].headers.get("webhook-signature", "")
        if variant.signed != signature.startswith("v1,"):
            raise BenchError(f"{label}: the last request's webhook-signature starts {signature[:3]!r}")

    return check


def _prepare(variant: Variant, batch: List[Any]) -> Callable[[], None]:
    """What an HttpSink built as *variant* does with *batch* before its POST, as a call to time."""
    from ..http import json_serializer
    from ..http._bodies import _plan
    from ..http._request import _build_post, _merged_headers
    from ..http._schemes import _scheme

    scheme = _scheme("standard", variant.options.get("secret"))
    headers = _merged_headers({}, {}, scheme)
    limit = variant.options.get("max_body_bytes")
    webhook_id = "0" * 32  # a batch id is a uuid4's hex

    def prepare() -> None:
        parts, oversized = _plan(json_serializer, batch, limit, "bench")
        if len(parts) != 1 or oversized:
            raise BenchError(f"{variant.label}: a batch of {len(batch):,} is not one body")
        body = parts[0].body
        assert body is not None
        _build_post(body, webhook_id=webhook_id, scheme=scheme, headers=headers, gzip=False)

    return prepare


def measure(options: BenchOptions, err: TextIO) -> OptionsMeasured:
    """Each variant in turn, round after round, against one receiver; then the work before the POST."""
    from ..testing import Receiver

    rounds = max(1, options.repeat)
    throughput: Dict[str, List[float]] = {}
    cpu: Dict[Tuple[str, int], List[float]] = {}
    prepare: Dict[Tuple[str, int], List[float]] = {}
    cpu_items = max(CPU_BATCHES[-1] * 2, options.http_items // 5)
    with Receiver() as receiver:
        for round_ in range(rounds):
            for variant in _turn(round_):
                status(err, f"bench: HTTP options, round {round_ + 1} of {rounds}, {variant.label}")
                label = f"HttpSink, {variant.label}"
                run = _batched_posts(receiver, options.http_items, variant.options,
                                     _check(receiver, variant, label))
                throughput.setdefault(variant.label, []).append(run.items_per_s)
                receiver.clear()
                for size in CPU_BATCHES:
                    spent = _worker_cpu(receiver, cpu_items, size, None, variant.options,
                                        _check(receiver, variant, f"{label}, worker CPU"))
                    cpu.setdefault((variant.label, size), []).append(spent)
    batches = {size: [event(k) for k in range(size)] for size in CPU_BATCHES}
    calls = {(variant.label, size): _prepare(variant, batch)
             for variant in VARIANTS for size, batch in batches.items()}
    for round_ in range(rounds * PREPARE_ROUNDS):
        status(err, f"bench: HTTP options, before the POST, round {round_ + 1} of {rounds * PREPARE_ROUNDS}")
        for variant in _turn(round_):
            for size in CPU_BATCHES:
                loops = max(1, PREPARE_EVENTS // size)
                seconds = timeit.Timer(calls[(variant.label, size)]).timeit(loops) / loops
                prepare.setdefault((variant.label, size), []).append(seconds)
    return OptionsMeasured(
        [VariantFigures(variant, max(throughput[variant.label]),
                        {size: min(cpu[(variant.label, size)]) for size in CPU_BATCHES},
                        {size: min(prepare[(variant.label, size)]) for size in CPU_BATCHES})
         for variant in VARIANTS],
        rounds,
    )


def _turn(round_: int) -> Tuple[Variant, ...]:
    """The variants in the order of round *round_*: each round starts one further along."""
    start = round_ % len(VARIANTS)
    return VARIANTS[start:] + VARIANTS[:start]


def figures(measured: OptionsMeasured) -> Dict[str, Any]:
    """The variants' figures, for ``bench --json``: each with its ratios to the defaults."""
    base = measured.variants[0]
    return {
        "rounds": measured.rounds,
        "batch": HTTP_BATCH,
        "variants": [
            {
                "label": found.variant.label,
                "secret": found.variant.signed,
                "max_body_bytes": found.variant.options.get("max_body_bytes"),
                "items_per_s": found.items_per_s,
                "items_per_s_vs_defaults": found.items_per_s / base.items_per_s,
                "us_per_event": {str(size): found.cpu[size] * 1e6 for size in CPU_BATCHES},
                "us_per_event_vs_defaults": {
                    str(size): found.cpu[size] / base.cpu[size] for size in CPU_BATCHES
                },
                "us_per_batch_before_post": {str(size): found.prepare[size] * 1e6 for size in CPU_BATCHES},
            }
            for found in measured.variants
        ],
    }


def report(measured: OptionsMeasured) -> List[str]:
    base = measured.variants[0]
    sizes = [f"{size:,}" for size in CPU_BATCHES]
    sent = [
        [found.variant.label, f"{found.items_per_s:,.0f}", ratio(found.items_per_s, base.items_per_s),
         *(cell for size in CPU_BATCHES
           for cell in (f"{found.cpu[size] * 1e6:.2f}", ratio(found.cpu[size], base.cpu[size])))]
        for found in measured.variants
    ]
    before = [
        [found.variant.label,
         *(cell for size in CPU_BATCHES
           for cell in (f"{found.prepare[size] * 1e6:.1f}", ratio(found.prepare[size], base.prepare[size])))]
        for found in measured.variants
    ]
    signed = next(found for found in measured.variants if found.variant.options == {"secret": SECRET})
    signing = ", ".join(
        f"{(signed.prepare[size] - base.prepare[size]) * 1e6:+.1f} us per batch of {size:,}"
        f" ({(signed.prepare[size] - base.prepare[size]) / size * 1e6:+.3f} us per event)"
        for size in CPU_BATCHES
    )
    rounds = f"{measured.rounds} round{'s' if measured.rounds > 1 else ''}"
    return [
        "HttpSink options, every batch under the limit: each variant in turn, round after round,",
        f"the best of {rounds}; items/s as (h), batches of {HTTP_BATCH}; worker CPU per event as above,",
        "json_serializer. The receiver does not check signatures.",
        "",
        *table(["HttpSink options", "items/s", "vs defaults",
                *(cell for size in sizes for cell in (f"us/event, batches of {size}", "vs defaults"))], sent),
        "",
        "Before the POST, no network: serialize, plan the bodies, build headers and signature;",
        f"us per batch, the best of {measured.rounds * PREPARE_ROUNDS} rounds in turn.",
        "",
        *table(["HttpSink options",
                *(cell for size in sizes for cell in (f"us/batch of {size}", "vs defaults"))], before),
        "",
        f"Signing (Standard Webhooks) before the POST: {signing}.",
    ]
