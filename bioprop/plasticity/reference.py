"""The family's exact reference: backpropagation through the whole episode.

Miconi et al. 2018, §3: the trace Hebb(t) is a differentiable function of w, α and η (and
of every earlier rate), so the gradient of the episode's loss with respect to them is plain
BPTT through every step of the episode, the traces included — the outer loop that trains
"how to learn".  Computed by autograd on the very circuit the rules train; returned as the
one :class:`~bioprop.rules.reference.Reference` type, ``grads`` keyed
``"<pathway>.weight" | ".bias" | ".alpha" | ".eta"``.
"""

from __future__ import annotations

import torch
from torch import nn

from bioprop.plasticity.circuit import EpisodeCircuit
from bioprop.plasticity.tasks import episode_loss
from bioprop.recurrent.tasks import Batch
from bioprop.rules.reference import Reference

__all__ = ["episode_bptt", "trained_parameters", "METHOD"]

METHOD = "bptt through the episode"


def trained_parameters(circuit) -> dict[str, nn.Parameter]:
    """``{"<pathway>.<part>": parameter}`` of every parameter the outer loop trains: w, b,
    α, η of plastic circuits, the weights and biases of an LSTM or RNN."""
    if isinstance(circuit, EpisodeCircuit):
        return circuit.named_core()
    from bioprop.recurrent.reference import core_named

    return {k: p for k, p in core_named(circuit).items() if p.requires_grad}


def episode_bptt(circuit, batch: Batch) -> tuple[Reference, torch.Tensor, tuple]:
    """Full BPTT through ``batch``'s episodes (``.grad`` untouched): the Reference (L and
    ∂L/∂θ), the outputs (time, batch, n_out) and the final state."""
    named = trained_parameters(circuit)
    params = list(dict.fromkeys(named.values()))  # a shared η once
    with torch.enable_grad():
        final, out, _ = circuit.unroll(circuit.initial_state(batch.x.shape[1]), batch.x)
        loss = episode_loss(out, batch)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    by_param = {
        id(p): (g if g is not None else torch.zeros_like(p))
        for p, g in zip(params, grads, strict=True)
    }
    ref = Reference({k: by_param[id(p)] for k, p in named.items()}, {}, loss.detach(), METHOD)
    return ref, out.detach(), tuple(s.detach() for s in final)
