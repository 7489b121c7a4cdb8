"""Rate twins of a spiking circuit, and backprop's update on the rate description.

:func:`rate_twin` builds the layered torch rate circuit with a spiking chain's population
sizes (and names), which ``circuits/spiking_feedback_alignment.py`` trains with ``fa`` —
its B replaced by the spiking circuit's B — and with ``bp`` on the same samples in the same
order.

:func:`bp_at_rates` is the reference of the spiking rule (``ThreeFactorFA.reference``):
backprop on the rate description of a spiking circuit at its measured rates r (Hz), with
the squared error ℓ = ½ Σ_k (y_k − r_k/ν_y)² of the rule's output error, the rate of an
active neuron as its own pre-activation (f′ = 1[r > 0]) and the input population's rates
ν_max·x as its rates::

    ∂ℓ/∂u_out = −(y − r_out/ν_y) ⊙ 1[r_out > 0]
    ∂ℓ/∂u_p   = 1[r_p > 0] ⊙ Σ_{p→q} W_{p→q}ᵀ ∂ℓ/∂u_q
    ∂L/∂W_{p→q} = (1/N) Σ_n ∂ℓ_n/∂u_q r_pᵀ

so the reference update −∂L/∂W_{p→q} = ⟨δ_q r_pᵀ⟩ with δ = −∂ℓ/∂u: for one presentation of
a chain, ΔW_out = δ_o r_hᵀ and ΔW_in = δ_h r_inᵀ, δ_o = e ⊙ 1[r_o > 0], δ_h = 1[r_h > 0] ⊙
W_outᵀ δ_o — the direction the spiking rule follows when B = W_outᵀ (ψ in place of 1[r > 0]).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from bioprop.core.circuit import Circuit
from bioprop.rules.reference import Reference

__all__ = ["rate_twin", "bp_at_rates"]


def rate_twin(
    spiking: Circuit | Sequence[int], activation: str = "logistic", seed: int = 0
) -> Circuit:
    """A layered rate circuit (biases, default init) with the sizes of a spiking chain
    (a circuit, or its sizes input first)."""
    if isinstance(spiking, Circuit):
        sizes = [spiking.populations[n].size for n in spiking.order()]
    else:
        sizes = list(spiking)
    return Circuit.layered(sizes, activation=activation, seed=seed)


def _t(v: Any) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=torch.float64)
    return t.unsqueeze(0) if t.dim() == 1 else t


def bp_at_rates(
    circuit: Circuit,
    rates: Mapping[str, Any],
    y: Any,
    target_rate: float,
    weights: Mapping[str, Any] | None = None,
) -> Reference:
    """Backprop of the rate description at measured rates (module docstring).

    Parameters
    ----------
    circuit
        The spiking circuit (its populations, feedforward pathways and — unless
        ``weights`` are given — its current weights W (post × pre)).
    rates
        ``{population: (N, n) or (n,)}`` rates in Hz of every population, the input's
        included (ν_max·x for a Poisson encoder).
    y
        ``(N, n_out)`` targets in [0, 1].
    target_rate
        ν_y in Hz (the rule's ``target_rate``).
    weights
        ``{pathway: (post, pre)}`` to use instead of the circuit's (e.g. recorded ones).

    Returns
    -------
    Reference
        ``grads`` ``{"<pathway>.weight": ∂L/∂W}`` of every plastic feedforward pathway,
        ``delta`` ``{population: ∂ℓ_n/∂u}``, ``loss`` L (mean over samples), method
        ``"rate twin bp"``.
    """
    r = {k: _t(v) for k, v in rates.items()}
    missing = [n for n in circuit.order() if n not in r]
    if missing:
        raise ValueError(f"bp_at_rates: no rates for populations {missing}")
    out = circuit.output
    y = _t(y)
    e = y - r[out] / target_rate
    grad_u = {out: -e * (r[out] > 0)}
    for name in reversed(circuit.order()):
        if name in (out, circuit.input):
            continue
        total = torch.zeros_like(r[name])
        for pw in circuit.outgoing(name):
            w = weights[pw.name] if weights is not None else pw.weight.detach()
            total = total + grad_u[pw.target] @ torch.as_tensor(w, dtype=torch.float64)
        grad_u[name] = total * (r[name] > 0)
    n = y.shape[0]
    grads = {
        f"{pw.name}.weight": grad_u[pw.target].T @ r[pw.source] / n
        for pw in circuit.feedforward_pathways()
        if pw.plastic
    }
    loss = 0.5 * (e**2).sum(1).mean()
    return Reference(grads, grad_u, loss.detach(), "rate twin bp")
