"""Losses ℓ(r_out, y) per sample, and the output teaching signal e = ∂ℓ/∂u_out.

The training objective is the batch mean L = (1/N) Σ_n ℓ_n.  Every rule
starts from the output error

    e_n = ∂ℓ_n/∂u_out = ∂ℓ_n/∂r_out ⊙ f'(u_out),

which is local to the output population.  Teaching signals δ recorded by
bioprop are per sample (∂ℓ_n/∂u), not divided by N.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bioprop.core.activations import Activation

__all__ = ["Loss", "MSE", "CrossEntropy", "get", "names"]


class Loss:
    name: str = ""
    description: str = ""

    def per_sample(self, r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """ℓ_n for each sample (shape ``(N,)``)."""
        raise NotImplementedError

    def __call__(self, r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Batch mean L = (1/N) Σ ℓ_n."""
        return self.per_sample(r, y).mean()

    def output_error(
        self, u: torch.Tensor, r: torch.Tensor, y: torch.Tensor, act: Activation
    ) -> torch.Tensor:
        """e = ∂ℓ_n/∂u_out per sample (shape ``(N, n_out)``)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return self.name


@dataclass(repr=False)
class MSE(Loss):
    """Squared error ℓ = ½ ‖r_out − y‖² (summed over units; Lillicrap et al.'s ½ eᵀe).

    e = (r_out − y) ⊙ f'(u_out).
    """

    name = "mse"
    description = "squared error ½‖r − y‖² per sample (summed over output units)"

    def per_sample(self, r, y):
        d = r - _as_targets(y, r)
        return 0.5 * (d * d).sum(dim=1)

    def output_error(self, u, r, y, act):
        d = r - _as_targets(y, r)
        if act.name == "linear":
            return d
        return d * act.fprime(u, r)


@dataclass(repr=False)
class CrossEntropy(Loss):
    """Softmax cross-entropy on the output rates as logits:
    ℓ = −Σ_k y_k log softmax(r)_k;  e = (softmax(r) − y) ⊙ f'(u_out).

    ``y`` may be integer class labels or one-hot rows.
    """

    name = "cross-entropy"
    description = "softmax cross-entropy with the output rates as logits"

    def per_sample(self, r, y):
        logp = torch.log_softmax(r, dim=1)
        return -(logp * _as_targets(y, r)).sum(dim=1)

    def output_error(self, u, r, y, act):
        d = torch.softmax(r, dim=1) - _as_targets(y, r)
        if act.name == "linear":
            return d
        return d * act.fprime(u, r)


def _as_targets(y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Integer labels become one-hot rows matching ``r``; float targets pass through."""
    if y.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        out = torch.zeros_like(r)
        out.scatter_(1, y.long().view(-1, 1), 1.0)
        return out
    if y.shape != r.shape:
        raise ValueError(f"targets of shape {tuple(y.shape)} do not match outputs {tuple(r.shape)}")
    return y


_REGISTRY = {"mse": MSE, "cross-entropy": CrossEntropy}


def get(name: str | Loss) -> Loss:
    """Look up a loss by name (``mse``, ``cross-entropy``)."""
    if isinstance(name, Loss):
        return name
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(_REGISTRY)}") from None


def names() -> list[str]:
    return list(_REGISTRY)
