"""Backprop: the torch-autograd reference.

δ_p = ∂ℓ/∂u_p computed by autograd through the very circuit the other rules
train; ĝ = ∂L/∂θ.  :func:`bioprop.rules.reference.backprop` computes the same thing without
touching ``.grad`` — the layered family's exact reference, recorded on recording steps.
"""

from __future__ import annotations

import torch

from bioprop.core.circuit import Circuit, SweepState
from bioprop.core.losses import Loss
from bioprop.rules.contract import Rule, Signals
from bioprop.rules.registry import register

__all__ = ["Backprop"]


@register
class Backprop(Rule):
    """Backpropagation by torch autograd: ĝ = ∂L/∂θ, δ_p = ∂ℓ/∂u_p."""

    name = "bp"
    is_reference = True
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
