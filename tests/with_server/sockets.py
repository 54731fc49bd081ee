"""This process's own TCP connections, as Linux lists them (``/proc/self/fd`` and ``/proc/net/tcp``).

A sink's connection seen from outside the sink: whether the process still
holds a socket connected to a server's port, and whether the server has
sent something on it that nobody has read (a close, say), without asking
the sink for its session or its links. Linux only (the tests that use it
run there).
"""

from __future__ import annotations

import os
from typing import Dict, List, NamedTuple, Tuple

#: The states of /proc/net/tcp's ``st`` column that the tests name.
STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}


class Connection(NamedTuple):
    """One TCP socket of this process, seen from here."""

    local_port: int
    state: str  # "ESTABLISHED", "CLOSE_WAIT" (the other side closed it), ...
    unread: int  # bytes received that the process has not read yet


def _socket_inodes() -> List[str]:
    inodes = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # closed meanwhile (the listdir's own fd, say)
        if target.startswith("socket:["):
            inodes.append(target[len("socket:["):-1])
    return inodes


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)


def _tcp_table() -> Dict[str, Tuple[int, Connection]]:
    """inode -> (remote port, the socket) of every TCP socket of this network namespace."""
    table: Dict[str, Tuple[int, Connection]] = {}
    for name in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(name) as lines:
                next(lines)  # the header
                for line in lines:
                    fields = line.split()
                    local, remote, state, queues, inode = (*fields[1:5], fields[9])
                    unread = int(queues.split(":")[1], 16)
                    table[inode] = (_port(remote), Connection(_port(local), STATES.get(state, state), unread))
        except FileNotFoundError:
            continue  # no IPv6
    return table


def connections_to(port: int) -> List[Connection]:
    """Each TCP socket this process holds open to *port* (on any host), by local port."""
    table = _tcp_table()
    found = [table[inode] for inode in _socket_inodes() if inode in table]
    return sorted(connection for remote, connection in found if remote == port)
