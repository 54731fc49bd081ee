"""The command line: ``python -m batchdispatch {demo,bench}``.

Each command lives in its own module; this one only parses arguments and
turns the result into an exit status.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Optional, Sequence

from . import __version__, _bench, _demo

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for ``python -m batchdispatch``."""
    parser = argparse.ArgumentParser(
        prog="python -m batchdispatch",
        description="Try batchdispatch out, or measure it against the usual alternatives.",
    )
    parser.add_argument("--version", action="version", version=f"batchdispatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    defaults = _demo.DemoOptions()
    demo = commands.add_parser(
        "demo",
        help="producer threads send events through a BackgroundDispatcher to an in-process sink",
        description=(
            "Producer threads enqueue small event dicts, as a web app's request threads would; a"
            " BackgroundDispatcher batches them into an in-process sink that JSON-encodes each batch."
            " Shows progress on stderr when it is a terminal and prints a summary."
        ),
    )
    demo.add_argument(
        "--threads", type=_positive_int, default=defaults.threads,
        help=f"producer threads (default: {defaults.threads})",
    )
    demo.add_argument(
        "--items", type=_positive_int, default=defaults.items,
        help=f"events enqueued in total (default: {defaults.items:_})",
    )
    demo.add_argument(
        "--delay", type=_positive_seconds, default=defaults.delay,
        help=f"the dispatcher's delay in seconds (default: {defaults.delay:g})",
    )
    demo.add_argument(
        "--max-batch-size", type=_positive_int, default=defaults.max_batch_size,
        help=f"the dispatcher's max_batch_size (default: {defaults.max_batch_size})",
    )

    full = _bench.BenchOptions()
    bench = commands.add_parser(
        "bench",
        help="ns per enqueue and end-to-end items/s, against a deque, a locked list and queue.Queue",
        description=(
            "Measures, in one run, the cost of an enqueue with 1 and 4 producer threads and the"
            " end-to-end rate of a bare deque.append, a lock plus list.append, a queue.Queue with a"
            " get() per item, and BackgroundDispatcher; then counts an idle dispatcher's wake-ups."
        ),
    )
    bench.add_argument(
        "--items", type=_positive_int, default=None,
        help=f"items per run (default: {full.items:_}; {_bench.QUICK.items:_} with --quick)",
    )
    bench.add_argument(
        "--repeat", type=_positive_int, default=None,
        help=f"runs per figure, the best one is kept (default: {full.repeat}; 1 with --quick)",
    )
    bench.add_argument(
        "--quick", action="store_true",
        help="a run of a few seconds with rough figures, for smoke tests",
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``python -m batchdispatch`` with *argv* (default: ``sys.argv[1:]``).

    :returns: the exit status: 0 on success, 1 when a command found a
        problem, 2 for a usage error, 130 when interrupted.
    """
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            options = _demo.DemoOptions(
                threads=args.threads, items=args.items, delay=args.delay, max_batch_size=args.max_batch_size
            )
            return _demo.run(options, sys.stdout, sys.stderr)
        preset = _bench.QUICK if args.quick else _bench.BenchOptions()
        bench_options = _bench.BenchOptions(
            items=preset.items if args.items is None else args.items,
            repeat=preset.repeat if args.repeat is None else args.repeat,
            idle=preset.idle,
        )
        return _bench.run(bench_options, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130
