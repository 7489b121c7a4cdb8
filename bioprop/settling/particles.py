"""Persistent particles: each training example's free phase starts where its last one ended.

Scellier & Bengio's code keeps, per training example, the free fixed point it reached the
last time it was presented, and starts the next free phase from there (fewer Euler steps
to the fixed point as the weights change slowly).  A rule sees batches, not dataset
indices, so :class:`ParticleBank` keys each example by a hash of its input row.
"""

from __future__ import annotations

import torch

__all__ = ["ParticleBank"]


class ParticleBank:
    """Free-phase states per training example, keyed by a hash of the example's input bytes.

    The bank lives in memory (it is not checkpointed); its buffers grow by doubling."""

    def __init__(self) -> None:
        self.slots: dict[int, int] = {}
        self.store: dict[str, torch.Tensor] = {}
        self.count = 0

    @staticmethod
    def keys(x: torch.Tensor) -> list[int]:
        """One key per row of ``x`` (the hash of its bytes)."""
        rows = x.detach().to("cpu").contiguous().numpy()
        return [hash(row.tobytes()) for row in rows]

    def get(self, keys: list[int]) -> dict[str, torch.Tensor] | None:
        """The stored states of the examples ``keys`` (zeros for unseen ones), or None
        when none of them has been seen."""
        idx = [self.slots.get(k, -1) for k in keys]
        if self.count == 0 or all(i < 0 for i in idx):
            return None
        rows = torch.tensor(idx)
        known = rows >= 0
        out = {}
        for name, buf in self.store.items():
            s = buf.new_zeros(len(keys), buf.shape[1])
            s[known.to(buf.device)] = buf[rows[known].to(buf.device)]
            out[name] = s
        return out

    def put(self, keys: list[int], u: dict[str, torch.Tensor]) -> None:
        """Store the states ``u`` (per population, batch-first) of the examples ``keys``."""
        idx = []
        for k in keys:
            i = self.slots.get(k)
            if i is None:
                i = self.slots[k] = self.count
                self.count += 1
            idx.append(i)
        rows = torch.tensor(idx)
        for name, t in u.items():
            buf = self.store.get(name)
            if buf is None or buf.shape[0] < self.count:
                cap = max(self.count, 2 * (buf.shape[0] if buf is not None else 512))
                new = t.new_zeros(cap, t.shape[1])
                if buf is not None:
                    new[: buf.shape[0]] = buf
                self.store[name] = buf = new
            buf[rows.to(buf.device)] = t.detach()

    def __len__(self) -> int:
        return self.count
