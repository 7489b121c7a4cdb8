"""Reading and clearing the HDF5 superblock's "open for writing" flags.

A recording is written in HDF5's single-writer/multiple-reader (SWMR) mode, so a writer
killed at any moment leaves a file whose structure is consistent; but the superblock still
says "open for (SWMR) writing", and HDF5 refuses to open such a file for writing (or, other
than as a SWMR reader, for reading) until the flags are cleared — what the ``h5clear -s -i``
tool does.  bioprop clears them itself, only while it holds the recording's writer lock (so
no live writer is affected), before continuing a killed recording.

Superblock versions 2 and 3 (HDF5 file format specification §II.A)::

    signature (8) | version (1) | size of offsets (1) | size of lengths (1) | flags (1) |
    base address | extension address | end-of-file address | root object header | checksum (4)

The checksum is Bob Jenkins' lookup3 ``hashlittle`` over the preceding bytes (HDF5's
``H5_checksum_lookup3``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["SIGNATURE", "write_flags", "clear_write_flags", "lookup3"]

SIGNATURE = b"\x89HDF\r\n\x1a\n"
_M = 0xFFFFFFFF
_SEARCH = (0, 512, 1024, 2048, 4096, 8192)  # where a superblock may start (user blocks)


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _M


def lookup3(data: bytes, initval: int = 0) -> int:
    """Jenkins' lookup3 ``hashlittle`` of ``data`` (HDF5's metadata checksum)."""
    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & _M
    i = 0
    while n > 12:
        a = (a + int.from_bytes(data[i : i + 4], "little")) & _M
        b = (b + int.from_bytes(data[i + 4 : i + 8], "little")) & _M
        c = (c + int.from_bytes(data[i + 8 : i + 12], "little")) & _M
        for r1, r2, r3 in ((4, 6, 8), (16, 19, 4)):  # lookup3's mix(): two rounds of three
            a = (a - c) & _M ^ _rot(c, r1)
            c = (c + b) & _M
            b = (b - a) & _M ^ _rot(a, r2)
            a = (a + c) & _M
            c = (c - b) & _M ^ _rot(b, r3)
            b = (b + a) & _M
        n -= 12
        i += 12
    if n == 0:
        return c
    tail = bytes(data[i : i + n]) + bytes(12 - n)
    a = (a + int.from_bytes(tail[0:4], "little")) & _M
    b = (b + int.from_bytes(tail[4:8], "little")) & _M
    c = (c + int.from_bytes(tail[8:12], "little")) & _M
    for x, y, k in ((2, 1, 14), (0, 2, 11), (1, 0, 25), (2, 1, 16), (0, 2, 4), (1, 0, 14)):
        v = [a, b, c]
        v[x] = ((v[x] ^ v[y]) - _rot(v[y], k)) & _M
        a, b, c = v
    c = ((c ^ b) - _rot(b, 24)) & _M
    return c


def _find(fh) -> tuple[int, bytearray] | None:
    """(offset, bytes) of a version 2/3 superblock with 8-byte offsets, or None."""
    for at in _SEARCH:
        fh.seek(at)
        head = fh.read(48)
        if head[:8] == SIGNATURE:
            if len(head) == 48 and head[8] in (2, 3) and head[9] == 8:
                return at, bytearray(head)
            return None
    return None


def write_flags(path: str | os.PathLike) -> int | None:
    """The superblock's file-consistency flags (0: closed cleanly; bit 0: open for writing,
    bit 2: open for SWMR writing), or None for a file without a version 2/3 superblock."""
    with open(path, "rb") as fh:
        found = _find(fh)
    return None if found is None else found[1][11]


def clear_write_flags(path: str | os.PathLike) -> bool:
    """Mark a recording whose writer died as closed (``h5clear -s -i``): flags := 0 and the
    end-of-allocation address := at least the file's size, checksum recomputed.  Call only
    while holding the recording's writer lock.  Returns whether anything was changed."""
    path = Path(path)
    with open(path, "r+b") as fh:
        found = _find(fh)
        if found is None or found[1][11] == 0:
            return False
        at, sb = found
        if int.from_bytes(sb[44:48], "little") != lookup3(bytes(sb[:44])):
            raise OSError(f"{path}: the HDF5 superblock's checksum does not match; not touching it")
        base = int.from_bytes(sb[12:20], "little")
        eoa = int.from_bytes(sb[28:36], "little")
        size = os.fstat(fh.fileno()).st_size
        sb[11] = 0
        sb[28:36] = max(eoa, size - base).to_bytes(8, "little")
        sb[44:48] = lookup3(bytes(sb[:44])).to_bytes(4, "little")
        fh.seek(at)
        fh.write(sb)
        fh.flush()
        os.fsync(fh.fileno())
    return True
