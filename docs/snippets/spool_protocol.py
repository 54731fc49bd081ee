"""The spool page's outline of a spool of your own: ``python docs/snippets/spool_protocol.py``.

The class has the protocol's members and no body, so the check passes;
a dispatcher then refuses an object without them. spool_protocol.out is
what it prints.
"""

# [start spool-protocol]
from batchdispatch.spool import Spool


class MySpool:                       # no base class: the protocol is structural
    durable = False

    def append(self, key, item): ...              # -> negative id, held by this owner
    def put(self, pairs, *, claim=False, timeout=None): ...   # -> [positive id, ...]
    def claim(self, limit, *, timeout=None): ...  # -> [(id, key, item), ...], oldest first
    def ack(self, row_ids, *, timeout=None): ...  # -> how many this owner held and deleted
    def release(self, row_ids, *, timeout=None): ...  # -> how many this owner held and freed
    def bury(self, entries, *, error=None, attempts=0, timeout=None): ...  # -> dead letters made
    def close(self): ...             # not in the protocol, but the application needs it


assert isinstance(MySpool(), Spool)
# [end spool-protocol]

from batchdispatch import BackgroundDispatcher

try:
    BackgroundDispatcher(print, spool=object())
except TypeError as exc:
    print(f"TypeError: {exc}")
