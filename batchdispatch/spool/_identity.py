"""Owner identities of the networked spools, and telling a dead owner on this host at once.

An owner of a Redis or PostgreSQL spool is one spool object in one
process. Its token says where that process runs: the host's name, the
kernel's boot id, the process's pid namespace and its pid, then random
bits that make it unique. Another owner elsewhere can only learn that it
died when its lease runs out; an owner on the same host, booted the same
and in the same pid namespace, asks the kernel whether the pid still
exists, and frees a dead owner's pairs at once, as SqliteSpool's owner
locks do. A pid reused by another process only makes the owner look
alive: its pairs then wait for its lease, never are they handed out twice
while it lives.
"""

from __future__ import annotations

import functools
import os
import secrets
import socket
from typing import Optional


@functools.lru_cache(maxsize=1)
def _machine() -> str:
    """This host, boot and pid namespace, as a token prefix ('-' where unknown)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip().replace("-", "")[:12]
    except OSError:
        boot = "-"
    try:
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        namespace = "-"
    host = socket.gethostname().replace(":", "_") or "-"
    return f"{host}:{boot}:{namespace}"


def new_token() -> str:
    """A token for a new owner in this process: ``host:boot:pidns:pid:random``."""
    return f"{_machine()}:{os.getpid()}:{secrets.token_hex(6)}"


def dead_here(token: str) -> bool:
    """Whether *token* names an owner of this host (same boot and pid namespace) whose
    process no longer exists. False where that cannot be told: its lease decides."""
    machine, _, rest = token.rpartition(":")[0].rpartition(":")
    if not machine or machine != _machine() or "-" in machine.split(":"):
        return False
    pid = _pid(rest)
    if pid is None or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it exists, run by another user
        return False
    return False


def _pid(text: str) -> Optional[int]:
    return int(text) if text.isdigit() else None
