"""Truncated unrolling: a sequence of length L cut into windows of T steps.

Window k covers steps [kT, min((k+1)T, L)); its *boundaries* are the states s_{kT} (start)
and s_{(k+1)T} (end).  The state is carried across windows; gradients are not — each
window's backward pass starts from a detached copy of its start state.  Boundary b
(b = 1 … K−1 for K windows) is the end state of window b−1 and the start state of window b.
"""

from __future__ import annotations

__all__ = ["windows", "check_truncation", "n_boundaries"]


def check_truncation(T: int) -> int:
    """T as an int; ``ValueError`` unless it is an integer ≥ 1."""
    if isinstance(T, bool) or not isinstance(T, int):
        raise ValueError(f"truncation length T must be an integer >= 1, got {T!r}")
    if T < 1:
        raise ValueError(f"truncation length T must be >= 1 (steps per window), got {T}")
    return T


def windows(length: int, T: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the windows of T steps covering ``range(length)``; the last
    window is shorter when T does not divide ``length``."""
    check_truncation(T)
    if length < 1:
        raise ValueError(f"cannot cut a sequence of length {length} into windows")
    return [(a, min(a + T, length)) for a in range(0, length, T)]


def n_boundaries(length: int, T: int) -> int:
    """Number of inner window boundaries (where a synthetic gradient enters)."""
    return len(windows(length, T)) - 1
