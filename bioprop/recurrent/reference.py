"""The recurrent family's exact reference: full (untruncated) BPTT through the sequence.

For a batch of sequences, full BPTT gives ∂L/∂θ of every pathway of the recurrent circuit
(input, recurrent and read-out) by autograd through all steps, and — for the boundaries of
windows of T steps — the true gradient of all *future* loss at each boundary state,

    g*_b = B · ∂L_{≥b}/∂s_b,      L_{≥b} = the loss of the steps after boundary b,

the quantity an ideal synthetic gradient δ̂_b = M(s_b) would equal (the loss read out from
s_b itself belongs to the window that ends at b).  Returned as the one
:class:`~bioprop.rules.reference.Reference` type (a :class:`SequenceReference`, which adds
the boundary gradients).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from bioprop.recurrent.circuit import RecurrentCircuit
from bioprop.recurrent.tasks import Batch, sequence_loss
from bioprop.recurrent.unroll import windows
from bioprop.rules.reference import Reference

__all__ = ["SequenceReference", "full_bptt", "core_named"]


@dataclass
class SequenceReference(Reference):
    """A :class:`Reference` for a batch of sequences, plus ``boundaries``: the true future
    gradient g*_b per sample, (batch, state_size), for the inner window boundaries
    b = 1 … K−1 (empty without a truncation length)."""

    boundaries: list[torch.Tensor] = field(default_factory=list)


def core_named(circuit: RecurrentCircuit) -> dict[str, nn.Parameter]:
    """``{"<pathway>.weight" | "<pathway>.bias": parameter}`` of the forward circuit (every
    pathway but feedback ones such as a synthetic-gradient module)."""
    out = {}
    for pw in circuit.pathways.values():
        if pw.role == "feedback":
            continue
        out[f"{pw.name}.weight"] = pw.weight
        if pw.bias is not None:
            out[f"{pw.name}.bias"] = pw.bias
    return out


def full_bptt(circuit: RecurrentCircuit, batch: Batch, T: int | None = None) -> SequenceReference:
    """Full BPTT for ``batch`` (autograd through the whole sequence; ``.grad`` untouched).

    Returns L, ∂L/∂θ of the forward circuit and, for the inner boundaries of windows of
    ``T`` (none if T is None), the true boundary gradients g*_b (module docstring).
    """
    core = core_named(circuit)
    n_b = batch.x.shape[1]
    wins = windows(batch.length, T) if T is not None else [(0, batch.length)]
    with torch.enable_grad():
        # window by window *without* detaching: s_b = flat(state) is a node of the graph and
        # the next window starts from unflat(s_b), so ∂/∂s_b is the partial derivative with
        # respect to the whole state (for the LSTM, c at fixed h and h at fixed c)
        state = batch.state if batch.state is not None else circuit.initial_state(n_b)
        outs, bounds = [], []
        for k, (a, b) in enumerate(wins):
            if k > 0:
                s_b = circuit.flat(state)
                bounds.append(s_b)
                state = circuit.unflat(s_b)
            state, out_k, _ = circuit.unroll(state, batch.x[a:b])
            outs.append(out_k)
        out = torch.cat(outs)
        loss = sequence_loss(out, batch.y, batch.mask)  # L = (1/B) Σ_n ℓ_n
        params = list(core.values())
        grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=bool(bounds))
        g = {
            n: (gr if gr is not None else torch.zeros_like(p))
            for (n, p), gr in zip(core.items(), grads, strict=True)
        }
        true = []
        for i, ((a, _), s_b) in enumerate(zip(wins[1:], bounds, strict=True)):
            future = sequence_loss(out[a:], batch.y[a:], batch.mask[a:])  # L_{≥b}
            (gs,) = torch.autograd.grad(
                future, [s_b], allow_unused=True, retain_graph=i < len(bounds) - 1
            )
            true.append(((gs if gs is not None else torch.zeros_like(s_b)) * n_b).detach())
    return SequenceReference(g, {}, loss.detach(), "full bptt", boundaries=true)
