"""Appending rows to a recording so that a kill at any moment loses only the unfinished
record.

The file is open in HDF5's single-writer/multiple-reader (SWMR) mode: HDF5 then writes its
metadata in an order that keeps the file's structure consistent at every moment (a reader —
or the next process after a SIGKILL — never sees a pointer to something not yet written),
and readers may open the file while it grows.  On top of that, records are all-or-nothing:

1. every variable of the record gets its new rows (the datasets grow past the committed
   count);
2. ``flush`` — the rows and the datasets' new extents reach the file;
3. the counter ``/committed_rows`` (one contiguous dataset, one write) gets the new counts;
4. ``flush`` again.

A kill before step 4 ends leaves the old counts, and :func:`bioprop.load` reads every
variable only up to its group's count, so the variables of one step always have the same
length.  Rows are overwritten, not appended, after a failed record or a truncation.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import h5py
import numpy as np

from bioprop.recording.files import describe_os_error
from bioprop.recording.schema import COUNTER

__all__ = ["Rows", "Row", "open_swmr_writer", "is_no_space", "RecordingFullError"]

Key = tuple[str, str]  # (group, growing dimension)


#: per-dataset chunk cache of a recording being written (bytes): enough for the 1024-row
#: chunks of the scalar series, which are written a row at a time
CHUNK_CACHE_BYTES = 256 * 1024


class RecordingFullError(OSError):
    """The disk holding a recording is full; the records committed so far are kept."""


def is_no_space(exc: BaseException) -> bool:
    """Whether an error (h5py wraps HDF5's) comes from a full disk."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return True
    text = str(exc)
    return "No space left on device" in text or "errno = 28" in text


def open_swmr_writer(path: Path) -> h5py.File:
    """Open a laid-out recording for writing in SWMR mode (readers may open it meanwhile).

    HDF5's own file lock is off: :class:`bioprop.recording.lock.WriterLock` keeps writers
    apart, and SWMR keeps readers safe.  Each dataset's chunk cache is
    :data:`CHUNK_CACHE_BYTES`: records are written one row-chunk at a time and never read
    back, so a chunk only needs the cache while it is written; HDF5's default (1 MiB per
    dataset, filled with old rows) let a long run's memory grow by ~100 MB."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V110, h5py.h5f.LIBVER_V110)
    fapl.set_file_locking(False, True)
    fapl.set_cache(0, 521, CHUNK_CACHE_BYTES, 0.75)  # (unused, slots, bytes, w0)
    fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDWR | h5py.h5f.ACC_SWMR_WRITE, fapl)
    return h5py.File(fid)


class Row:
    """Writes rows of one HDF5 dataset through h5py's low-level API (the high-level
    ``dataset[i] = x`` costs ~0.2 ms of selection bookkeeping per call)."""

    __slots__ = ("ds", "shape", "dtype", "mspace")

    def __init__(self, ds: h5py.Dataset):
        self.ds = ds
        self.shape = ds.shape[1:]
        self.dtype = ds.dtype
        self.mspace = h5py.h5s.create_simple((1, *self.shape)) if self.shape else None

    def grow(self, n: int) -> None:
        self.ds.id.set_extent((n, *self.shape))

    def write(self, i: int, value) -> None:
        arr = np.ascontiguousarray(np.broadcast_to(np.asarray(value, dtype=self.dtype), self.shape))
        fspace = self.ds.id.get_space()
        fspace.select_hyperslab((i, *([0] * len(self.shape))), (1, *self.shape))
        mspace = self.mspace if self.mspace is not None else h5py.h5s.create_simple((1,))
        self.ds.id.write(mspace, fspace, arr.reshape((1, *self.shape)))

    def write_rows(self, start: int, values: np.ndarray) -> None:
        self.ds[start : start + len(values)] = values


class Rows:
    """The growing side of a recording open for writing: per (group, dimension) the
    variables growing along it, the rows written (``count``) and the rows committed."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.h5 = open_swmr_writer(self.path)
        try:
            if COUNTER not in self.h5:
                raise ValueError(
                    f"{self.path} was written by an older bioprop (no /{COUNTER}); it cannot be "
                    "continued: start a new recording"
                )
            self.counter = self.h5[COUNTER]
            rows_of = json.loads(self.counter.attrs["rows_of"])
            counts = self.counter[()]
            self.keys: list[Key] = [(gp, dim) for gp, dim, _ in rows_of]
            self.rows: dict[Key, dict[str, Row]] = {}
            for gp, dim, names in rows_of:
                g = self.h5[gp] if gp else self.h5
                self.rows[(gp, dim)] = {name: Row(g[name]) for name in names}
            self.committed: dict[Key, int] = {
                k: int(n) for k, n in zip(self.keys, counts, strict=True)
            }
            self.count = dict(self.committed)
        except BaseException:
            self.h5.close()
            raise
        self.broken: BaseException | None = None

    # -- growing ---------------------------------------------------------------------------
    def grow(self, key: Key, k: int = 1) -> int:
        """Grow every variable of ``key`` by ``k`` rows past the rows written; returns the
        index of the first new row (not counted until :meth:`advance`)."""
        n = self.count[key]
        for r in self.rows[key].values():
            r.grow(n + k)
        return n

    def advance(self, key: Key, k: int = 1) -> None:
        self.count[key] += k

    def rollback(self) -> None:
        """Forget rows written since the last commit (a record that failed half-way)."""
        self.count = dict(self.committed)

    def steps(self, key: Key) -> np.ndarray:
        """The ``step`` values of the rows written along ``key``."""
        return self.rows[key]["step"].ds[: self.count[key]]

    def truncate_after(self, last_step: int) -> None:
        """Keep only rows with step <= ``last_step`` in every group growing along ``step``
        (continuing after a checkpoint) and commit that."""
        for key in self.keys:
            if key[1] == "step" and "step" in self.rows[key]:
                keep = int(np.searchsorted(self.steps(key), last_step, side="right"))
                self.count[key] = min(self.count[key], keep)
                for r in self.rows[key].values():
                    r.grow(self.count[key])
        self.commit()

    # -- committing ------------------------------------------------------------------------
    def commit(self) -> None:
        """Make the rows written so far part of the recording (steps 2–4 above)."""
        if self.broken is not None:
            raise self.broken
        try:
            self.h5.flush()
            if self.count != self.committed:
                self.counter[...] = np.array([self.count[k] for k in self.keys], np.int64)
                self.h5.flush()
                self.committed = dict(self.count)
        except Exception as exc:
            raise self.fail(exc) from exc

    def fail(self, exc: BaseException) -> BaseException:
        """The error to raise for a failed write (a full disk named as such); the file takes
        no more writes after it."""
        if is_no_space(exc):
            err = RecordingFullError(
                errno.ENOSPC,
                describe_os_error(OSError(errno.ENOSPC, "no space"), self.path)
                + f"; the {self._records()} committed before are kept",
            )
        elif isinstance(exc, OSError):
            err = OSError(exc.errno, f"could not write {self.path}: {exc}")
        else:
            return exc
        self.broken = err
        return err

    def _records(self) -> str:
        n = self.committed.get(("metrics", "step"))
        return f"{n} record(s)" if n is not None else "records"

    def close(self, commit: bool = True) -> None:
        """Commit what was written (unless broken) and close.  After a failure (a full
        disk) the datasets are first cut back to their committed rows, which drops the rows
        HDF5 could not write from its caches, so that closing needs no new space; then
        nothing raises (the file keeps its committed records)."""
        try:
            if commit and self.broken is None:
                self.commit()
        finally:
            if self.broken is not None:
                self._cut_to_committed()
            try:
                self.h5.close()
            except Exception:  # noqa: BLE001 - a full disk: the committed rows are on disk
                if self.broken is None:
                    raise

    def _cut_to_committed(self) -> None:
        for key, rows in self.rows.items():
            for r in rows.values():
                try:
                    r.grow(self.committed[key])
                except Exception:  # noqa: BLE001, S112 - best effort before closing
                    continue
