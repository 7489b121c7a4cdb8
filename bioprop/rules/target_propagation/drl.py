"""The difference reconstruction loss (Meulemans et al. 2020): ``dtp-drl`` and ``ddtp-linear``.

DTP's layer-wise inverse loss makes g_l invert f_l, but in a network whose layers are not
invertible, the targets DTP propagates then miss the Gauss–Newton targets.  Meulemans et al.
train the feedback weights on the *difference reconstruction loss* instead: corrupt h_{l−1},
carry the corruption up to the first target's layer (the top) and back down with the very
mapping that carries targets, and ask it to come back::

    h̃_{l−1} = h_{l−1} + ε,  ε ~ N(0, σ²)
    z_top = f_top(…f_l(h̃_{l−1}))                          (forward to the top)
    z_k   = h_k − g_{k+1}(h_{k+1}) + g_{k+1}(z_{k+1})      (difference rule, top → l)
    L_l^DRL = (1/σ²) mean ‖h_{l−1} − g_l(h_l) + g_l(z_l) − h̃_{l−1}‖²     (eq. 13 / their code)

with only g_l learning (the g_k above it are used as they are).  ``dtp-drl`` is dtp with this
loss and, by default, the first target at the output (their ``DTPDR``).  ``ddtp-linear``
replaces the chain of inverses by a direct linear map Q_i from the output's pre-activation to
every hidden layer::

    û_L = u_L − η̂ ∂L/∂u_L,   ĥ_i = h_i + Q_i (û_L − u_L)
    L_i^DRL = (1/σ²) mean ‖Q_i (u_L(h̃_i) − u_L) − ε‖²,   u_L(h̃_i): h̃_i carried to the output

and the output layer learns from its own target, δ_L = 2 (u_L − û_L) (their ``DMLPDTP2``
with linear feedback, "DDTP-linear").  Means are over samples and units (``F.mse_loss``).
"""

from __future__ import annotations

from typing import Any

import torch

from bioprop.core import init as _init
from bioprop.core.circuit import Circuit, SweepState
from bioprop.core.losses import Loss
from bioprop.rules.feedback_alignment import output_error
from bioprop.rules.registry import register
from bioprop.rules.target_propagation.base import TargetPropagationRule
from bioprop.rules.target_propagation.inverse import InversePathway
from bioprop.rules.target_propagation.tp import DifferenceTargetPropagation

__all__ = ["DTPDRL", "DDTPLinear", "fit_difference"]


def fit_difference(
    g: InversePathway, z: torch.Tensor, h: torch.Tensor, eps: torch.Tensor, sigma: float
) -> torch.Tensor:
    """ĝ of (1/σ²) mean ‖g(z) − g(h) − ε‖² into g's V and c; returns the loss.

    ``z`` is the corrupted activity carried back to g's source, ``h`` the clean one; the
    reconstruction h' − g(h) + g(z) of h' + ε differs from it by g(z) − g(h) − ε."""
    a1, a2 = g.forward(z), g.forward(h)
    r1, r2 = g.act.f(a1), g.act.f(a2)
    diff = r1 - r2 - eps
    scale = 2.0 / (sigma * sigma * diff.numel())
    d1, d2 = scale * diff, -scale * diff
    if g.act.name != "linear":
        d1 = d1 * g.act.fprime(a1, r1)
        d2 = d2 * g.act.fprime(a2, r2)
    g.weight.grad = d1.t() @ z + d2.t() @ h
    if g.bias is not None:
        g.bias.grad = (d1 + d2).sum(dim=0)
    return (diff * diff).mean() / (sigma * sigma)


@register
class DTPDRL(DifferenceTargetPropagation):
    """dtp whose inverses learn the difference reconstruction loss (Meulemans et al. 2020).

    Defaults are Meulemans et al.'s released Fashion-MNIST ``DTPDRL`` configuration:
    η̂ = 0.0866, σ = 0.0843, first target at the output.  Other parameters: see
    :class:`~.tp.LayerwiseTargetPropagation`."""

    name = "dtp-drl"
    description = "dtp with Meulemans et al.'s difference reconstruction loss for the inverses"
    defaults = (0.0866, 0.0843, "output")

    def write_inverse_grads(self, circuit: Circuit, state: SweepState) -> dict[str, torch.Tensor]:
        top = self.top(circuit)
        leaving = {f.source: f for f in self.chain(circuit)}
        g_of_h = {p: g.invert(state.r[p]) for p, g in self.inverses.items()}  # g_k(h_k)
        losses = {}
        for pop, g in self.inverses.items():
            if not isinstance(g, InversePathway):
                continue
            h = state.r[g.target]
            eps = self.noise(h)
            z, p = h + eps, g.target
            while p != top:  # h̃_{l−1} carried up to the top
                f = leaving[p]
                p = f.target
                z = circuit.populations[p].act.f(f.forward(z))
            while p != pop:  # and back down to l by the difference rule
                gk = self.inverses[p]
                z = state.r[gk.target] + (gk.invert(z) - g_of_h[p])
                p = gk.target
            losses[g.target] = fit_difference(g, z, state.r[pop], eps, self.sigma)
        return losses


@register
class DDTPLinear(TargetPropagationRule):
    """Direct DTP with linear feedback (Meulemans et al. 2020, "DDTP-linear"):
    ĥ_i = h_i + Q_i(û_L − u_L), Q_i trained on the difference reconstruction loss.

    Defaults are their released Fashion-MNIST configuration: η̂ = 0.01725, σ = 0.0986.
    ``first_target`` must be ``"output"``; ``inverse_activation`` (default linear) is Q's.
    Other parameters: see :class:`~.base.TargetPropagationRule`."""

    name = "ddtp-linear"
    description = "direct DTP: linear maps Q from the output to every layer, DRL-trained"
    defaults = (0.01725, 0.0986, "output")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.first_target != "output":
            raise ValueError(
                "first_target must be 'output' for rule 'ddtp-linear' (its feedback maps Q_i "
                f"start at the output), got {self.first_target!r}"
            )

    def install(self, circuit: Circuit, generator: torch.Generator) -> None:
        super().install(circuit, generator)
        out = circuit.output
        into_out = circuit.incoming(out)[0]
        n_out = circuit.populations[out].size
        for pop in circuit.hidden():
            chosen = _init.resolve(self.inverse_init, into_out.init or _init.kaiming_uniform())
            q = InversePathway(
                out,
                pop,
                chosen((circuit.populations[pop].size, n_out), generator),
                None,
                activation=self.inverse_activation or "linear",
                mirrors=None,
                init=chosen,
            )
            self._add(circuit, q)
            self.inverses[pop] = q  # keyed by the population Q_i sends targets to

    def targets(self, circuit: Circuit, state: SweepState, y: torch.Tensor, loss: Loss):
        out = circuit.output
        e = output_error(circuit, state, y, loss)  # ∂ℓ_n/∂u_L
        u = state.u[out]
        u_hat = u - (self.target_step / u.shape[0]) * e  # û_L = u_L − η̂ ∂L/∂u_L
        targets = {out: u_hat}
        for pop, q in self.inverses.items():
            targets[pop] = state.r[pop] + (q.invert(u_hat) - q.invert(u))
        return targets, 2.0 * (u - u_hat)  # δ_L = ∂‖u_L − û_L‖²/∂u_L

    def write_inverse_grads(self, circuit: Circuit, state: SweepState) -> dict[str, torch.Tensor]:
        out = circuit.output
        leaving = {f.source: f for f in self.chain(circuit)}
        losses = {}
        for pop, q in self.inverses.items():
            h = state.r[pop]
            eps = self.noise(h)
            z, p = h + eps, pop
            while True:  # h̃_i carried to the output's pre-activation u_L(h̃_i)
                f = leaving[p]
                p = f.target
                z = f.forward(z)
                if p == out:
                    break
                z = circuit.populations[p].act.f(z)
            losses[pop] = fit_difference(q, z, state.u[out], eps, self.sigma)
        return losses
