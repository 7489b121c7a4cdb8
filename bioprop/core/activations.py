"""Activation functions f and their derivatives f'.

Each activation is written as r = f(u) for the pre-activation (membrane
potential) u of a rate population.  Learning rules need f'(u); where it is
cheaper, f' is computed from the rate r that the forward sweep already holds
(logistic: f' = r (1 - r); tanh: f' = 1 - r^2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["Activation", "Rectilinear", "get", "names", "rectilinear", "alternating_signs"]


@dataclass(frozen=True)
class Activation:
    """An activation ``f`` with its derivative ``fprime(u, r)``."""

    name: str
    f: Callable[[torch.Tensor], torch.Tensor]
    fprime: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    description: str

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        return self.f(u)

    def __repr__(self) -> str:
        return self.name


def _ones_like(u, r):
    return torch.ones_like(u)


_REGISTRY: dict[str, Activation] = {}


def _register(a: Activation) -> None:
    _REGISTRY[a.name] = a


_register(Activation("linear", lambda u: u, _ones_like, "f(u) = u"))
_register(Activation("tanh", torch.tanh, lambda u, r: 1.0 - r * r, "f(u) = tanh(u)"))
_register(
    Activation("logistic", torch.sigmoid, lambda u, r: r * (1.0 - r), "f(u) = 1 / (1 + exp(-u))")
)
_register(Activation("relu", torch.relu, lambda u, r: (u > 0).to(u.dtype), "f(u) = max(u, 0)"))
_register(
    Activation(
        "hard-sigmoid",
        lambda u: torch.clamp(u, 0.0, 1.0),
        lambda u, r: ((u > 0) & (u < 1)).to(u.dtype),
        "f(u) = min(max(u, 0), 1) (Scellier & Bengio 2017's rho)",
    )
)


def get(name: str | Activation) -> Activation:
    """Look up an activation by name (``linear``, ``tanh``, ``logistic``, ``relu``,
    ``hard-sigmoid``).  ``rectilinear`` needs a sign per unit: see :func:`rectilinear`."""
    if isinstance(name, (Activation, Rectilinear)):
        return name
    if name == "rectilinear":
        raise ValueError(
            "activation 'rectilinear' needs a sign per unit: give the population its signs "
            "(Population(..., activation='rectilinear', signs=[1, -1, ...])) or build it with "
            "bioprop.activations.rectilinear(signs)"
        )
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(sorted(_REGISTRY))}, "
            "or 'rectilinear' with a sign per unit"
        ) from None


def names() -> list[str]:
    """Names of the registered activations."""
    return sorted(_REGISTRY)


# -- rectilinear units: a sign per unit ------------------------------------------------------
class Rectilinear:
    """Rectilinear units (Balduzzi, Vanchinathan & Buhmann 2015): each unit j is a positive
    or a negative rectifier, r_j = s_j · max(u_j, 0) with s_j ∈ {+1, −1}, so
    f'(u_j) = s_j · 1[u_j > 0] (the unit's on/off *gate* 1_j times its sign).

    Unlike the other activations it is built per population (it holds that population's
    signs); :class:`~bioprop.core.population.Population` makes it for
    ``activation="rectilinear"``.  It has the same interface as :class:`Activation`
    (``name``, ``f``, ``fprime``, ``description``, calling it applies ``f``).
    """

    name = "rectilinear"
    description = "f(u) = s * max(u, 0), a sign s = +1 or -1 per unit (Balduzzi et al. 2015)"

    def __init__(self, signs):
        s = torch.as_tensor(signs)
        if s.dim() != 1 or s.numel() == 0:
            raise ValueError(
                f"rectilinear: signs must be a non-empty 1-D sequence (one per unit), got "
                f"shape {tuple(s.shape)}"
            )
        bad = sorted({float(v) for v in s.flatten().tolist()} - {1.0, -1.0})
        if bad:
            raise ValueError(
                f"rectilinear: every sign must be +1 or -1, got {bad[:5]}; pass 1 for a positive "
                "rectifier and -1 for a negative one"
            )
        self.signs = s.to(torch.float32)
        self._cast: dict[tuple, torch.Tensor] = {}

    def _s(self, u: torch.Tensor) -> torch.Tensor:
        key = (u.device, u.dtype)
        s = self._cast.get(key)
        if s is None:
            s = self._cast[key] = self.signs.to(device=u.device, dtype=u.dtype)
        return s

    def f(self, u: torch.Tensor) -> torch.Tensor:
        """r = s ⊙ max(u, 0)."""
        return torch.relu(u) * self._s(u)

    def fprime(self, u: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """f'(u) = s ⊙ 1[u > 0]."""
        return (u > 0).to(u.dtype) * self._s(u)

    def gate(self, u: torch.Tensor) -> torch.Tensor:
        """1[u > 0]: whether each unit is active (its sign does not enter)."""
        return (u > 0).to(u.dtype)

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        return self.f(u)

    def __repr__(self) -> str:
        return self.name


def rectilinear(signs) -> Rectilinear:
    """Rectilinear units with the given sign per unit (+1: max(u, 0), −1: −max(u, 0))."""
    return Rectilinear(signs)


def alternating_signs(n: int) -> tuple[int, ...]:
    """The default arrangement of ``n`` rectilinear units: +1, −1, +1, … (half positive,
    half negative rectifiers; our reading of the paper's arrangement)."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"alternating_signs: n must be a positive integer, got {n!r}")
    return tuple(1 if i % 2 == 0 else -1 for i in range(n))
