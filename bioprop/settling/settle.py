"""Settling: explicit Euler integration of a settling circuit's gradient flow.

The states of the free populations follow τ du/dt = −∂F/∂u of the total energy
F = E + β C (:mod:`bioprop.settling.energy`; Scellier & Bengio 2017, eq. 4)::

    τ_q du_q/dt = −u_q + ρ'(u_q) ⊙ (Σ_{p→q} W_qp ρ(u_p) + Σ_{q→s} W_sqᵀ ρ(u_s) + b_q)
                  + β (y − u_q) [q = output],

integrated by explicit Euler with step ε (``u ← u + (ε/τ) du/dt``, all populations
from the same old state).  For ``hard-sigmoid`` populations the states are kept in
[0, 1] by projection after each step, as Scellier & Bengio's code does
(``u ← clip(u + ε du/dt, 0, 1)``); on that box ρ(u) = u and ρ' = 1, so the step is
projected gradient descent on F.  Settling stops after a fixed number of steps or when
the largest |du/dt| falls below a tolerance; :class:`Settled` says which.

Here: :func:`settle` (lean, in-place, batched, no autograd graph), :func:`plan` (the
populations and pathways of one Euler step, looked up once per circuit structure),
:class:`Settled`, and the errors :class:`SettlingError` and :class:`NonConvergenceWarning`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch

from bioprop.core.circuit import Circuit
from bioprop.core.encoding import one_hot
from bioprop.core.pathway import Pathway
from bioprop.settling.circuit import (
    Settling,
    check_dynamical,
    free_populations,
    settling_of,
    symmetric_feedback,
)

__all__ = ["Settled", "SettlingError", "NonConvergenceWarning", "settle", "plan", "targets"]

_BOUNDS = {"hard-sigmoid": (0.0, 1.0)}


class SettlingError(RuntimeError):
    """The settling dynamics produced NaN/Inf (ε too large, or weights too strong)."""


class NonConvergenceWarning(UserWarning):
    """Settling ran out of steps before the tolerance was met."""


@dataclass
class Settled:
    """The end of one settling phase.

    Attributes
    ----------
    u, r
        States and rates per population (batch-first); ``r`` also holds the
        clamped input's rates x.  For bounded hard-sigmoid populations ``r[q] is u[q]``.
    steps
        Euler steps taken.
    stopped
        ``"tolerance"`` (max |du/dt| < tol) or ``"steps"`` (the step budget ran out).
    residual
        max |du/dt| at the last step (NaN when it was not measured: no tolerance and no trace).
    trajectory
        ``{population: (steps + 1, k, n)}`` states of the first k samples at every step
        (index 0 is the start), when ``trace=k`` was asked for; else None.
    start
        The starting states (None: zeros).
    drive
        The constant part of each population's drive, Σ (W_q,in x + b) (reused by the
        next phase with the same x: ``settle(..., drive=settled.drive)``).
    """

    u: dict[str, torch.Tensor]
    r: dict[str, torch.Tensor]
    steps: int
    stopped: str
    residual: float = math.nan
    trajectory: dict[str, torch.Tensor] | None = None
    start: dict[str, torch.Tensor] | None = None
    drive: list[torch.Tensor | None] | None = None

    @property
    def converged(self) -> bool:
        return self.stopped == "tolerance"


@dataclass
class _Plan:
    """What one Euler step needs, looked up once per circuit structure."""

    key: tuple
    names: list[str]
    inp: str
    out: int
    sizes: list[int]
    acts: list
    bounds: list[tuple[float, float] | None]
    tau: list[float]
    clamped: list[list[Pathway]]  # forward pathways input -> q (constant drive, with bias)
    biases: list[list[Pathway]]  # other forward pathways into q that carry a bias
    terms: list[list[tuple[int, Pathway]]]  # (free source index, pathway) into q


def _key(circuit: Circuit, s: Settling) -> tuple:
    return (
        tuple(id(p) for p in circuit.pathways.values()),
        tuple(
            (n, id(p), p.dynamics, p.tau, str(p.activation)) for n, p in circuit.populations.items()
        ),
        circuit.input,
        circuit.output,
        s.bounded,
    )


def plan(circuit: Circuit, settling: Settling | None = None, cached: _Plan | None = None) -> _Plan:
    """Validate the circuit and look up the populations and pathways of an Euler step
    (``cached`` is returned as is when the circuit has not changed)."""
    s = settling or settling_of(circuit)
    key = _key(circuit, s)
    if cached is not None and cached.key == key:
        return cached
    check_dynamical(circuit)
    feedback = symmetric_feedback(circuit)
    names = free_populations(circuit)
    index = {n: i for i, n in enumerate(names)}
    inp = circuit.input
    clamped: list[list[Pathway]] = [[] for _ in names]
    biases: list[list[Pathway]] = [[] for _ in names]
    terms: list[list[tuple[int, Pathway]]] = [[] for _ in names]
    for pw in circuit.feedforward_pathways():
        q = index[pw.target]
        if pw.source == inp:
            clamped[q].append(pw)
            continue
        terms[q].append((index[pw.source], pw))  # W_qp ρ(u_p) into q
        if pw.bias is not None:
            biases[q].append(pw)
        fb = feedback[pw.name]
        terms[index[pw.source]].append((q, fb))  # W_qpᵀ ρ(u_q) into p, through the feedback
    pops = [circuit.populations[n] for n in names]
    return _Plan(
        key=key,
        names=names,
        inp=inp,
        out=index[circuit.output],
        sizes=[p.size for p in pops],
        acts=[p.act for p in pops],
        bounds=[_BOUNDS.get(p.act.name) if s.bounded else None for p in pops],
        tau=[float(p.tau) for p in pops],
        clamped=clamped,
        biases=biases,
        terms=terms,
    )


def _rate(pl: _Plan, i: int, u: torch.Tensor) -> torch.Tensor:
    """ρ(u): the state itself for bounded hard-sigmoid populations (ρ(u) = u on [0, 1])."""
    return u if pl.bounds[i] is not None else pl.acts[i].f(u)


def _const(pl: _Plan, i: int, x: torch.Tensor) -> torch.Tensor | None:
    """The drive that does not change while settling: Σ_(in→q) (W_q,in x + b) + Σ b_q."""
    c = None
    for pw in pl.clamped[i]:
        t = pw.forward(x)
        c = t if c is None else c + t
    for pw in pl.biases[i]:
        c = pw.bias if c is None else c + pw.bias
    return c


def targets(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The target y of the cost C = ½‖u_out − y‖² as a tensor like the output states:
    integer labels become one-hot rows e_y; float targets must have the states' shape."""
    if not torch.is_floating_point(y):
        return one_hot(y.to(like.device), like.shape[1], dtype=like.dtype)
    if y.shape != like.shape:
        raise ValueError(
            f"targets of shape {tuple(y.shape)} do not match the output states {tuple(like.shape)}"
        )
    return y.to(like.dtype)


def _check_input(circuit: Circuit, x: torch.Tensor) -> None:
    n = circuit.populations[circuit.input].size
    if x.dim() != 2 or x.shape[1] != n:
        raise ValueError(
            f"input must have shape (batch, {n}) for population {circuit.input!r}, "
            f"got {tuple(x.shape)}"
        )


_UNSET = object()


# -- settling -------------------------------------------------------------------------------
@torch.no_grad()
def settle(
    circuit: Circuit,
    x: torch.Tensor,
    settling: Settling | None = None,
    *,
    beta: float = 0.0,
    target: torch.Tensor | None = None,
    start: dict[str, torch.Tensor] | None = None,
    steps: int | None = None,
    tol: float | None = _UNSET,  # type: ignore[assignment]
    trace: int = 0,
    drive: list[torch.Tensor | None] | None = None,
    plan_cache: _Plan | None = None,
) -> Settled:
    """Settle the circuit with the input clamped to ``x``: explicit Euler steps of
    τ du/dt = −∂F/∂u, F = E + β C (see the module docstring).

    One step, for every free population q at once (synchronous; a = ε/τ_q)::

        d_q  = Σ_(p→q) W_qp ρ(u_p) + Σ_(q→s) W_sqᵀ ρ(u_s) + b_q
        u_q ← (1 − a) u_q + a ρ'(u_q) ⊙ d_q + a β (y − u_q)[q = out]
        u_q ← clip(u_q, 0, 1)                                   (bounded hard-sigmoid)

    Batched tensor ops only, in place into two alternating state buffers; the input's
    drive W x + b is computed once per call.

    Parameters
    ----------
    circuit
        A circuit of leaky populations with symmetric feedback (:func:`symmetric_feedback`).
    x
        Input rates, ``(batch, n_in)``.
    settling
        ε, steps, tolerance; default ``circuit.settling``.
    beta, target
        Nudging strength β and target y of the cost C = ½‖u_out − y‖² (β = 0: free phase).
    start
        Initial states per population (copied; missing populations start at 0).
    steps, tol
        Override ``settling.steps`` / ``settling.tol`` (e.g. the nudged phase's budget).
    trace
        Keep the states of the first ``trace`` samples at every step (``Settled.trajectory``).
    drive
        ``Settled.drive`` of an earlier phase with the same x and weights (saves W x).

    Raises
    ------
    SettlingError
        When a state becomes NaN/Inf.

    Warns
    -----
    NonConvergenceWarning
        With a tolerance, when the step budget ran out first.
    """
    s = settling or settling_of(circuit)
    pl = plan(circuit, s, plan_cache)
    _check_input(circuit, x)
    steps = s.steps if steps is None else int(steps)
    tol = s.tol if tol is _UNSET else tol
    n_batch = x.shape[0]
    nudging = beta != 0.0
    if nudging and target is None:
        raise ValueError("settle(beta=...) needs the target y of the cost C = ½‖u_out − y‖²")
    n = len(pl.names)
    a = [s.epsilon / t for t in pl.tau]
    u_cur: list[torch.Tensor] = []
    for i, name in enumerate(pl.names):
        if start is not None and name in start:
            ui = start[name].detach().to(dtype=x.dtype, device=x.device).clone()
        else:
            ui = x.new_zeros(n_batch, pl.sizes[i])
        if pl.bounds[i] is not None:
            ui.clamp_(*pl.bounds[i])
        u_cur.append(ui)
    u_nxt = [torch.empty_like(ui) for ui in u_cur]
    all_bounded = all(b is not None for b in pl.bounds)  # then ρ(u) = u: the rates are the states
    r_cur = u_cur if all_bounded else [_rate(pl, i, ui) for i, ui in enumerate(u_cur)]
    # constant drive, pre-scaled: a (W_in x + b) [+ a β y for the output]; "keep" = 1 − a (1 + β)
    const: list[torch.Tensor | float] = []
    keep: list[float] = []
    yb = None
    if drive is None or len(drive) != n:
        drive = [_const(pl, i, x) for i in range(n)]
    for i in range(n):
        c = drive[i]
        c = c * a[i] if c is not None else 0.0
        k = 1.0 - a[i]
        if nudging and i == pl.out:
            yb = targets(target, u_cur[i]) * (a[i] * beta)
            k -= a[i] * beta
            if pl.bounds[i] is not None:
                c = yb + c
        const.append(c)
        keep.append(k)
    mats = [[(src, pw.effective_weight().t()) for src, pw in pl.terms[i]] for i in range(n)]
    dbuf = [torch.empty_like(ui) for ui in u_cur]
    frames = [[ui[:trace].clone()] for ui in u_cur] if trace else None
    measure_last = trace > 0 or tol is not None
    taken, stopped, residual = 0, "steps", math.nan
    for t in range(steps):
        for i in range(n):
            # new u_q from the old rates (synchronous update)
            un, ui, terms = u_nxt[i], u_cur[i], mats[i]
            if pl.bounds[i] is not None:
                # u ← clip(keep u + a (W ρ + const)),  ρ(u) = u, ρ' = 1 on the box
                if terms:
                    src, m = terms[0]
                    torch.addmm(ui, r_cur[src], m, beta=keep[i], alpha=a[i], out=un)
                    for src, m in terms[1:]:
                        un.addmm_(r_cur[src], m, alpha=a[i])
                else:
                    torch.mul(ui, keep[i], out=un)
                if not isinstance(const[i], float):
                    un.add_(const[i])
                un.clamp_(*pl.bounds[i])
            else:
                # u ← keep u + ρ'(u) ⊙ a (W ρ + const) [+ a β y]
                d = dbuf[i]
                if terms:
                    src, m = terms[0]
                    if isinstance(const[i], float):
                        torch.mm(r_cur[src], m, out=d)
                        d.mul_(a[i])
                    else:
                        torch.addmm(const[i], r_cur[src], m, alpha=a[i], out=d)
                    for src, m in terms[1:]:
                        d.addmm_(r_cur[src], m, alpha=a[i])
                else:
                    d.zero_()
                    d.add_(const[i])
                act = pl.acts[i]
                if act.name != "linear":
                    d.mul_(act.fprime(ui, r_cur[i]))
                torch.add(d, ui, alpha=keep[i], out=un)
                if nudging and i == pl.out:
                    un.add_(yb)
        check = tol is not None and ((t + 1) % s.check_every == 0 or t + 1 == steps)
        if check or (measure_last and t + 1 == steps):
            residual = max(float(torch.dist(u_nxt[i], u_cur[i], math.inf)) / a[i] for i in range(n))
        u_cur, u_nxt = u_nxt, u_cur
        r_cur = u_cur if all_bounded else [_rate(pl, i, ui) for i, ui in enumerate(u_cur)]
        taken = t + 1
        if frames is not None:
            for i in range(n):
                frames[i].append(u_cur[i][:trace].clone())
        if check and residual < tol:
            stopped = "tolerance"
            break
    for i in range(n):
        if not bool(torch.isfinite(u_cur[i]).all()):
            raise SettlingError(
                f"settling diverged: population {pl.names[i]!r} has NaN/Inf states after "
                f"{taken} Euler steps (epsilon={s.epsilon}, beta={beta}). Lower epsilon, or the "
                "weight scale; unbounded activations can run away where hard-sigmoid cannot"
            )
    if tol is not None and stopped == "steps":
        warnings.warn(
            f"settling did not converge: max |du/dt| = {residual:.3g} > tol = {tol:g} after "
            f"{taken} steps (epsilon={s.epsilon}, beta={beta}); raise the step budget, or lower "
            "epsilon if the states oscillate",
            NonConvergenceWarning,
            stacklevel=2,
        )
    u = dict(zip(pl.names, u_cur, strict=True))
    r = {pl.inp: x, **dict(zip(pl.names, r_cur, strict=True))}
    traj = None
    if frames is not None:
        traj = {name: torch.stack(f) for name, f in zip(pl.names, frames, strict=True)}
    return Settled(u, r, taken, stopped, residual, traj, start, drive)
