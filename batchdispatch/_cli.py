"""The command line: ``python -m batchdispatch {demo,send,bench,spool}``.

Each command lives in its own module; this one only parses arguments and
turns the result into an exit status.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import re
import sys
import textwrap
from typing import Any, Optional, Sequence, Tuple

from . import __version__, _bench, _console, _demo, _send, _spool_command

__all__ = ["main"]


def _whole_number(text: str, minimum: int = 1) -> int:
    try:
        value = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def _positive_int(text: str) -> int:
    return _whole_number(text, 1)


def _non_negative_int(text: str) -> int:
    return _whole_number(text, 0)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds, got {text!r}")
    return value


# An HTTP header name: a token of RFC 9110.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _header(text: str) -> Tuple[str, str]:
    # The value is never echoed: it is often a credential (an API key).
    name, colon, value = text.partition(":")
    name = name.strip()
    if not colon or not _HEADER_NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(
            "expected NAME:VALUE, a header name, a colon and the value (as in 'api-key:123')"
        )
    value = value.strip()
    if "\r" in value or "\n" in value or "\0" in value:
        raise argparse.ArgumentTypeError(f"the value of header {name} contains a line break or NUL")
    return name, value


def _env_name(text: str) -> str:
    if not text or "=" in text or "\0" in text:
        raise argparse.ArgumentTypeError(f"expected the name of an environment variable, got {text!r}")
    return text


_SEND_EPILOG = f"""\
input:
  One JSON value per line, UTF-8; blank lines are skipped. Reading stops at
  the first line that is not valid JSON: the lines before it are delivered,
  nothing after it is sent. Reading also stops once a batch has been given
  up (the endpoint keeps failing); the items already read are still tried.

exit status:
  {_send.EXIT_OK}    every item read was delivered
  {_send.EXIT_UNDELIVERED}    some items were not delivered (given up after their retries, or
       still pending when the shutdown timeout ran out); takes precedence over {_send.EXIT_BAD_INPUT}
  {_send.EXIT_USAGE}    usage error: a bad option, a malformed --header, a missing secret
  {_send.EXIT_BAD_INPUT}    a line was not valid JSON; the lines before it were delivered
  {_send.EXIT_INTERRUPTED}  interrupted (Ctrl-C): stops at once; what was not delivered yet
       counts as failed in the summary

  Output that cannot be written (a closed pipe, a full disk) does not change
  the status; a summary lost that way is reported in one line on stderr.

examples:
  python -m batchdispatch send https://collector.example/ingest < events.jsonl
  EVENTS_SECRET=... python -m batchdispatch send URL --secret-env EVENTS_SECRET \\
      --header 'api-key:123' --max-batch-size 1000 < backfill.jsonl
"""


def _non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a non-negative, finite number of seconds, got {text!r}")
    return value


_SPOOL_EPILOG = """\
KEY is read as JSON when it is valid JSON (5, null, ["tenant", 1]), else as
the string itself; quote a string that looks like JSON: --key '"5"'.

The summary, list and export only read the spool: safe while dispatchers use
it. requeue and purge write in one transaction each, and never take a row
another process has claimed. Rows claimed by a running dispatcher are being
delivered: an export made meanwhile may list items that arrive anyway.

exit status:
  0    done
  1    export: some rows are not JSON and were skipped; purge: not confirmed
  2    usage error, or the spool is missing, corrupt, unreachable or not a spool

examples:
  python -m batchdispatch spool /var/spool/app/events.db
  python -m batchdispatch spool events.db list --dead --limit 20
  python -m batchdispatch spool events.db export --dead | python -m batchdispatch send URL
  python -m batchdispatch spool events.db requeue --key tenant-1
  python -m batchdispatch spool events.db purge --dead --older-than 604800 --yes
"""


def _add_spool_parser(commands: Any) -> None:
    spool = commands.add_parser(
        "spool",
        help="what a spool holds; list, export, requeue or purge its dead letters",
        description=textwrap.fill(
            "Without an action, a summary of the spool at PATH: rows waiting, rows claimed by live and"
            " by ended owners, items in the write-ahead logs, dead letters, the oldest row's age and"
            " the size on disk. PATH is a SqliteSpool file, or a spool on a server:"
            " 'postgresql://user@host/db#table' (the table defaults to batchdispatch_spool) or"
            " 'redis://host:6379/0#name'.",
            width=78,
        ),
        epilog=_SPOOL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    spool.add_argument("path", metavar="PATH", help="the spool file, or a postgresql:// or redis:// location")
    spool.add_argument("--json", action="store_true", help="the summary as one JSON object")
    actions = spool.add_subparsers(dest="action", metavar="ACTION")
    listing = actions.add_parser("list", help="rows, oldest first", description="Rows, oldest first.")
    listing.add_argument("--dead", action="store_true", help="the dead letters instead of the queue")
    listing.add_argument("--key", metavar="KEY", help="only the rows of KEY")
    listing.add_argument("--limit", type=_positive_int, metavar="N", help="N rows at most")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    export = actions.add_parser(
        "export", help="every row's item as a JSON line on stdout",
        description="Every row's item, one JSON line each, oldest first: input for send.",
    )
    export.add_argument("--dead", action="store_true", help="the dead letters instead of the queue")
    requeue = actions.add_parser(
        "requeue", help="dead letters back to waiting, for the next start",
        description="Move dead letters back to the queue, as its newest rows; prints how many.",
    )
    requeue.add_argument("--key", metavar="KEY", help="only the dead letters of KEY")
    purge = actions.add_parser(
        "purge", help="delete dead letters",
        description="Delete dead letters for good. Without --yes, asks on a terminal.",
    )
    purge.add_argument("--dead", action="store_true", required=True, help="the dead letters (required)")
    purge.add_argument(
        "--older-than", type=_non_negative_seconds, metavar="SECONDS",
        help="only those given up at least SECONDS ago",
    )
    purge.add_argument("--key", metavar="KEY", help="only the dead letters of KEY")
    purge.add_argument("--yes", action="store_true", help="do not ask")


def build_parser() -> argparse.ArgumentParser:
    """Return the parser for ``python -m batchdispatch``."""
    parser = argparse.ArgumentParser(
        prog="python -m batchdispatch",
        description=(
            "Try batchdispatch out, ship JSON lines to a URL, or measure it against the usual alternatives."
        ),
    )
    parser.add_argument("--version", action="version", version=f"batchdispatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    defaults = _demo.DemoOptions()
    demo = commands.add_parser(
        "demo",
        help="producer threads send events through a BackgroundDispatcher over HTTP",
        description=(
            "Producer threads enqueue small event dicts, as a web app's request threads would; a"
            " BackgroundDispatcher batches them and an HttpSink POSTs each batch as a JSON array, to"
            " --url or to an embedded receiver on 127.0.0.1, which is then checked for every accepted"
            " event. Shows progress on stderr when it is a terminal and prints a summary."
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

    demo.add_argument(
        "--url",
        help="POST the batches to this URL instead of an embedded receiver on 127.0.0.1",
    )

    sends = _send.SendOptions(url="")
    send = commands.add_parser(
        "send",
        help="deliver JSON lines from stdin to a URL in batches",
        # Raw, for the epilog's table; so the description is wrapped here.
        description=textwrap.fill(
            "Reads JSON lines from stdin and POSTs them to URL in batches, each a JSON array, through"
            " a BackgroundDispatcher and an HttpSink (retried by urllib3 and by the dispatcher)."
            " Prints a summary on stdout, and progress on stderr when it is a terminal.",
            width=78,
        ),
        epilog=_SEND_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    send.add_argument("url", metavar="URL", help="the endpoint every batch is POSTed to")
    send.add_argument(
        "--delay", type=_positive_seconds, default=sends.delay, metavar="SECONDS",
        help=f"seconds an item waits for more before its batch goes out (default: {sends.delay:g})",
    )
    send.add_argument(
        "--max-batch-size", type=_positive_int, default=sends.max_batch_size, metavar="N",
        help=f"items per request at most (default: {sends.max_batch_size})",
    )
    send.add_argument(
        "--header", type=_header, action="append", default=[], metavar="NAME:VALUE",
        help="an extra request header; repeat for more",
    )
    send.add_argument(
        "--secret-env", type=_env_name, metavar="NAME",
        help=(
            "sign each request with the secret in environment variable NAME, per Standard Webhooks"
            " (webhook-signature: v1,base64 HMAC-SHA256 of 'id.timestamp.body'); a value written"
            " whsec_<base64> is that key, any other value is the key itself"
        ),
    )
    send.add_argument(
        "--signature", choices=("standard", "x-webhook"), default=sends.signature,
        help=(
            "standard (default): Standard Webhooks headers; x-webhook: the headers of batchdispatch 0.1"
            " (X-Webhook-Signature: sha256=HMAC of 'timestamp.body', which does not cover the id),"
            " for receivers built on 0.1"
        ),
    )
    send.add_argument(
        "--max-body-bytes", type=_positive_int, default=None, metavar="N",
        help=(
            "largest request body in bytes, before gzip: a larger batch goes out as several requests,"
            " and a line larger on its own is not sent (default: no limit)"
        ),
    )
    send.add_argument(
        "--timeout", type=_positive_seconds, default=None, metavar="SECONDS",
        help="seconds to wait to connect and for each read (default: 3.05 to connect, 30 to read)",
    )
    send.add_argument(
        "--retries", type=_non_negative_int, default=None, metavar="N",
        help=(
            "urllib3 retries of each request, on connection errors and 408, 429, 5xx (default: the"
            f" sink's, 5); the dispatcher then tries a failed batch {_send.RETRY_POLICY.max_attempts}"
            " times in all"
        ),
    )
    send.add_argument(
        "--shutdown-timeout", type=_positive_seconds, default=sends.shutdown_timeout, metavar="SECONDS",
        help=(
            "seconds to wait at the end for the last deliveries; what is left then counts as"
            f" failed (default: {sends.shutdown_timeout:g})"
        ),
    )

    full = _bench.BenchOptions()
    bench = commands.add_parser(
        "bench",
        help=(
            "ns per enqueue and end-to-end items/s, against a deque, a locked list and queue.Queue;"
            " HTTP items/s against a post per item"
        ),
        description=(
            "Measures, in one run, the cost of an enqueue with 1 and 4 producer threads and the"
            " end-to-end rate of a bare deque.append, a lock plus list.append, a queue.Queue with a"
            " get() per item, and BackgroundDispatcher; then counts an idle dispatcher's wake-ups."
            " Finally it measures items/s delivered to a receiver on 127.0.0.1 by one requests.post"
            " per item, one Session.post per item, and BackgroundDispatcher + HttpSink with batches"
            " of 100."
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
    bench.add_argument(
        "--only", choices=_bench.SECTIONS, default=None,
        help=(
            "run one section: enqueue, spool, scale, http or sinks (default: all five), or app: a Flask"
            " app under gunicorn with HttpSink, PostHog and Segment (about eight minutes; --repeat sets its"
            " rounds, 10 by default; needs the bench extra; only run when asked for)"
        ),
    )
    bench.add_argument(
        "--json", metavar="PATH", default=None, dest="json_path",
        help="also write the figures of the enqueue and http sections to PATH, as JSON",
    )
    _add_spool_parser(commands)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``python -m batchdispatch`` with *argv* (default: ``sys.argv[1:]``).

    :returns: the exit status: 0 on success, 1 when a command found a
        problem (``send``: items not delivered), 2 for a usage error, 3 when
        ``send`` read a line that is not JSON, 130 when interrupted.
    """
    args = build_parser().parse_args(argv)
    # The commands report in their own words (a summary, an exit status):
    # the library's log lines would say the same again on stderr.
    logging.getLogger("batchdispatch").addHandler(logging.NullHandler())
    try:
        if args.command == "demo":
            options = _demo.DemoOptions(
                threads=args.threads, items=args.items, delay=args.delay,
                max_batch_size=args.max_batch_size, url=args.url,
            )
            return _demo.run(options, sys.stdout, sys.stderr)
        if args.command == "spool":
            spool_options = _spool_command.SpoolOptions(
                path=args.path, action=args.action, dead=getattr(args, "dead", False),
                key=getattr(args, "key", None), limit=getattr(args, "limit", None), json=args.json,
                older_than=getattr(args, "older_than", None), yes=getattr(args, "yes", False),
            )
            return _spool_command.run(spool_options, sys.stdin, sys.stdout, sys.stderr)
        if args.command == "send":
            send_options = _send.SendOptions(
                url=args.url, delay=args.delay, max_batch_size=args.max_batch_size,
                headers=tuple(args.header), secret_env=args.secret_env, signature=args.signature,
                max_body_bytes=args.max_body_bytes, timeout=args.timeout,
                retries=args.retries, shutdown_timeout=args.shutdown_timeout,
            )
            return _send.run(send_options, sys.stdin.buffer, sys.stdout, sys.stderr)
        preset = _bench.QUICK if args.quick else _bench.BenchOptions()
        bench_options = dataclasses.replace(
            preset,
            items=preset.items if args.items is None else args.items,
            repeat=preset.repeat if args.repeat is None else args.repeat,
            app_rounds=preset.app_rounds if args.repeat is None else args.repeat,
            sections=_bench.DEFAULT_SECTIONS if args.only is None else (args.only,),
            json_path=args.json_path,
        )
        return _bench.run(bench_options, sys.stdout, sys.stderr)
    except KeyboardInterrupt:
        _console.Output(sys.stderr, "stderr").write("\ninterrupted\n")
        return 130
    finally:
        # A stdout that failed (| head -0, > /dev/full) must not fail once more
        # at interpreter shutdown and turn the command's status into 120.
        _console.flush_before_exit(sys.stdout)
        _console.flush_before_exit(sys.stderr)
