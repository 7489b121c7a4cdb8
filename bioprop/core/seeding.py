"""Seeds salted by purpose, so that streams drawn for different things never coincide.

Without a salt, ``linear_teacher(seed=0)`` and ``Circuit(seed=0)`` would both start a
``torch.Generator`` at 0 and draw uniform numbers first: the student's first weights would
be a scaled copy of the teacher's.  ``derive(seed, "data")`` gives each purpose its own
stream; the same (seed, purpose) always gives the same number.
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["derive", "generator"]


def derive(seed: int, purpose: str, *extra: int) -> int:
    """A 63-bit seed from ``seed``, a purpose name and optional integers (e.g. an epoch)."""
    text = ":".join([purpose, str(int(seed)), *(str(int(e)) for e in extra)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, purpose: str, *extra: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive`."""
    return torch.Generator().manual_seed(derive(seed, purpose, *extra))
