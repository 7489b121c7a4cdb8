"""Writing result files so that a crash never leaves half of one: a temporary name in the
same folder, then an atomic rename."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "describe_os_error"]


def describe_os_error(exc: OSError, path: os.PathLike | str) -> str:
    """One sentence naming the path and the cause (e.g. "no space left on device")."""
    if exc.errno == errno.ENOSPC:
        cause = "no space left on device"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        cause = "permission denied"
    else:
        cause = exc.strerror or str(exc)
    return f"could not write {path}: {cause}"


def atomic_write(path: os.PathLike | str, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path`` and rename it to ``path``.

    A process killed while writing leaves either the old file or the new one, never a
    partial one; on an error (a full disk) the temporary file is removed and an ``OSError``
    naming the path and the cause is raised."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, describe_os_error(exc, path)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
