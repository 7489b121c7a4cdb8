"""Inverse feedback pathways: what carries targets down instead of errors.

* :class:`InversePathway` — a learned approximate inverse of a forward pathway
  f_l : h_{l−1} ↦ h_l,

      g_l(h_l) = σ(V_l h_l + c_l)             (Lee et al. 2015, eq. 10)

  from population l to population l−1 (``role="feedback"``, ``mirrors`` = f_l, plastic).
  With ``mirrors=None`` and a linear σ it is one of Meulemans et al. 2020's direct
  feedback maps Q_i from the output to a hidden layer (DDTP-linear).
* :class:`ExactInversePathway` — the exact inverse of a square, invertible layer,

      g_l(h_l) = W_l⁻¹ (f⁻¹(h_l) − b_l)        (f⁻¹ = atanh, logit or the identity)

  computed from the forward weights whenever it is used (no parameter of its own), for the
  limit in which target propagation is Gauss–Newton (Meulemans et al. 2020, Theorem 1).

Both are ordinary pathways of the circuit: listed in ``circuit.pathways``, saved in its
``state_dict``, moved with it to a device, and recorded (``weight`` is V, resp. W⁻¹).
"""

from __future__ import annotations

import torch
from torch import nn

from bioprop.core import activations
from bioprop.core.init import Init
from bioprop.core.pathway import Pathway, mirror_without_parameters

__all__ = ["InversePathway", "ExactInversePathway", "INVERTIBLE", "inverse_activation"]

#: activations with an exact inverse f⁻¹ (for :class:`ExactInversePathway`)
INVERTIBLE = ("linear", "tanh", "logistic")
_EDGE = 1e-12  # keeps atanh and logit finite at a saturated rate


def inverse_activation(name: str, r: torch.Tensor) -> torch.Tensor:
    """f⁻¹(r) for an activation of :data:`INVERTIBLE`: r, atanh(r) or logit(r) (clamped a
    hair inside (−1, 1) resp. (0, 1), where the inverse is finite)."""
    if name == "linear":
        return r
    if name == "tanh":
        return torch.atanh(r.clamp(-1.0 + _EDGE, 1.0 - _EDGE))
    if name == "logistic":
        return torch.logit(r, eps=_EDGE)
    raise ValueError(f"activation {name!r} has no exact inverse here; invertible: {INVERTIBLE}")


class InversePathway(Pathway):
    """A learned inverse g(h) = σ(V h + c) from ``source`` to ``target``.

    Parameters
    ----------
    source, target
        Populations: g reads the rates of ``source`` (layer l) and reconstructs those of
        ``target`` (layer l−1).
    weight, bias
        V, shape ``(target.size, source.size)``, and c (or None).
    activation
        σ, an activation name (by default the reconstructed population's own).
    mirrors
        The forward pathway f_l that g_l inverts (None for a direct feedback map Q_i).
    init
        The initialiser V was drawn with (provenance).
    """

    def __init__(
        self,
        source: str,
        target: str,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        *,
        activation: str,
        mirrors: str | None,
        init: Init | None = None,
        name: str | None = None,
    ):
        super().__init__(
            source,
            target,
            weight,
            bias,
            role="feedback",
            plastic=True,
            mirrors=mirrors,
            init=init,
            name=name,
        )
        self.act = activations.get(activation)

    def invert(self, h: torch.Tensor) -> torch.Tensor:
        """g(h) = σ(V h + c) for a batch ``h`` (sample × source)."""
        return self.act.f(self.forward(h))

    def describe(self) -> dict:
        d = super().describe()
        d["activation"] = self.act.name
        d["inverse"] = "learned" if self.mirrors else "direct"
        return d


class ExactInversePathway(Pathway):
    """The exact inverse g(h) = W⁻¹(f⁻¹(h) − b) of a square forward pathway W (no copy).

    ``effective_weight()`` is W⁻¹ (what recordings store as ``weight``); ``invert`` applies
    the whole inverse.  It follows W as W learns, like :class:`~bioprop.TransposePathway`.
    """

    def __init__(self, forward: Pathway, activation: str):
        nn.Module.__init__(self)
        n_post, n_pre = forward.shape
        if n_post != n_pre:
            raise ValueError(
                f"pathway {forward.name!r} is {n_post}x{n_pre}; an exact inverse needs a "
                "square weight"
            )
        if activation not in INVERTIBLE:
            raise ValueError(
                f"pathway {forward.name!r} ends in activation {activation!r}, which has no "
                f"exact inverse; invertible: {INVERTIBLE}"
            )
        mirror_without_parameters(self, forward)
        self.activation = activation

    def own_parameters(self) -> list[nn.Parameter]:
        return []

    def effective_weight(self) -> torch.Tensor:
        return torch.linalg.inv(self._forward.weight.detach())

    def invert(self, h: torch.Tensor) -> torch.Tensor:
        """g(h) = W⁻¹ (f⁻¹(h) − b), solved rather than formed."""
        u = inverse_activation(self.activation, h)
        fw = self._forward
        if fw.bias is not None:
            u = u - fw.bias.detach()
        return torch.linalg.solve(fw.weight.detach(), u.t()).t()

    def describe(self) -> dict:
        d = super().describe()
        d["activation"] = self.activation
        d["inverse"] = "exact"
        return d
