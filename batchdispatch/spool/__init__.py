"""A durable spool: items kept in an SQLite file until they are delivered.

.. code-block:: python

    from batchdispatch.http import HttpSink
    from batchdispatch.spool import SqliteSpool

    deliver = HttpSink("https://events.example.com/ingest")
    with SqliteSpool("events.db") as spool:
        spool.put([(None, {"event": "signup"}), (None, {"event": "login"})])
        rows = spool.claim(100)            # [(row_id, key, item), ...], oldest first
        deliver([item for _, _, item in rows])
        spool.ack([row_id for row_id, _, _ in rows])

The file holds ``(key, item)`` pairs, each encoded as JSON (or with the
*dumps*/*loads* pair you give), in insertion order. Any number of threads
and processes may use one file: :meth:`SqliteSpool.claim` hands each row to
exactly one of them, and the rows of a process that died are handed out
again. Nothing is ever unpickled: reading a spool does not run code.

Only the standard library is used (:mod:`sqlite3`, :mod:`fcntl`); the
package is POSIX only, like the rest of batchdispatch.

:class:`Spool` is the contract a dispatcher's ``spool=`` is written
against; :class:`SqliteSpool` implements it. The package's private
modules each own one part of SqliteSpool:

* ``_sqlite``: :class:`SqliteSpool`, the public operations, composed of
  the parts below;
* ``_encoding``: keys and items to stored data and back;
* ``_connection``: the SQLite file, its layout, each process's connection
  and its lock, transactions;
* ``_errors``: OSError and sqlite3.Error as SpoolError kinds;
* ``_waits``: deadlines, and lock waits bounded by them;
* ``_owners``: owner files, and whether an owner still lives;
* ``_dead``: the dead letters' table and the statements on it;
* ``_wal``: the write-ahead log of durable appends;
* ``_records``: the log's record format and file helpers;
* ``_process``: what each process holds, and the fork hooks.

The spools on a server, :class:`PostgresSpool` and :class:`RedisSpool`,
share ``_encoding``, ``_waits``, ``_dead`` and ``_process`` with it, and
have their own:

* ``_postgres`` with ``_pg_tables``, and ``_redis`` with
  ``_redis_scripts``: each spool, and its tables or keys and scripts;
* ``_identity``: owner identities, and a dead owner on this host told at once;
* ``_group_commit``: durable appends of concurrent threads in one write;
* ``_cutoff``: PostgresSpool's deadlines on a server that does not answer;
* ``_inspect``, ``_pg_inspect``, ``_redis_inspect``: the ``spool``
  command's read-only views.

Their locks: PostgresSpool's connection lock (``_Owner.lock``) is taken
first, then ``Cutoff``'s, briefly, with nothing inside it; a
``GroupCommit``'s lock is never held while it writes or sleeps, so the
write takes the connection lock with no other held.

SqliteSpool's locks, and the order in which they may be taken (a lock is never taken
while one later in this list is held):

1. ``Process.log_lock`` (reentrant): the write-ahead log's state in this
   process: opening, rotating, acking and closing segments. Appends take
   no lock; opening the first segment takes the connection lock inside it
   (for the owner file), and so does close (to copy the log into the table).
2. ``Process.lock`` (a ``ConnectionLock``, reentrant): the connection, one
   operation at a time (``Database.hold``). The fork hook takes it in the
   parent, for each open spool, and lets go after the fork.
3. ``_owners._tokens_lock``: the owner tokens this process holds; taken
   inside the connection lock, and nothing is taken inside it.
4. ``_process._spools_lock``: the registry of open spools; taken alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._spool_protocol import Spool
from ._dead import DeadLetter
from ._encoding import Data
from ._sqlite import SqliteSpool

# Public before the package was split, not in __all__: they keep their import path.
from ._connection import APPLICATION_ID as APPLICATION_ID  # isort: skip
from ._connection import SCHEMA_VERSION as SCHEMA_VERSION  # isort: skip
from ._encoding import Pair as Pair  # isort: skip
from ._encoding import Row as Row  # isort: skip
from ._owners import QUARANTINED as QUARANTINED  # isort: skip
from ._wal import LOG_SEGMENT_BYTES as LOG_SEGMENT_BYTES  # isort: skip

__all__ = ["Data", "DeadLetter", "PostgresSpool", "RedisSpool", "Spool", "SqliteSpool"]

if TYPE_CHECKING:
    from ._postgres import PostgresSpool
    from ._redis import RedisSpool


def __getattr__(name: str) -> object:
    # The spools on servers import their clients (psycopg, redis) only when asked for.
    if name == "PostgresSpool":
        from ._postgres import PostgresSpool

        return PostgresSpool
    if name == "RedisSpool":
        from ._redis import RedisSpool

        return RedisSpool
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
