"""Backprop: the torch-autograd reference.

δ_p = ∂ℓ/∂u_p computed by autograd through the very circuit the other rules
train; ĝ = ∂L/∂θ.  :func:`reference` computes the same thing without touching
``.grad`` — the trainer's *shadow* reference on recording steps.
"""

from __future__ import annotations

import torch

from bioprop.circuit import Circuit, SweepState
from bioprop.losses import Loss
from bioprop.rules.base import Rule, Signals
from bioprop.rules.registry import register

__all__ = ["Backprop", "reference"]


def _forward_params(circuit: Circuit) -> list[tuple[str, torch.nn.Parameter]]:
    out = []
    for pw in circuit.feedforward_pathways():
        if pw.plastic:
            out.append((f"{pw.name}.weight", pw.weight))
            if pw.bias is not None:
                out.append((f"{pw.name}.bias", pw.bias))
    return out


def reference(
    circuit: Circuit, x: torch.Tensor, y: torch.Tensor, loss: Loss
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
    """Backprop gradients and teaching signals for one batch, leaving ``.grad`` alone.

    Returns
    -------
    grads
        ``{"<pathway>.weight" | "<pathway>.bias": ∂L/∂θ}`` for plastic feedforward pathways.
    delta
        ``{population: ∂ℓ_n/∂u_p}`` per sample (N times ∂L/∂u_p).
    loss
        The batch loss L (detached).
    """
    with torch.enable_grad():
        state = circuit.sweep(x)
        L = loss(state.r[circuit.output], y)
        pops = list(state.u)
        params = _forward_params(circuit)
        grads = torch.autograd.grad(
            L, [state.u[p] for p in pops] + [p for _, p in params], allow_unused=True
        )
    n = x.shape[0]
    delta = {p: g * n for p, g in zip(pops, grads[: len(pops)], strict=True) if g is not None}
    gdict = {
        name: g for (name, _), g in zip(params, grads[len(pops) :], strict=True) if g is not None
    }
    return gdict, delta, L.detach()


@register
class Backprop(Rule):
    """Backpropagation by torch autograd: ĝ = ∂L/∂θ, δ_p = ∂ℓ/∂u_p."""

    name = "bp"
    description = "backpropagation by torch autograd (the reference)"

    def __init__(self, record_signals: bool = False):
        super().__init__()
        self.record_signals = record_signals

    def forward(self, circuit: Circuit, x: torch.Tensor) -> SweepState:
        with torch.enable_grad():
            return circuit.sweep(x)

    def teach(self, circuit: Circuit, state: SweepState, y: torch.Tensor, loss: Loss) -> Signals:
        out = circuit.output
        L = loss(state.r[out], y)
        delta: dict[str, torch.Tensor] = {}
        want = self.record_signals or self.recording
        if want:
            for u in state.u.values():
                u.retain_grad()
        for p in circuit.plastic_parameters():
            p.grad = None
        L.backward()
        if want:
            n = state.r[out].shape[0]
            delta = {p: u.grad * n for p, u in state.u.items() if u.grad is not None}
        return Signals(L.detach(), state.r[out].detach(), delta)

    def hyperparameters(self):
        return {}
