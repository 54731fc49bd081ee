"""The write-ahead log's records and files: how a durable append lies on disk.

A record is RS, a CRC-32 checksum in hex, a tab, a payload and a newline.
The payload is ``i<TAB>seq<TAB>key<TAB>item`` (an item) or
``a<TAB>seq,seq,...`` (acks). A kill may cut the record being written
short, and the next one (another thread's) then follows it directly:
splitting on RS and checking each checksum keeps every whole record and
drops the cut one. This module owns that format, reading a segment's
unacked items back, and the file helpers that copy a segment whole.
"""

from __future__ import annotations

import base64
import contextlib
import os
import zlib
from typing import Dict, Iterable, List, Set, Tuple

from ._encoding import Data

#: Ends the temporary name a removed segment is copied to before it is renamed to its path.
COPY_SUFFIX = ".copy"
#: Starts every log record. JSON text never holds it raw (it escapes control
#: characters), and whatever else a record holds is base64.
RS = b"\x1e"


def item_body(data: Data, json_text: bool) -> bytes:
    """How an item's stored *data* is written in its record: tagged, and free of tabs and newlines."""
    if isinstance(data, str) and json_text:
        return b"j" + data.encode()  # JSON text: no raw tab, newline or record separator
    if isinstance(data, str):
        return b"s" + base64.b64encode(data.encode())
    return b"b" + base64.b64encode(data)


def item_payload(seq: int, key: str, body: bytes) -> bytes:
    """The payload of an item's record: its sequence number, its encoded key and its body."""
    return b"i\t%d\t%s\t%s" % (seq, key.encode(), body)


def ack_payload(seqs: Iterable[int]) -> bytes:
    """The payload of a record that acks the items numbered *seqs*."""
    return b"a\t" + b",".join(b"%d" % seq for seq in seqs)


def is_copy(number: str) -> bool:
    """Whether the end of a log file's name, after its token, is that of a temporary copy."""
    return number.endswith(COPY_SUFFIX) and number[:-len(COPY_SUFFIX)].isdigit()


def read_all(fd: int, offset: int = 0) -> bytes:
    """The content of the file open on *fd* from *offset* on, read with os.pread."""
    chunks: List[bytes] = []
    while True:
        chunk = os.pread(fd, 1 << 20, offset)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        offset += len(chunk)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_copy(path: str, content: bytes, keep_partial: bool = False) -> int:
    """Write *content* to a temporary file and rename it to *path*; return a descriptor open on it
    as a log segment is (appended to), for the caller to close.

    A copy that fails leaves nothing behind (the temporary file is
    unlinked), unless *keep_partial*: the last resort of close, which
    renames what was written, cut after its last whole record, and raises.
    """
    temporary = path + COPY_SUFFIX
    fd = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o600)
    written = 0
    try:
        view = memoryview(content)
        while written < len(content):
            written += os.write(fd, view[written:])
        os.rename(temporary, path)
    except BaseException:
        whole = content.rfind(b"\n", 0, written) + 1
        try:
            if keep_partial and whole:
                os.ftruncate(fd, whole)
                os.rename(temporary, path)
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(temporary)
        raise
    return fd


def record(payload: bytes) -> bytes:
    return b"%s%08x\t%s\n" % (RS, zlib.crc32(payload), payload)


def read_log(path: str) -> List[Tuple[str, Data]]:
    """The unacked items of the log segment at *path*: see parse_log."""
    with open(path, "rb") as f:
        return parse_log(f.read())


def parse_log(content: bytes, acked_before: Iterable[int] = ()) -> List[Tuple[str, Data]]:
    """The unacked items of one log segment's *content*, in the order they were appended:
    (key, data) pairs. *acked_before*: sequence numbers acked besides the segment's ack records."""
    return list(unacked_items(content, acked_before).values())


def unacked_items(content: bytes, acked_before: Iterable[int] = ()) -> Dict[int, Tuple[str, Data]]:
    """The unacked items of one log segment's *content*, by sequence number, in order (see parse_log).

    Records that a kill cut short, or that are damaged, fail their checksum
    and are skipped; so are records of a kind this version does not know.
    """
    items: Dict[int, Tuple[str, Data]] = {}
    acked: Set[int] = set(acked_before)
    for chunk in content.split(RS)[1:]:
        if not chunk.endswith(b"\n"):
            continue
        checksum, _, payload = chunk[:-1].partition(b"\t")
        try:
            if int(checksum, 16) != zlib.crc32(payload):
                continue
            kind, _, rest = payload.partition(b"\t")
            if kind == b"i":
                seq, key, body = rest.split(b"\t", 2)
                tag, raw = body[:1], body[1:]
                data: Data
                if tag == b"j":
                    data = raw.decode()
                elif tag == b"s":
                    data = base64.b64decode(raw, validate=True).decode()
                elif tag == b"b":
                    data = base64.b64decode(raw, validate=True)
                else:
                    continue
                items[int(seq)] = (key.decode(), data)
            elif kind == b"a":
                acked.update(int(seq) for seq in rest.split(b","))
        except ValueError:  # a checksum that matched by chance over garbage (binascii.Error is one)
            continue
    return {seq: items[seq] for seq in sorted(items) if seq not in acked}


def ident(st: os.stat_result) -> Tuple[int, int]:
    """The (device, inode) of a file, to notice it removed or replaced at its path."""
    return st.st_dev, st.st_ino
