"""This process's own TCP connections, as Linux lists them (``/proc/self/fd`` and ``/proc/net/tcp``).

A sink's connection seen from outside the sink: whether the process still
holds a socket connected to a server's port, without asking the sink for
its session or its links. Linux only (the tests that use it run there).
"""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

#: The states of /proc/net/tcp's ``st`` column that the tests name.
STATES = {"01": "ESTABLISHED", "06": "TIME_WAIT", "08": "CLOSE_WAIT", "0A": "LISTEN"}


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


def _tcp_table() -> Dict[str, Tuple[int, int, str]]:
    """inode -> (local port, remote port, state) of every TCP socket of this network namespace."""
    table: Dict[str, Tuple[int, int, str]] = {}
    for name in ("/proc/self/net/tcp", "/proc/self/net/tcp6"):
        try:
            with open(name) as lines:
                next(lines)  # the header
                for line in lines:
                    fields = line.split()
                    local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                    table[inode] = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16),
                                    STATES.get(state, state))
        except FileNotFoundError:
            continue  # no IPv6
    return table


def connections_to(port: int) -> List[Tuple[int, str]]:
    """(local port, state) of each TCP socket this process holds open to *port*, sorted."""
    table = _tcp_table()
    found = [table[inode] for inode in _socket_inodes() if inode in table]
    return sorted((local, state) for local, remote, state in found if remote == port)
