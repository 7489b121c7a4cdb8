"""The settling family's exact reference: backprop through time over the settling.

Equilibrium propagation estimates ∂L/∂θ of the loss at the end of the free phase,
L = (1/N) Σ_n ½‖u_out,T(θ) − y_n‖² after T Euler steps.  :func:`bptt` computes it by
autograd through the very same Euler steps (same ε, start and step count) and returns it
as the one :class:`~bioprop.rules.reference.Reference` type, with
``method="bptt through the settling"``.  When the free phase has converged this is the
recurrent-backprop gradient ∂L*/∂θ at the fixed point, which the EP update approaches as
β → 0 (Scellier & Bengio 2017, Theorem 1; step by step, Ernoult et al. 2019).
"""

from __future__ import annotations

import torch

from bioprop.core.circuit import Circuit
from bioprop.rules.reference import Reference
from bioprop.settling.circuit import Settling, settling_of
from bioprop.settling.settle import _check_input, _const, _Plan, _rate, plan, targets

__all__ = ["bptt", "METHOD"]

#: ``Reference.method`` of the settling family
METHOD = "bptt through the settling"


def _settle_graph(
    circuit: Circuit,
    x: torch.Tensor,
    pl: _Plan,
    s: Settling,
    steps: int,
    start: dict[str, torch.Tensor] | None,
    probes: list[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """The same Euler steps as :func:`bioprop.settling.settle` (β = 0), out of place, so
    autograd can differentiate through them.  ``probes[q]`` is added to the drive d_q at
    every step (zeros; their gradient is ∂L/∂b_q per sample)::

        u_q ← u_q + a (ρ'(u_q) ⊙ d_q − u_q),   a = ε/τ_q    (bounded: clip(·, 0, 1), ρ' = 1)
    """
    n = len(pl.names)
    a = [s.epsilon / t for t in pl.tau]
    u = []
    for i, name in enumerate(pl.names):
        if start is not None and name in start:
            ui = start[name].detach().to(dtype=x.dtype, device=x.device)
        else:
            ui = x.new_zeros(x.shape[0], pl.sizes[i])
        if pl.bounds[i] is not None:
            ui = ui.clamp(*pl.bounds[i])
        u.append(ui)
    const = [_const(pl, i, x) for i in range(n)]
    mats = [[(src, pw.effective_weight().t()) for src, pw in pl.terms[i]] for i in range(n)]
    for _ in range(steps):
        r = [_rate(pl, i, ui) for i, ui in enumerate(u)]
        new = []
        for i in range(n):
            d = const[i] if const[i] is not None else 0.0
            for src, m in mats[i]:
                d = d + r[src] @ m
            if probes is not None:
                d = d + probes[i]
            if pl.bounds[i] is not None:
                un = (u[i] + a[i] * (d - u[i])).clamp(*pl.bounds[i])
            else:
                act = pl.acts[i]
                fp = act.fprime(u[i], r[i]) if act.name != "linear" else 1.0
                un = u[i] + a[i] * (fp * d - u[i])
            new.append(un)
        u = new
    return u


def bptt(
    circuit: Circuit,
    x: torch.Tensor,
    y: torch.Tensor,
    settling: Settling | None = None,
    *,
    steps: int | None = None,
    start: dict[str, torch.Tensor] | None = None,
    plan_cache: _Plan | None = None,
) -> Reference:
    """The gradient EP approximates: backprop through time over the free-phase Euler
    steps on the same circuit (same ε, start and step count), ∂L/∂θ with
    L = (1/N) Σ_n ½‖u_out,T(θ) − y_n‖².  ``.grad`` is left untouched.

    W_qp enters twice (forward drive and the Wᵀ feedback); autograd adds both, which is
    the gradient of the symmetric circuit.

    Returns
    -------
    Reference
        ``grads`` ∂L/∂θ of every plastic feedforward pathway's weight and bias; ``delta``
        ``{q: ∂ℓ_n/∂b_q}`` per sample for every free population (the recurrent-backprop
        error at the population's drive, N ∂L/∂b_q); ``loss`` L; ``method``
        ``"bptt through the settling"``.
    """
    s = settling or settling_of(circuit)
    pl = plan(circuit, s, plan_cache)
    _check_input(circuit, x)
    steps = s.steps if steps is None else int(steps)
    params: list[tuple[str, torch.nn.Parameter]] = []
    for pw in circuit.feedforward_pathways():
        if pw.plastic:
            params.append((f"{pw.name}.weight", pw.weight))
            if pw.bias is not None:
                params.append((f"{pw.name}.bias", pw.bias))
    with torch.enable_grad():
        probes = [x.new_zeros(x.shape[0], size, requires_grad=True) for size in pl.sizes]
        u = _settle_graph(circuit, x.detach(), pl, s, steps, start, probes)
        out = u[pl.out]
        yt = targets(y, out.detach())
        L = 0.5 * ((out - yt) ** 2).sum(1).mean()
        grads = torch.autograd.grad(L, [p for _, p in params] + probes, allow_unused=True)
    n = x.shape[0]
    gd = {
        name: g.detach()
        for (name, _), g in zip(params, grads[: len(params)], strict=True)
        if g is not None
    }
    delta = {
        name: (g * n).detach() if g is not None else torch.zeros_like(pr)
        for name, g, pr in zip(pl.names, grads[len(params) :], probes, strict=True)
    }
    return Reference(gd, delta, L.detach(), METHOD)
