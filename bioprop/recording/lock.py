"""Locks (one writer per recording, one sweep per folder, one attempt per run), and only
recordings get replaced.

Both locks write the same holder record (:func:`holder_record`: pid, host, start time,
command) and refuse a second holder with the same message (:func:`describe_holder`), raising
a :class:`LockedError`.

:class:`WriterLock` is an exclusive ``flock`` on a hidden file beside the recording
(``.NAME.lock``), taken before anything is created, truncated or continued, and held until
the writer closes.  It holds who writes (pid, host, start time, command), so a second writer
is refused with a message naming the running one.  The kernel drops the lock when its holder
dies, even by SIGKILL, so a killed run never blocks the next one (its lock file stays, empty
of meaning, and is reused).

:class:`FileLock` is a file created exclusively (``O_CREAT | O_EXCL``, atomic on local and
NFS v3+ file systems) — the lock of a sweep's folder and of a run's attempt, which workers on
other hosts must see.  It is stale — taken over without asking — when its holder ran on this
host and is gone (a killed sweep or worker), or when it has not been refreshed
(:meth:`FileLock.touch`) for ``stale_after`` seconds (a holder on another host that died).

:func:`check_replaceable` refuses a path that holds something bioprop did not write: only a
file whose root says ``Conventions = bioprop-recording-1`` (or an empty file) is replaced.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from bioprop.recording.provenance import timestamp
from bioprop.recording.superblock import SIGNATURE

__all__ = [
    "CONVENTIONS",
    "LockedError",
    "RecordingLockedError",
    "WriterLock",
    "FileLock",
    "holder_record",
    "describe_holder",
    "lock_path",
    "conventions_of",
    "is_recording",
    "written_by_bioprop",
    "writer_of",
    "check_replaceable",
]

CONVENTIONS = "bioprop-recording-1"


class LockedError(RuntimeError):
    """The lock is held by a live holder."""


class RecordingLockedError(LockedError):
    """Another process is writing this recording."""


def holder_record() -> dict:
    """What a lock holder writes into its lock file: pid, host, start time (UTC), command."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": timestamp(),
        "command": " ".join(sys.argv)[:300],
    }


def _is_this_process(info: dict) -> bool:
    return info.get("pid") == os.getpid() and info.get("host") == socket.gethostname()


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of the recording at ``path``: ``.NAME.lock`` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


class _Lock:
    """A lock as a context manager: ``with lock:`` acquires it and releases it on exit."""

    def acquire(self):
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class WriterLock(_Lock):
    """Exclusive writer lock of the recording at ``path`` (a context manager)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.file = lock_path(self.path)
        self.fd: int | None = None

    def acquire(self) -> WriterLock:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(20):  # the file may be removed by a closing holder between open and lock
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise RecordingLockedError(
                    f"{self.path} is being written by {describe_holder(holder)}; wait for it to "
                    "finish (bioprop.load can read it meanwhile) or record to another path"
                ) from None
            except OSError as exc:  # a filesystem without flock: no lock, but say so
                os.close(fd)
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    return self
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.file).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(holder_record()).encode(), 0)
                return self
            os.close(fd)
        raise RecordingLockedError(f"could not take the writer lock {self.file}")

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.file.unlink(missing_ok=True)
        finally:
            os.close(self.fd)
            self.fd = None

    @property
    def held(self) -> bool:
        return self.fd is not None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FileLock(_Lock):
    """An exclusive lock file at ``path`` for ``what`` (used in messages).

    Parameters
    ----------
    path
        The lock file.
    what
        What it guards, for messages (``"the sweep in runs/x"``).
    stale_after
        Seconds after the last :meth:`touch` when a holder on another host counts as gone
        (None: never; only same-host holders can be found dead).
    """

    def __init__(self, path: str | os.PathLike, what: str, stale_after: float | None = None):
        self.path = Path(path)
        self.what = what
        self.stale_after = stale_after
        self.held = False

    def holder(self) -> dict | None:
        """The holder's :func:`holder_record`, or None when unlocked."""
        try:
            return json.loads(self.path.read_text() or "{}")
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # being written right now: treat as held

    def _stale(self, info: dict) -> bool:
        if not info:
            return False
        if info.get("host") == socket.gethostname() and not _alive(int(info.get("pid", -1))):
            return True
        if self.stale_after is not None:
            try:
                return time.time() - self.path.stat().st_mtime > self.stale_after
            except FileNotFoundError:
                return True
        return False

    def acquire(self, wait: float = 0.0, poll: float = 0.2) -> FileLock:
        """Take the lock; wait up to ``wait`` seconds for a live holder, then raise
        :class:`LockedError` naming the holder and what to do."""
        deadline = time.monotonic() + wait
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                info = self.holder()
                if info is None:
                    continue  # released between our open and our read
                if self._stale(info):
                    self.path.unlink(missing_ok=True)
                    continue
                if time.monotonic() < deadline:
                    time.sleep(poll)
                    continue
                raise LockedError(
                    f"{self.what} is in use by another process ({describe_holder(info)}); wait "
                    f"for it to finish or choose another folder; if nothing is running there, "
                    f"delete {self.path}"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(holder_record(), f)
            self.held = True
            return self

    def touch(self) -> None:
        """Refresh the lock (a heartbeat for :attr:`stale_after`)."""
        if self.held:
            try:
                os.utime(self.path)
            except FileNotFoundError:
                pass

    def release(self) -> None:
        """Remove the lock if this process holds it."""
        if not self.held:
            return
        if _is_this_process(self.holder() or {}):
            self.path.unlink(missing_ok=True)
        self.held = False


def _read(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def describe_holder(info: dict) -> str:
    """'pid 123 on host h since 2026-...' from a lock file's contents."""
    if not info:
        return "another process (it has not said which yet)"
    return (
        f"pid {info.get('pid', '?')} on host {info.get('host', '?')} since "
        f"{info.get('started', '?')} ({info.get('command', '?')})"
    )


def writer_of(path: str | os.PathLike) -> dict | None:
    """Who holds the writer lock of the recording at ``path`` (pid, host, started,
    command), or None when no process is writing it."""
    try:
        fd = os.open(lock_path(path), os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read(fd) or {"pid": "?"}
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


def conventions_of(path: str | os.PathLike) -> str | None:
    """The ``Conventions`` root attribute of an HDF5 file (None: absent, or not HDF5).

    Opens as a SWMR reader, so a file being written or left by a killed writer answers."""
    import h5py

    try:
        with open(path, "rb") as fh:
            if fh.read(8) != SIGNATURE:
                return None
    except OSError:
        return None
    for swmr in (True, False):
        try:
            with h5py.File(path, "r", swmr=swmr, locking=False) as f:
                v = f.attrs.get("Conventions")
            return v.decode() if isinstance(v, bytes) else (None if v is None else str(v))
        except Exception:  # noqa: BLE001, S112 - a broken file: try the other mode
            continue
    return None


def is_recording(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file bioprop wrote (a recording: ``Conventions`` says so)."""
    return conventions_of(path) == CONVENTIONS


def check_replaceable(path: str | os.PathLike) -> None:
    """Refuse to replace ``path`` unless it is absent, empty or a bioprop recording."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir():
        raise IsADirectoryError(
            f"Record path {path} is a directory; give a file name such as {path / 'run.h5'}"
        )
    if not path.is_file():
        raise FileExistsError(f"Record path {path} exists and is not a regular file")
    if path.stat().st_size == 0 or is_recording(path):
        return
    raise FileExistsError(
        f"Record path {path} holds a file bioprop did not write (no Conventions = "
        f"{CONVENTIONS!r}); bioprop will not overwrite it: choose another path, or remove the "
        "file yourself if you mean to replace it"
    )


def written_by_bioprop(path: str | os.PathLike) -> bool:
    """Whether bioprop wrote the HDF5/NetCDF file at ``path``: its ``Conventions`` starts
    with ``bioprop-`` (recordings, summaries), or it is a ``compare`` summary from before
    summaries said so (variables ``final_loss`` and ``angle_to_bp`` over ``rule``, ``seed``)."""
    import h5py

    c = conventions_of(path)
    if c is not None:
        return c.startswith("bioprop-")
    try:
        with h5py.File(path, "r", locking=False) as f:
            return {"final_loss", "angle_to_bp", "rule", "seed"} <= set(f)
    except Exception:  # noqa: BLE001 - unreadable: not ours
        return False
