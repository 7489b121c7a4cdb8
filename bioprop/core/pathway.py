"""Pathways: named projections ``source -> target``.

A pathway carries a weight of shape ``(target.size, source.size)`` (post x
pre), so that the input it delivers to its target is ``W r_source (+ b)``.
Its *role* is ``feedforward`` (carries the sweep), ``feedback`` (carries
teaching signals: a random matrix B, a learned inverse G, ...) or ``lateral``
(within-layer or recurrent connections of dynamical circuits).

Feedback pathways are first-class: they sit in :attr:`Circuit.pathways`
beside the forward ones, are recorded in the same way, and name the forward
pathway they mirror (``mirrors``), which is what the W-vs-B analyses use.

Two feedback pathways compute their weight from a forward pathway instead of
holding one of their own:

* :class:`SignSymmetricPathway` — ``B = |M| ⊙ sign(Wᵀ)`` with fixed random
  magnitudes ``M`` (Liao, Leibo & Poggio 2016);
* :class:`TransposePathway` — ``B = Wᵀ`` itself, not a copy (symmetric
  feedback of energy-based circuits).
"""

from __future__ import annotations

import torch
from torch import nn

from bioprop.core.init import Init

__all__ = ["Pathway", "SignSymmetricPathway", "TransposePathway", "ROLES"]

ROLES = ("feedforward", "feedback", "lateral")


class Pathway(nn.Module):
    """A projection with weight ``W`` (post x pre) and an optional bias.

    Parameters
    ----------
    source, target
        Population names.
    weight
        Initial weight, shape ``(n_post, n_pre)``.
    bias
        Initial bias of shape ``(n_post,)`` or None.
    role
        ``"feedforward"``, ``"feedback"`` or ``"lateral"``.
    plastic
        Whether a learning rule may change it (``requires_grad``).
    mirrors
        For feedback pathways, the name of the forward pathway whose transpose
        this one stands in for.
    init
        The initialiser used (kept for provenance and for rules that draw
        feedback weights "like the forward ones").
    """

    def __init__(
        self,
        source: str,
        target: str,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        role: str = "feedforward",
        plastic: bool = True,
        mirrors: str | None = None,
        init: Init | None = None,
        name: str | None = None,
    ):
        super().__init__()
        if role not in ROLES:
            raise ValueError(
                f"pathway {source}->{target}: role must be one of {ROLES}, got {role!r}"
            )
        self.source = source
        self.target = target
        self.role = role
        self.mirrors = mirrors
        self.init = init
        self.name = name or f"{source}->{target}"
        self._plastic = bool(plastic)
        self.weight = nn.Parameter(weight.detach().clone().float(), requires_grad=self._plastic)
        if bias is not None:
            if bias.shape != (weight.shape[0],):
                raise ValueError(
                    f"pathway {self.name}: bias must have shape ({weight.shape[0]},), "
                    f"got {tuple(bias.shape)}"
                )
            self.bias = nn.Parameter(bias.detach().clone().float(), requires_grad=self._plastic)
        else:
            self.bias = None

    # -- properties --------------------------------------------------------------------------
    @property
    def plastic(self) -> bool:
        return self._plastic

    @plastic.setter
    def plastic(self, value: bool) -> None:
        self._plastic = bool(value)
        for p in self.switched_parameters():
            p.requires_grad_(self._plastic)

    def switched_parameters(self) -> list[nn.Parameter]:
        """The parameters :attr:`plastic` switches on and off (all of them here)."""
        return self.own_parameters()

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.effective_weight().shape)

    def own_parameters(self) -> list[nn.Parameter]:
        return [p for p in (self.weight, self.bias) if p is not None]

    def effective_weight(self) -> torch.Tensor:
        """The matrix this pathway multiplies its source's rates with (post x pre)."""
        return self.weight

    def forward(self, r_source: torch.Tensor) -> torch.Tensor:
        """Input delivered to the target: ``r_source @ Wᵀ (+ b)`` for a batch (sample x pre)."""
        w = self.effective_weight()
        if self.bias is not None:
            return torch.addmm(self.bias, r_source, w.t())
        return r_source @ w.t()

    def describe(self) -> dict:
        """Attributes stored in recordings."""
        d = {
            "source": self.source,
            "target": self.target,
            "role": self.role,
            "plastic": int(self.plastic),
            "kind": type(self).__name__,
            "init": repr(self.init) if self.init is not None else "",
            "has_bias": int(self.bias is not None),
        }
        if self.mirrors:
            d["mirrors"] = self.mirrors
        return d

    def extra_repr(self) -> str:
        n_post, n_pre = self.shape
        return f"{self.name!r}, {n_post}x{n_pre}, role={self.role}, plastic={self.plastic}" + (
            f", mirrors={self.mirrors!r}" if self.mirrors else ""
        )


class SignSymmetricPathway(Pathway):
    """Feedback ``B = |M| ⊙ sign(Wᵀ)``: signs follow the current forward weight.

    The magnitudes ``|M|`` are drawn once and fixed; the signs are read from
    the forward pathway ``W`` every time the weight is used, so B tracks W's
    signs as W learns without being redrawn on each call.  (sign(0) = 0.)
    """

    def __init__(self, forward: Pathway, magnitude: torch.Tensor, *, init: Init | None = None):
        super().__init__(
            forward.target,
            forward.source,
            magnitude.abs(),
            None,
            role="feedback",
            plastic=False,
            mirrors=forward.name,
            init=init,
        )
        # a plain attribute, not a submodule: the forward pathway belongs to the circuit
        object.__setattr__(self, "_forward", forward)

    def effective_weight(self) -> torch.Tensor:
        return self.weight * torch.sign(self._forward.weight.detach().t())


def mirror_without_parameters(pathway: Pathway, forward: Pathway) -> None:
    """Set ``pathway`` up as a fixed feedback mirror ``forward.target -> forward.source`` of
    ``forward`` that owns no parameter (its weight is computed from ``forward``'s)."""
    pathway.source = forward.target
    pathway.target = forward.source
    pathway.role = "feedback"
    pathway.mirrors = forward.name
    pathway.init = None
    pathway.name = f"{forward.target}->{forward.source}"
    pathway._plastic = False
    pathway.weight = None
    pathway.bias = None
    object.__setattr__(pathway, "_forward", forward)


class TransposePathway(Pathway):
    """Feedback whose weight *is* ``Wᵀ`` of a forward pathway (no copy, no own parameter)."""

    def __init__(self, forward: Pathway):
        nn.Module.__init__(self)
        mirror_without_parameters(self, forward)

    def own_parameters(self) -> list[nn.Parameter]:
        return []

    def effective_weight(self) -> torch.Tensor:
        return self._forward.weight.t()
