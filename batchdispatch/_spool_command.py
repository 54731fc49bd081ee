"""``python -m batchdispatch spool PATH``: what a spool file holds, and what to do with its dead letters.

Actions (none: the summary):

* ``list [--dead] [--key KEY] [--limit N] [--json]``: rows, oldest first;
* ``export [--dead]``: every row's item, one JSON line each (for ``send``);
* ``requeue [--key KEY]``: dead letters back to waiting, for the next start;
* ``purge --dead [--older-than SECONDS] [--key KEY] [--yes]``: delete dead letters.

The summary, ``list`` and ``export`` only read the file
(:class:`~batchdispatch.spool._inspect.Inspector`); ``requeue`` and
``purge`` write through :class:`~batchdispatch.spool.SqliteSpool`, in one
transaction each, and never touch a row another process has claimed.
A missing, corrupt or foreign file is one line on stderr naming the path
and the problem, and exit status 2.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any, Dict, Hashable, List, Optional, TextIO, Tuple

from . import _json
from ._console import Output, write_summary
from .exceptions import SpoolError

EXIT_OK = 0
#: ``export``: some rows were not JSON (a custom *dumps*), and were skipped;
#: ``purge``: the operator said no.
EXIT_INCOMPLETE = 1
#: A usage error, or a file that is missing, corrupt or not a spool.
EXIT_USAGE = 2

ACTIONS = ("list", "export", "requeue", "purge")


@dataclasses.dataclass(frozen=True)
class SpoolOptions:
    path: str
    action: Optional[str] = None
    dead: bool = False
    key: Optional[str] = None  # as typed: JSON if it parses, else a string
    limit: Optional[int] = None
    json: bool = False
    older_than: Optional[float] = None
    yes: bool = False


def parse_key(text: str) -> Hashable:
    """A ``--key`` as typed: JSON when it parses (``5``, ``null``, ``["a", 1]``), else the string itself."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return _hashable(value)


def _hashable(value: Any) -> Hashable:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        raise ValueError("a key cannot be a JSON object")
    result: Hashable = value
    return result


def run(options: SpoolOptions, stdin: TextIO, out: TextIO, err: TextIO) -> int:
    """Run the ``spool`` command; return its exit status."""
    return _run(options, stdin, Output(out, "stdout"), Output(err, "stderr"))


def is_server(location: str) -> bool:
    """Whether *location* names a spool on a server (a URL) rather than a file."""
    return location.startswith(("postgresql://", "postgres://", "redis://", "rediss://"))


def _redis_location(location: str) -> Any:
    url, _, name = location.partition("#")
    if not name:
        raise ValueError("a Redis location names its spool after a #: redis://host:6379/0#NAME")
    return url, name


def _inspector(location: str) -> Any:
    if location.startswith(("redis://", "rediss://")):
        from .spool._redis_inspect import RedisInspector

        return RedisInspector(*_redis_location(location))
    if is_server(location):
        from .spool._pg_inspect import PgInspector

        return PgInspector(location)
    from .spool._inspect import Inspector

    return Inspector(location)


def _open_spool(location: str) -> Any:
    """The spool at *location*, for a write (requeue, purge)."""
    if location.startswith(("redis://", "rediss://")):
        from .spool._redis import RedisSpool

        return RedisSpool(*_redis_location(location))
    if is_server(location):
        from .spool._pg_inspect import parse_location
        from .spool._postgres import PostgresSpool

        conninfo, table = parse_location(location)
        return PostgresSpool(conninfo, table=table, name="spool command")
    from .spool import SqliteSpool

    return SqliteSpool(location, name="spool command")


def _run(options: SpoolOptions, stdin: TextIO, out: Output, err: Output) -> int:
    key: Hashable = None
    stored_key: Optional[str] = None
    if options.key is not None:
        try:
            key = parse_key(options.key)
            stored_key = _json.dumps(key)
        except (TypeError, ValueError) as exc:
            err.write(f"error: --key: {exc}\n")
            return EXIT_USAGE
    try:
        inspector = _inspector(options.path)
        if options.action is None:
            _summary(inspector, options, out)
            status = EXIT_OK
        elif options.action == "list":
            rows = inspector.rows(dead=options.dead, key=stored_key, limit=options.limit)
            _list(rows, options.json, out)
            status = EXIT_OK
        elif options.action == "export":
            status = _export(inspector.rows(dead=options.dead), out, err)
        else:
            inspector.summary()  # the file exists and is a spool: SqliteSpool would create one
            status = _write(options, key, stored_key, inspector, stdin, out, err)
    except SpoolError as exc:
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    except ImportError as exc:  # a spool on a server, without its client
        err.write(f"error: {options.path.split(':')[0]} spools need {exc.name}: pip install it\n")
        return EXIT_USAGE
    except ValueError as exc:  # a malformed location
        err.write(f"error: {exc}\n")
        return EXIT_USAGE
    out.flush()
    if out.failure():
        err.write(f"error: {out.failure()}\n")
    return status


def _summary(inspector: Any, options: SpoolOptions, out: Output) -> None:
    summary = inspector.summary()
    if options.json:
        out.write(json.dumps(dataclasses.asdict(summary)) + "\n")
        return
    rows: List[Tuple[str, str]] = [
        ("waiting", _with(summary.waiting, _ago("oldest row written", summary.oldest_age))),
        ("claimed, live owner", _with(summary.claimed_live, "being delivered")),
        ("claimed, ended owner", _with(summary.claimed_ended, "freed by the next claim")),
        ("in logs, live owner", _with(summary.logged_live, "appended, not yet delivered")),
        ("in logs, ended owner", _with(summary.logged_ended, "copied in as waiting by the next claim")),
        ("undecodable", _with(summary.undecodable, "kept, never handed out")),
        ("dead letters", _with(summary.dead, _ago("oldest given up", summary.oldest_dead_age))),
        ("size on disk", _size(summary.size)),
    ]
    write_summary(out, f"spool {summary.path}\n", rows)


def _with(count: int, note: str) -> str:
    return f"{count:>9,}   {note}" if count and note else f"{count:>9,}"


def _ago(what: str, age: Optional[float]) -> str:
    return "" if age is None else f"{what} {_duration(age)} ago"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m"
    return f"{hours // 24}d {hours % 24}h"


def _size(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:,} {unit}" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _decoded(data: Any) -> Tuple[bool, Any]:
    """(True, the item) for JSON text, else (False, what to show of the stored data)."""
    if isinstance(data, str):
        try:
            return True, json.loads(data)
        except ValueError:
            return False, data
    if isinstance(data, bytes):
        return False, base64.b64encode(data).decode()
    return False, repr(data)


def _list(rows: List[Any], as_json: bool, out: Output) -> None:
    for row in rows:
        ok, item = _decoded(row.data)
        _, key = _decoded(row.key)
        if as_json:
            line = {"id": row.id, "key": key, "state": row.state, "age": row.age}
            if row.state == "dead":
                line.update(error=row.error, attempts=row.attempts)
            line["item" if ok else ("data_base64" if isinstance(row.data, bytes) else "data")] = item
            out.write(json.dumps(line, ensure_ascii=False) + "\n")
            continue
        age = "?" if row.age is None else _duration(row.age)
        shown = json.dumps(item, ensure_ascii=False) if ok else f"<not JSON: {type(row.data).__name__}>"
        if len(shown) > 100:
            shown = shown[:97] + "..."
        extra = ""
        if row.state == "dead":
            extra = f"  after {row.attempts} attempt{'' if row.attempts == 1 else 's'}: {row.error}"
        out.write(f"{row.id:>8}  {row.state:<11}  {age:>8}  key={json.dumps(key)}  {shown}{extra}\n")


def _export(rows: List[Any], out: Output, err: Output) -> int:
    skipped = 0
    for row in rows:
        ok, item = _decoded(row.data)
        if not ok:
            skipped += 1
            continue
        out.write(json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n")
    if skipped:
        err.write(f"error: {skipped} rows are not JSON (a custom dumps) and were not exported\n")
        return EXIT_INCOMPLETE
    return EXIT_OK


def _write(
    options: SpoolOptions, key: Hashable, stored_key: Optional[str], inspector: Any,
    stdin: TextIO, out: Output, err: Output,
) -> int:
    keyed: Dict[str, Any] = {} if options.key is None else {"key": key}
    if options.action == "requeue":
        with _open_spool(options.path) as spool:
            moved = spool.requeue(**keyed)
        out.write(f"requeued {moved:,} dead letters: the next start delivers them\n")
        return EXIT_OK
    # purge
    if not options.yes:
        count = sum(
            1 for row in inspector.rows(dead=True, key=stored_key)
            if options.older_than is None or (row.age is not None and row.age >= options.older_than)
        )
        if count == 0:
            out.write("purged 0 dead letters\n")
            return EXIT_OK
        if not _isatty(stdin):
            err.write("error: purge deletes dead letters for good: add --yes (no terminal to ask on)\n")
            return EXIT_USAGE
        err.write(f"delete {count:,} dead letters from {inspector.path} for good? [y/N] ")
        err.flush()
        answer = stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            out.write("nothing deleted\n")
            return EXIT_INCOMPLETE
    with _open_spool(options.path) as spool:
        deleted = spool.purge(older_than=options.older_than, **keyed)
    out.write(f"purged {deleted:,} dead letters\n")
    return EXIT_OK


def _isatty(stream: TextIO) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):
        return False
