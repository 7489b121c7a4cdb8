"""Read and write IDX files, the format of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number ``00 00 <dtype code> <ndim>``, then
``ndim`` big-endian uint32 sizes, then the values in C order, big-endian.
Files may be gzip-compressed; :func:`read_idx` recognises gzip by its magic
bytes ``1f 8b``, whatever the file is called.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ["IDXError", "read_idx", "write_idx"]

#: IDX dtype code -> big-endian numpy dtype.
DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in DTYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"


class IDXError(ValueError):
    """An IDX file that cannot be read: bad magic number, truncated, or corrupt."""


def _gunzip(data: bytes, path: Path) -> bytes:
    """Decompress all gzip members of ``data`` (zlib directly: twice as fast as gzip)."""
    parts = []
    while data:
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        try:
            parts.append(d.decompress(data))
        except zlib.error as e:
            raise IDXError(
                f"{path}: gzip data is corrupt ({e}); delete the file and get it again"
            ) from None
        if not d.eof:
            raise IDXError(
                f"{path}: gzip data is truncated (the stream ends early); delete the file "
                f"and get it again"
            )
        data = d.unused_data.lstrip(b"\0")  # gzip allows zero padding between members
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _read_bytes(path: Path) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    return _gunzip(data, path) if data[:2] == _GZIP_MAGIC else data


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (raw or gzip-compressed) into a numpy array.

    Parameters
    ----------
    path
        The file. Gzip compression is detected from the content, not the name.

    Returns
    -------
    numpy.ndarray
        An array of the shape stored in the header, in native byte order
        (``uint8`` for MNIST images and labels).

    Raises
    ------
    IDXError
        If the magic number is wrong, the dtype code unknown, or the file holds
        fewer (or more) bytes than its header announces. The message names the file.
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IDXError(f"{path}: only {len(data)} bytes, too short to be an IDX file")
    zero0, zero1, code, ndim = data[:4]
    if zero0 != 0 or zero1 != 0 or code not in DTYPES or ndim == 0:
        raise IDXError(
            f"{path}: not an IDX file: magic number is {data[:4].hex(' ')}, expected "
            f"00 00 <dtype code, one of {', '.join(f'{c:02x}' for c in DTYPES)}> "
            f"<ndim >= 1>; is this the right file?"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(
            f"{path}: truncated: header announces {ndim} dimensions ({header} header "
            f"bytes) but the file has {len(data)} bytes"
        )
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = DTYPES[code]
    expected = header + math.prod(shape) * dtype.itemsize  # Python ints: no overflow
    if expected >= 2**63:
        raise IDXError(
            f"{path}: corrupt header: shape {shape} of {dtype.name} would be {expected} bytes, "
            "more than any file can hold; delete the file and download it again"
        )
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing bytes"
        raise IDXError(
            f"{path}: {what}: header announces shape {shape} of {dtype.name} "
            f"({expected} bytes with the header) but the file has {len(data)} bytes; "
            f"delete the file and download it again"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    # A writable copy in native byte order (frombuffer on bytes is read-only).
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file; gzip-compressed when ``path`` ends with ``.gz``.

    Parameters
    ----------
    path
        Destination file.
    array
        At least 1-D, of dtype uint8, int8, int16, int32, float32 or float64.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=")
    if native not in _CODES:
        raise ValueError(
            f"write_idx({path}): dtype {array.dtype} has no IDX code; use one of "
            f"{', '.join(dt.name for dt in DTYPES.values())}"
        )
    if not 1 <= array.ndim <= 255:
        raise ValueError(
            f"write_idx({path}): array must have 1 to 255 dimensions, got {array.ndim}"
        )
    code = _CODES[native]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + np.ascontiguousarray(array, dtype=DTYPES[code]).tobytes()
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path
