"""An operator's view of a PostgresSpool's tables, read without taking anything.

The counterpart of :mod:`._inspect` for ``python -m batchdispatch spool
postgresql://...#table``: the same :class:`~._inspect.Summary` and
:class:`~._inspect.StoredRow`, read in one read-only transaction. It never
creates the tables, claims, frees or renews a lease. An owner counts as
live while its lease runs (or, on this host, while its process exists);
its appended pairs are the "in logs" lines of the summary.
"""

from __future__ import annotations

from typing import Any, List, Optional, Set, Tuple

import psycopg

from ..exceptions import SpoolError
from ._identity import dead_here
from ._inspect import StoredRow, Summary
from ._pg_tables import QUARANTINED, Tables


def parse_location(location: str) -> Tuple[str, str]:
    """``postgresql://...[#table]`` as (conninfo, table)."""
    conninfo, _, table = location.partition("#")
    return conninfo, table or "batchdispatch_spool"


class PgInspector:
    """Reads a PostgresSpool's tables for an operator."""

    def __init__(self, location: str) -> None:
        self.conninfo, table = parse_location(location)
        self.tables = Tables(table)
        params = psycopg.conninfo.conninfo_to_dict(self.conninfo)
        where = f"{params.get('host', 'localhost')}:{params.get('port', '5432')}/{params.get('dbname', '')}"
        #: Where the spool lives, without credentials.
        self.path = f"postgresql://{where}#{table}"

    def summary(self) -> Summary:
        try:
            return self._summary()
        except psycopg.Error as exc:
            raise self._fault(exc) from exc

    def rows(
        self, *, dead: bool = False, key: Optional[str] = None, limit: Optional[int] = None,
    ) -> List[StoredRow]:
        try:
            return self._rows(dead, key, limit)
        except psycopg.Error as exc:
            raise self._fault(exc) from exc

    def _fault(self, exc: psycopg.Error) -> SpoolError:
        return SpoolError(f"spool {self.path}: {type(exc).__name__}: {exc}", path=self.path, kind="io")

    def _summary(self) -> Summary:
        t = self.tables
        with self._reading() as conn:
            live = self._live(conn)
            counts = {"waiting": 0, "claimed_live": 0, "claimed_ended": 0, "undecodable": 0,
                      "logged_live": 0, "logged_ended": 0}
            for owner, appended, count in conn.execute(t.q(
                "SELECT owner, appended, count(*) FROM {spool} GROUP BY owner, appended"
            )):
                if owner is None:
                    counts["waiting"] += count
                elif owner == QUARANTINED:
                    counts["undecodable"] += count
                else:
                    state = "live" if owner in live else "ended"
                    counts[f"{'logged' if appended else 'claimed'}_{state}"] += count
            oldest = conn.execute(t.q("SELECT extract(epoch FROM now() - min(at)) FROM {spool}")).fetchone()
            dead = conn.execute(t.q(
                "SELECT count(*), extract(epoch FROM now() - min(at)) FROM {dead}"
            )).fetchone()
            size = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c)), 0) FROM unnest(%s::regclass[]) AS c",
                ([t.name, t.name + "_owners", t.name + "_dead"],),
            ).fetchone()
        assert oldest is not None
        assert dead is not None
        assert size is not None
        return Summary(
            path=self.path, **counts, dead=int(dead[0]),
            oldest_age=None if oldest[0] is None else float(oldest[0]),
            oldest_dead_age=None if dead[1] is None else float(dead[1]),
            size=int(size[0]),
        )

    def _rows(self, dead: bool, key: Optional[str], limit: Optional[int]) -> List[StoredRow]:
        t = self.tables
        where = " WHERE key = %s" if key is not None else ""
        params: List[Any] = [key] if key is not None else []
        found: List[StoredRow] = []
        with self._reading() as conn:
            if dead:
                for row_id, stored_key, text, data, error, attempts, age in conn.execute(t.q(
                    "SELECT id, key, item, item_bytes, error, attempts, extract(epoch FROM now() - at)"
                    f" FROM {{dead}}{where} ORDER BY id LIMIT %s"
                ), (*params, limit)):
                    found.append(StoredRow(row_id, stored_key, text if data is None else bytes(data), "dead",
                                           float(age), error, attempts))
                return found
            live = self._live(conn)
            for row_id, stored_key, text, data, owner, age in conn.execute(t.q(
                "SELECT id, key, item, item_bytes, owner, extract(epoch FROM now() - at)"
                f" FROM {{spool}}{where} ORDER BY id LIMIT %s"
            ), (*params, limit)):
                state = ("waiting" if owner is None else "undecodable" if owner == QUARANTINED
                         else "claimed" if owner in live else "ended")
                found.append(StoredRow(row_id, stored_key, text if data is None else bytes(data), state,
                                       float(age)))
        return found

    def _live(self, conn: psycopg.Connection[Any]) -> Set[str]:
        return {
            token for (token,) in conn.execute(
                self.tables.q("SELECT token FROM {owners} WHERE expires > now()")
            ) if not dead_here(token)
        }

    def _reading(self) -> _Reading:
        return _Reading(self)


class _Reading:
    """A read-only transaction on the spool's server; the tables must exist."""

    def __init__(self, inspector: PgInspector) -> None:
        self.inspector = inspector
        self.conn: Optional[psycopg.Connection[Any]] = None

    def __enter__(self) -> psycopg.Connection[Any]:
        path = self.inspector.path
        try:
            conn = psycopg.connect(self.inspector.conninfo, autocommit=True, connect_timeout=5)
        except psycopg.Error as exc:
            raise SpoolError(f"spool {path}: cannot connect ({type(exc).__name__})", path=path,
                             kind="unreachable") from exc
        self.conn = conn
        name = self.inspector.tables.name
        try:
            conn.execute("SET default_transaction_read_only = on")
            conn.execute("SET statement_timeout = 30000")
            missing = [table for table in (name, name + "_owners", name + "_dead")
                       if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,)]
        except psycopg.Error as exc:
            conn.close()
            raise SpoolError(f"spool {path}: {type(exc).__name__}: {exc}", path=path, kind="io") from exc
        if missing:
            conn.close()
            raise SpoolError(f"spool {path}: the table {missing[0]} does not exist: not a spool", path=path,
                             kind="corrupt")
        return conn

    def __exit__(self, *exc_info: object) -> None:
        if self.conn is not None:
            self.conn.close()
