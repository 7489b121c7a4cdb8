"""Target propagation (``tp``) and difference target propagation (``dtp``), Lee et al. 2015.

Each layer l whose input population is hidden gets an inverse g_l(h_l) = σ(V_l h_l + c_l)
from population l to l−1 (:class:`~.inverse.InversePathway`), and targets go down the chain
from the first target (see :mod:`.base`)::

    tp:   ĥ_{l−1} = g_l(ĥ_l)                          (Lee et al. 2015, eq. 5)
    dtp:  ĥ_{l−1} = h_{l−1} + (g_l(ĥ_l) − g_l(h_l))   (eq. 15, the difference correction:
                                                      ĥ_l = h_l ⇒ ĥ_{l−1} = h_{l−1})

g_l learns from the reconstruction of noise-corrupted activity, f_l(h̃_{l−1}) held constant::

    L_l^inv = ⟨‖g_l(f_l(h̃_{l−1})) − h̃_{l−1}‖²⟩,   h̃_{l−1} = h_{l−1} + ε,  ε ~ N(0, σ²)  (eq. 13)
    ĝ_{V_l} = ⟨d zᵀ⟩,  ĝ_{c_l} = ⟨d⟩,  z = f_l(h̃_{l−1}),  d = 2 σ′(V_l z + c_l) ⊙ (g_l(z) − h̃_{l−1})

which reads h_{l−1}, its noise, the layer's own response f_l(h̃_{l−1}) and g_l only.

``inverses="exact"`` uses the exact inverse g_l = f_l⁻¹ of square, invertible layers
(:class:`~.inverse.ExactInversePathway`) instead: then ĥ_l − h_l is, to first order in η̂,
the Gauss–Newton target J_{top←l}⁻¹ (ĥ_top − h_top) (Meulemans et al. 2020, Theorem 1).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from bioprop.core import init as _init
from bioprop.core.circuit import Circuit, SweepState
from bioprop.core.losses import Loss
from bioprop.core.pathway import Pathway
from bioprop.rules.registry import register
from bioprop.rules.target_propagation.base import TargetPropagationRule
from bioprop.rules.target_propagation.inverse import (
    INVERTIBLE,
    ExactInversePathway,
    InversePathway,
)

__all__ = [
    "INVERSES",
    "LayerwiseTargetPropagation",
    "TargetPropagation",
    "DifferenceTargetPropagation",
]

INVERSES = ("learned", "exact")


class LayerwiseTargetPropagation(TargetPropagationRule):
    """Targets carried down layer by layer through inverses g_l (tp, dtp and dtp-drl).

    Parameters
    ----------
    target_step
        η̂ of the first target (default Lee et al.'s 0.328).
    sigma
        σ of the noise ε ~ N(0, σ²) the inverses learn on (default Lee et al.'s 0.36).
    schedule
        ``"parallel"`` or ``"alternating"`` (see :mod:`.base`).
    first_target
        ``"last-hidden"`` (Lee et al.) or ``"output"`` (Meulemans et al.).
    inverses
        ``"learned"`` (g_l = σ(V h + c), trained) or ``"exact"`` (g_l = f_l⁻¹, square
        invertible layers only).
    inverse_init, inverse_activation
        Initialiser of V (default: the forward pathway's) and σ (default: the activation of
        the population g_l reconstructs).
    inverse_warmup_epochs, inverse_options
        Epochs of feedback learning only at the start; optimizer options of the ``"inverse"``
        group (see :mod:`.base`).
    """

    difference: ClassVar[bool] = True

    def __init__(self, *args: Any, inverses: str = "learned", **kwargs: Any) -> None:
        if inverses not in INVERSES:
            raise ValueError(f"inverses must be one of {INVERSES}, got {inverses!r}")
        self.exact = inverses == "exact"
        super().__init__(*args, **kwargs)

    def inverted(self, circuit: Circuit) -> list[Pathway]:
        """The forward pathways that get an inverse: every f_l from a hidden population up
        to the top (the first target's population)."""
        top = circuit.order().index(self.top(circuit))
        return [
            f
            for f in self.chain(circuit)
            if f.source != circuit.input and circuit.order().index(f.target) <= top
        ]

    def supports(self, circuit: Circuit) -> str | None:
        why = super().supports(circuit)
        if why or not self.exact:
            return why
        for f in self.inverted(circuit):
            n_post, n_pre = f.shape
            act = circuit.populations[f.target].activation
            if n_post != n_pre or act not in INVERTIBLE:
                return (
                    f"rule {self.name!r} with inverses='exact' needs square layers with an "
                    f"invertible activation ({', '.join(INVERTIBLE)}), but pathway {f.name!r} "
                    f"is {n_post}x{n_pre} into a {act!r} population; use inverses='learned'"
                )
        return None

    def install(self, circuit: Circuit, generator: torch.Generator) -> None:
        super().install(circuit, generator)
        for f in self.inverted(circuit):
            if self.exact:
                g = ExactInversePathway(f, circuit.populations[f.target].activation)
            else:
                chosen = _init.resolve(self.inverse_init, f.init or _init.kaiming_uniform())
                n_post, n_pre = f.shape
                act = self.inverse_activation or circuit.populations[f.source].activation
                g = InversePathway(
                    f.target,
                    f.source,
                    chosen((n_pre, n_post), generator),
                    torch.zeros(n_pre),
                    activation=act,
                    mirrors=f.name,
                    init=chosen,
                )
            self._add(circuit, g)
            self.inverses[f.target] = g  # keyed by the population g reads (layer l)

    # -- targets -------------------------------------------------------------------------
    def down(self, g, state: SweepState, pop: str, target: torch.Tensor) -> torch.Tensor:
        """ĥ_{l−1} from ĥ_l through g_l (tp), with the difference correction (dtp)."""
        if not self.difference:
            return g.invert(target)
        return state.r[g.target] + (g.invert(target) - g.invert(state.r[pop]))

    def targets(self, circuit: Circuit, state: SweepState, y: torch.Tensor, loss: Loss):
        pop, t, e = self.first(circuit, state, y, loss)
        targets = {pop: t}
        while pop in self.inverses and self.inverses[pop].target != circuit.input:
            g = self.inverses[pop]
            t = self.down(g, state, pop, t)
            pop = g.target
            targets[pop] = t
        return targets, e

    # -- the inverses' own learning ------------------------------------------------------
    def write_inverse_grads(self, circuit: Circuit, state: SweepState) -> dict[str, torch.Tensor]:
        losses = {}
        for pop, g in self.inverses.items():
            if not isinstance(g, InversePathway):
                continue  # exact inverses do not learn
            f = circuit.incoming(pop)[0]  # f_l: h_{l−1} → h_l, the layer g_l inverts
            h = state.r[g.target]
            h_noisy = h + self.noise(h)  # h̃_{l−1} = h_{l−1} + ε
            z = circuit.populations[pop].act.f(f.forward(h_noisy))  # f_l(h̃_{l−1}), constant
            losses[g.target] = self._fit(g, z, h_noisy)
        return losses

    @staticmethod
    def _fit(g: InversePathway, z: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
        """ĝ of ⟨‖g(z) − want‖²⟩ (sum over units, batch mean) into V and c; returns it."""
        a = g.forward(z)
        r = g.act.f(a)
        diff = r - want
        d = 2.0 * diff
        if g.act.name != "linear":
            d = d * g.act.fprime(a, r)
        n = z.shape[0]
        g.weight.grad = torch.addmm(g.weight, d.t(), z, beta=0.0, alpha=1.0 / n)
        if g.bias is not None:
            g.bias.grad = d.mean(dim=0)
        return (diff * diff).sum(dim=1).mean()

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "inverses": "exact" if self.exact else "learned"}


@register
class TargetPropagation(LayerwiseTargetPropagation):
    """Target propagation: ĥ_{l−1} = g_l(ĥ_l) through learned inverses (Lee et al. 2015).
    Parameters: see :class:`LayerwiseTargetPropagation`."""

    name = "tp"
    description = "target propagation: targets go down through learned inverses g(h)"
    difference = False


@register
class DifferenceTargetPropagation(LayerwiseTargetPropagation):
    """Difference target propagation: ĥ_{l−1} = h_{l−1} − g_l(h_l) + g_l(ĥ_l) (Lee et al.
    2015).  Parameters: see :class:`LayerwiseTargetPropagation`."""

    name = "dtp"
    description = "difference target propagation: h - g(h) + g(h_hat), learned inverses"
    difference = True
