"""The energies of a settling circuit (Scellier & Bengio 2017, eq. 1–3).

The Hopfield-like energy, with the input's rate ρ(u_in) clamped to x::

    E(u) = ½ Σ_q ‖u_q‖² − Σ_{p→q} ρ(u_q)ᵀ W_qp ρ(u_p) − Σ_q b_qᵀ ρ(u_q)

(``Σ_{p→q}`` over feedforward pathways, each coupling counted once: this is
½ Σ_{i≠j} W_ij ρ_i ρ_j with a symmetric W; the input's own ½‖x‖² is a constant left out),
the cost C(u) = ½ ‖u_out − y‖² and the total energy F = E + β C, whose gradient flow
:func:`bioprop.settling.settle` integrates.  All three are per sample, shape ``(N,)``.
"""

from __future__ import annotations

import torch

from bioprop.core.circuit import Circuit
from bioprop.settling.circuit import free_populations
from bioprop.settling.settle import targets

__all__ = ["energy", "cost", "total_energy"]


def energy(circuit: Circuit, x: torch.Tensor, u: dict[str, torch.Tensor]) -> torch.Tensor:
    """E(u) per sample (shape ``(N,)``), input clamped to x (ρ(u_in) = x)::

        E = ½ Σ_q ‖u_q‖² − Σ_(p→q) ρ(u_q)ᵀ (W_qp ρ(u_p) + b_qp)

    over the free populations q and the feedforward pathways p → q (their biases
    b_qp give the −Σ bᵀρ term).  For hard-sigmoid ρ(u) = clip(u, 0, 1), which is u
    itself on the bounded states.
    """
    r = {circuit.input: x}
    for name in free_populations(circuit):
        r[name] = circuit.populations[name].act.f(u[name])
    e = None
    for name in free_populations(circuit):
        t = 0.5 * (u[name] * u[name]).sum(1)
        e = t if e is None else e + t
    for pw in circuit.feedforward_pathways():
        e = e - (r[pw.target] * pw.forward(r[pw.source])).sum(1)
    return e


def cost(circuit: Circuit, u: dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """C = ½ ‖u_out − y‖² per sample (on the output *state*, as Scellier & Bengio)."""
    out = u[circuit.output]
    return 0.5 * ((out - targets(y, out)) ** 2).sum(1)


def total_energy(
    circuit: Circuit,
    x: torch.Tensor,
    u: dict[str, torch.Tensor],
    y: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """F = E + β C per sample."""
    return energy(circuit, x, u) + beta * cost(circuit, u, y)
