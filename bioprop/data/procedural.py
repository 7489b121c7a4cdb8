"""Procedural tasks generated from a seed (no files, no network).

* ``linear-teacher`` — Lillicrap et al. 2016, Fig. 1: y* = T x with
  T ∈ U[-1, 1]^{10×30} fixed and x ~ N(0, I).
* ``nonlinear-teacher`` — a fixed random tanh network 30-20-10 generates
  the targets, y* = W₂ tanh(W₁ x), W ~ U[-1, 1]/√fan_in, x ~ N(0, I).
"""

from __future__ import annotations

import torch

from bioprop.core.seeding import generator
from bioprop.data.base import Dataset

__all__ = ["linear_teacher", "nonlinear_teacher"]


def _check_sizes(name: str, **sizes: int) -> None:
    for k, v in sizes.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: {k} must be a positive integer, got {v!r}")


def linear_teacher(
    n_in: int = 30, n_out: int = 10, n_train: int = 2000, n_test: int = 500, seed: int = 0
) -> Dataset:
    """y* = T x, T ∈ U[-1, 1]^{n_out×n_in}, x ~ N(0, I) (Lillicrap et al. 2016, Fig. 1)."""
    _check_sizes("linear_teacher", n_in=n_in, n_out=n_out, n_train=n_train, n_test=n_test)
    g = generator(seed, "data")
    T = torch.rand(n_out, n_in, generator=g) * 2 - 1
    x = torch.randn(n_train + n_test, n_in, generator=g)
    y = x @ T.t()
    return Dataset(
        "linear-teacher",
        x[:n_train],
        y[:n_train],
        x[n_train:],
        y[n_train:],
        "regression",
        meta={"seed": seed, "teacher": "T ~ U[-1,1], y = T x"},
    )


def nonlinear_teacher(
    sizes: tuple[int, ...] = (30, 20, 10), n_train: int = 2000, n_test: int = 500, seed: int = 0
) -> Dataset:
    """Targets from a fixed random tanh network with layer ``sizes`` (linear output)."""
    _check_sizes("nonlinear_teacher", n_train=n_train, n_test=n_test)
    if len(sizes) < 2:
        raise ValueError(f"nonlinear_teacher: sizes needs at least 2 entries, got {sizes}")
    g = generator(seed, "data")
    ws = [
        (torch.rand(b, a, generator=g) * 2 - 1) * (3.0 / a) ** 0.5
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    x = torch.randn(n_train + n_test, sizes[0], generator=g)
    h = x
    for i, w in enumerate(ws):
        h = h @ w.t()
        if i < len(ws) - 1:
            h = torch.tanh(h)
    return Dataset(
        "nonlinear-teacher",
        x[:n_train],
        h[:n_train],
        x[n_train:],
        h[n_train:],
        "regression",
        meta={"seed": seed, "teacher_sizes": list(sizes)},
    )
