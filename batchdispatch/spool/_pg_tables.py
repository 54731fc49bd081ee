"""PostgresSpool's tables and the statements on them.

Three tables, created on first use (``CREATE ... IF NOT EXISTS``, under
an advisory lock so that two processes starting together do not race):

``<table>``
    One row per pair: ``id bigserial`` (the order), ``key`` (JSON text),
    ``item`` (JSON text) or ``item_bytes`` (what a custom *dumps* made of
    it, when bytes), ``owner`` (the token of the owner holding it; NULL
    while free), ``appended`` (a durable append: freed as the newest
    pairs when its owner ends) and ``at`` (when it was written).
``<table>_owners``
    One row per live owner: its token and when its lease runs out. An
    owner renews it every third of its lease; one whose lease ran out is
    dead, and its pairs are freed by the next claim.
``<table>_dead``
    The dead letters: ``id``, ``key``, ``item``/``item_bytes``, ``error``,
    ``attempts`` and ``at`` (when it was given up).

Every statement names the tables through :class:`psycopg.sql.Identifier`,
never by formatting text, and takes its values as parameters.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Tuple

from psycopg import sql

#: What a *table* may be: an identifier, optionally qualified by a schema.
TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,50}(\.[A-Za-z_][A-Za-z0-9_]{0,50})?")
#: The owner of a row that could not be decoded: never handed out again.
QUARANTINED = "!undecodable"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {spool} (
    id bigserial PRIMARY KEY,
    key text NOT NULL,
    item text,
    item_bytes bytea,
    owner text,
    appended boolean NOT NULL DEFAULT false,
    at timestamptz NOT NULL DEFAULT now(),
    CHECK ((item IS NULL) <> (item_bytes IS NULL))
);
CREATE INDEX IF NOT EXISTS {free_index} ON {spool} (id) WHERE owner IS NULL;
CREATE INDEX IF NOT EXISTS {owner_index} ON {spool} (owner) WHERE owner IS NOT NULL;
CREATE TABLE IF NOT EXISTS {owners} (
    token text PRIMARY KEY,
    expires timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS {dead} (
    id bigserial PRIMARY KEY,
    key text NOT NULL,
    item text,
    item_bytes bytea,
    error text NOT NULL,
    attempts integer NOT NULL,
    at timestamptz NOT NULL DEFAULT now()
);
"""


class Tables:
    """The composed names of one spool's tables, and its statements."""

    def __init__(self, table: str) -> None:
        if not isinstance(table, str) or not TABLE_NAME.fullmatch(table):
            raise ValueError(
                f"table must be an identifier (letters, digits, _), optionally schema.table, got {table!r}"
            )
        schema, _, name = table.rpartition(".")
        self.name = table
        self.lock_key = table  # the advisory lock of schema creation and claims: hashtext(table)

        def ident(suffix: str = "") -> sql.Composable:
            return sql.Identifier(schema, name + suffix) if schema else sql.Identifier(name + suffix)

        self.spool = ident()
        self.owners = ident("_owners")
        self.dead = ident("_dead")
        names: Dict[str, Any] = {
            "spool": self.spool, "owners": self.owners, "dead": self.dead,
            "free_index": sql.Identifier(name + "_free"), "owner_index": sql.Identifier(name + "_owner"),
        }
        self.schema = [sql.SQL(statement.strip()).format(**names)
                       for statement in _SCHEMA.split(";") if statement.strip()]

    def q(self, text: str) -> sql.Composed:
        """*text* with ``{spool}``, ``{owners}`` and ``{dead}`` filled in as identifiers."""
        return sql.SQL(text).format(spool=self.spool, owners=self.owners, dead=self.dead)


def split_data(data: Any) -> Tuple[Any, Any]:
    """Stored data as the (item, item_bytes) columns: text in one, bytes in the other."""
    return (None, bytes(data)) if isinstance(data, (bytes, bytearray)) else (data, None)
