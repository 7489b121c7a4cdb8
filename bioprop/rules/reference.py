"""The one result type of every family's exact reference, and the layered family's: bp.

Every rule family has an exact reference it is compared with on the same batch and the
same weights — autograd bp through the feedforward sweep (layered rules), BPTT through the
settling (settling rules), full BPTT through the sequence (recurrent rules), the rate twin's
bp at the measured rates (spiking rules).  Each returns a :class:`Reference`, which the
trainer records beside the rule's own update (``weight_update_bp``, ``delta_bp``) and the
analyses compare with :func:`bioprop.analysis.angle`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from bioprop.core.circuit import Circuit
from bioprop.core.losses import Loss

__all__ = ["Reference", "backprop"]


@dataclass
class Reference:
    """The exact reference for one batch.

    Attributes
    ----------
    grads
        ``{"<pathway>.weight" | "<pathway>.bias": ∂L/∂θ}`` — the reference *update* of a
        pathway is ``−grads[...]`` (what plain gradient descent would apply).
    delta
        ``{population: ∂ℓ_n/∂u_p}`` per sample (N times ∂L/∂u_p; for recurrent circuits
        the gradient at the state the population carries).
    loss
        The batch loss L (a detached scalar tensor).
    method
        What computed it: ``"autograd bp"``, ``"bptt through the settling"``, ``"full bptt"``,
        ``"rate twin bp"``.
    """

    grads: dict[str, torch.Tensor]
    delta: dict[str, torch.Tensor] = field(default_factory=dict)
    loss: torch.Tensor | float = float("nan")
    method: str = "autograd bp"

    def update(self, pathway: str, part: str = "weight") -> torch.Tensor | None:
        """The reference update −∂L/∂θ of ``pathway``'s ``weight`` or ``bias`` (None if
        the reference has no gradient for it)."""
        g = self.grads.get(f"{pathway}.{part}")
        return None if g is None else -g


def _forward_params(circuit: Circuit) -> list[tuple[str, torch.nn.Parameter]]:
    out = []
    for pw in circuit.feedforward_pathways():
        if pw.plastic:
            out.append((f"{pw.name}.weight", pw.weight))
            if pw.bias is not None:
                out.append((f"{pw.name}.bias", pw.bias))
    return out


def backprop(circuit: Circuit, x: torch.Tensor, y: torch.Tensor, loss: Loss) -> Reference:
    """Backprop gradients and teaching signals for one batch, leaving ``.grad`` alone:
    ĝ = ∂L/∂θ and δ_p = ∂ℓ_n/∂u_p by autograd through ``circuit.sweep``."""
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
    return Reference(gdict, delta, L.detach(), "autograd bp")
