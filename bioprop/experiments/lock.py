"""Lock files: one sweep per output folder, one attempt per run.

A lock is a file created exclusively (``O_CREAT | O_EXCL``, atomic on local and NFS v3+
file systems) holding the holder's host, process id and start time.  A lock is stale —
taken over without asking — when its holder ran on this host and is gone (a killed sweep or
worker), or when it has not been refreshed (:meth:`FileLock.touch`) for ``stale_after``
seconds (a holder on another host that died).
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["FileLock", "LockedError"]


class LockedError(RuntimeError):
    """The lock is held by a live holder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FileLock:
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
        """The holder's ``{"host", "pid", "since"}``, or None when unlocked."""
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

    def acquire(self, wait: float = 0.0, poll: float = 0.2) -> None:
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
                    f"{self.what} is in use by another process (pid {info.get('pid', '?')} on "
                    f"{info.get('host', '?')}, since {info.get('since', '?')}); wait for it to "
                    f"finish or choose another folder; if nothing is running there, delete "
                    f"{self.path}"
                ) from None
            with os.fdopen(fd, "w") as f:
                json.dump(
                    {
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                        "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    },
                    f,
                )
            self.held = True
            return

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
        info = self.holder() or {}
        if info.get("pid") == os.getpid() and info.get("host") == socket.gethostname():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
