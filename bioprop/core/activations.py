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

__all__ = ["Activation", "get", "names"]


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
    ``hard-sigmoid``)."""
    if isinstance(name, Activation):
        return name
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(sorted(_REGISTRY))}"
        ) from None


def names() -> list[str]:
    """Names of the registered activations."""
    return sorted(_REGISTRY)
