"""Dynamical rate circuits: leaky populations that settle to a minimum of an energy.

A *dynamical* circuit has a clamped input population (its rates are the data x) and
free populations with state u (``dynamics="leaky"``) coupled by symmetric pathways:
every feedforward pathway ``p -> q`` with weight W_qp is matched by a feedback
pathway ``q -> p`` whose weight *is* W_qpᵀ (:class:`bioprop.TransposePathway`, no
copy).  The circuit has the Hopfield-like energy of Scellier & Bengio (2017, eq. 1)::

    E(u) = ½ Σ_q ‖u_q‖² − Σ_{p→q} ρ(u_q)ᵀ W_qp ρ(u_p) − Σ_q b_qᵀ ρ(u_q)

(``Σ_{p→q}`` over feedforward pathways, each coupling counted once: this is
½ Σ_{i≠j} W_ij ρ_i ρ_j with a symmetric W; the input's rate ρ(u_in) is x and its
own ½‖x‖² is a constant left out), the cost C(u) = ½ ‖u_out − y‖² and the total
energy F = E + β C.  The states follow the gradient flow of F::

    τ_q du_q/dt = −∂F/∂u_q
                = −u_q + ρ'(u_q) ⊙ (Σ_{p→q} W_qp ρ(u_p) + Σ_{q→s} W_sqᵀ ρ(u_s) + b_q)
                  + β (y − u_q) [q = output],

integrated by explicit Euler with step ε (``u ← u + (ε/τ) du/dt``, all populations
from the same old state).  For ``hard-sigmoid`` populations the states are kept in
[0, 1] by projection after each step, as Scellier & Bengio's code does
(``u ← clip(u + ε du/dt, 0, 1)``); on that box ρ(u) = u and ρ' = 1, so the step is
projected gradient descent on F.  Settling stops after a fixed number of steps or when
the largest |du/dt| falls below a tolerance; :class:`Settled` says which.

Functions here
--------------
:func:`settle`            lean, in-place, batched Euler settling (no autograd graph)
:func:`bptt`              recurrent backprop through the same free-phase dynamics (autograd)
:func:`energy`, :func:`cost`, :func:`total_energy`   E, C and F per sample
:func:`layered_dynamical` a chain input → hidden … → output of leaky populations
:func:`layered_twin`      the same weights as an ordinary layered (instant) circuit
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bioprop.core import init as _init
from bioprop.core.circuit import Circuit
from bioprop.core.pathway import Pathway, TransposePathway

__all__ = [
    "Settling",
    "Settled",
    "BPTTResult",
    "DynamicalCircuit",
    "SettlingError",
    "NonConvergenceWarning",
    "layered_dynamical",
    "layered_twin",
    "settle",
    "bptt",
    "energy",
    "cost",
    "total_energy",
    "symmetric_feedback",
    "settling_of",
    "free_populations",
    "check_dynamical",
    "plan",
]

_BOUNDS = {"hard-sigmoid": (0.0, 1.0)}


class SettlingError(RuntimeError):
    """The settling dynamics produced NaN/Inf (ε too large, or weights too strong)."""


class NonConvergenceWarning(UserWarning):
    """Settling ran out of steps before the tolerance was met."""


@dataclass(frozen=True)
class Settling:
    """How a dynamical circuit settles.

    Parameters
    ----------
    epsilon
        Euler step ε (in units of τ): ``u ← u + (ε/τ) du/dt``.
    steps
        Maximum number of Euler steps of the free phase.
    tol
        Stop early when max |du/dt| (over units and samples) < ``tol``; ``None``
        runs exactly ``steps`` steps (Scellier & Bengio's fixed budget).  With a
        tolerance, running out of steps emits a :class:`NonConvergenceWarning`.
    bounded
        Keep ``hard-sigmoid`` states in [0, 1] by projection after each step (as
        Scellier & Bengio's code does).  Off: plain Euler with ρ' from
        :mod:`bioprop.core.activations` (then a state at exactly 0 has ρ' = 0 and never moves).
    check_every
        With a tolerance, measure |du/dt| every this many steps (each check syncs).
    """

    epsilon: float = 0.5
    steps: int = 20
    tol: float | None = None
    bounded: bool = True
    check_every: int = 1

    def __post_init__(self):
        if not (isinstance(self.epsilon, (int, float)) and 0 < self.epsilon < math.inf):
            raise ValueError(
                f"Settling(epsilon=...) must be a positive number, got {self.epsilon!r}"
            )
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 0:
            raise ValueError(
                f"Settling(steps=...) must be a non-negative integer, got {self.steps!r}"
            )
        if self.tol is not None and not self.tol > 0:
            raise ValueError(f"Settling(tol=...) must be > 0 or None, got {self.tol!r}")
        if not isinstance(self.check_every, int) or self.check_every < 1:
            raise ValueError(
                f"Settling(check_every=...) must be a positive integer, got {self.check_every!r}"
            )


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


# -- structure ------------------------------------------------------------------------------
def free_populations(circuit: Circuit) -> list[str]:
    """Populations that settle: every population but the clamped input, in sweep order."""
    return [n for n in circuit.order() if n != circuit.input]


def settling_of(circuit: Circuit) -> Settling:
    """The circuit's :class:`Settling` (``circuit.settling``), or the defaults."""
    s = getattr(circuit, "settling", None)
    return s if isinstance(s, Settling) else Settling()


def _angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    denom = float(a.norm() * b.norm())
    if denom == 0:
        return math.nan
    return math.degrees(math.acos(max(-1.0, min(1.0, float(a @ b) / denom))))


def symmetric_feedback(circuit: Circuit) -> dict[str, TransposePathway]:
    """``{forward pathway: its TransposePathway}`` for every feedforward pathway whose
    source settles (pathways from the clamped input need no feedback).

    Raises
    ------
    ValueError
        When a forward pathway has no feedback, or its feedback is not Wᵀ itself
        (a random B, a copy of Wᵀ that would drift apart, ...).
    """
    by_mirror: dict[str, list[Pathway]] = {}
    for fb in circuit.feedback_pathways():
        if fb.mirrors:
            by_mirror.setdefault(fb.mirrors, []).append(fb)
    out: dict[str, TransposePathway] = {}
    for pw in circuit.feedforward_pathways():
        if pw.source == circuit.input:
            continue
        cands = by_mirror.get(pw.name, [])
        bad = [fb for fb in cands if not (isinstance(fb, TransposePathway) and fb._forward is pw)]
        if bad:
            fb = bad[0]
            ang = _angle_deg(fb.effective_weight(), pw.weight.t())
            raise ValueError(
                f"feedback pathway {fb.name!r} mirrors {pw.name!r} but is not symmetric: it is a "
                f"{type(fb).__name__} with a weight of its own ({ang:.1f}° from Wᵀ), while the "
                "energy E(u) = ½Σu² − ½Σ_(i≠j) W_ij ρ_i ρ_j needs the feedback weight to *be* "
                f"Wᵀ. Remove it (circuit.remove_pathway({fb.name!r})) and use "
                f"bioprop.TransposePathway(circuit.pathways[{pw.name!r}])"
            )
        if not cands:
            raise ValueError(
                f"pathway {pw.name!r}: no feedback pathway carries Wᵀ back to {pw.source!r}, "
                "but the energy couples both ways. Attach the 'ep' rule (it installs "
                "bioprop.TransposePathway feedback) or call circuit.add_pathway("
                f"bioprop.TransposePathway(circuit.pathways[{pw.name!r}]))"
            )
        out[pw.name] = cands[0]
    return out


def check_dynamical(circuit: Circuit) -> None:
    """Raise ``ValueError`` unless every free population is leaky, no pathway is
    lateral and no pathway projects into the clamped input."""
    for name in free_populations(circuit):
        pop = circuit.populations[name]
        if pop.dynamics != "leaky":
            raise ValueError(
                f"population {name!r} has dynamics={pop.dynamics!r}; settling (equilibrium "
                "propagation) needs dynamics='leaky' for every population but the clamped "
                "input. Build the circuit with bioprop.settling.dynamics.layered_dynamical(...) or "
                "add_population(..., dynamics='leaky')"
            )
    for pw in circuit.pathways.values():
        if pw.role == "lateral":
            raise ValueError(
                f"pathway {pw.name!r} is lateral; settling supports symmetric feedforward/"
                "feedback couplings only (lateral couplings are not implemented yet)"
            )
        if pw.role == "feedforward" and pw.target == circuit.input:
            raise ValueError(
                f"pathway {pw.name!r} projects into the clamped input population "
                f"{circuit.input!r}; the input does not settle, remove the pathway"
            )


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


def _targets(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if y.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        out = torch.zeros_like(like)
        out.scatter_(1, y.long().view(-1, 1), 1.0)
        return out
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
            yb = _targets(target, u_cur[i]) * (a[i] * beta)
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


def _settle_graph(
    circuit: Circuit,
    x: torch.Tensor,
    pl: _Plan,
    s: Settling,
    steps: int,
    start: dict[str, torch.Tensor] | None,
    probes: list[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """The same Euler steps as :func:`settle` (β = 0), out of place, so autograd can
    differentiate through them.  ``probes[q]`` is added to the drive d_q at every step
    (zeros; their gradient is ∂L/∂b_q per sample)."""
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


@dataclass
class BPTTResult:
    """Recurrent backprop through the free-phase settling.

    Attributes
    ----------
    grads
        ``{"<pathway>.weight" | "<pathway>.bias": ∂L/∂θ}`` for plastic feedforward pathways.
    delta
        ``{population: ∂ℓ_n/∂b_q}`` per sample (N ∂L/∂b_q; for the settled state this is
        the recurrent-backprop error at the population's net input).
    loss
        L = (1/N) Σ_n ½‖u_out,T − y_n‖² after the T free-phase steps (detached).
    u
        The states after T steps (detached).
    """

    grads: dict[str, torch.Tensor]
    delta: dict[str, torch.Tensor]
    loss: torch.Tensor
    u: dict[str, torch.Tensor]


def bptt(
    circuit: Circuit,
    x: torch.Tensor,
    y: torch.Tensor,
    settling: Settling | None = None,
    *,
    steps: int | None = None,
    start: dict[str, torch.Tensor] | None = None,
    plan_cache: _Plan | None = None,
) -> BPTTResult:
    """The gradient EP approximates: backprop through time over the free-phase Euler
    steps on the same circuit (same ε, start and step count), ∂L/∂θ with
    L = (1/N) Σ_n ½‖u_out,T(θ) − y_n‖².  ``.grad`` is left untouched.

    W_qp enters twice (forward drive and the Wᵀ feedback); autograd adds both, which is
    the gradient of the symmetric circuit.  When the free phase has converged this is the
    recurrent-backprop gradient ∂L*/∂θ at the fixed point, which the EP update approaches
    as β → 0 (Scellier & Bengio 2017, Theorem 1; Ernoult et al. 2019).
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
        yt = _targets(y, out.detach())
        L = 0.5 * ((out - yt) ** 2).sum(1).mean()
        grads = torch.autograd.grad(L, [p for _, p in params] + probes, allow_unused=True)
    n = x.shape[0]
    gd = {
        name: g.detach()
        for (name, p), g in zip(params, grads[: len(params)], strict=True)
        if g is not None
    }
    delta = {
        name: (g * n).detach() if g is not None else torch.zeros_like(pr)
        for name, g, pr in zip(pl.names, grads[len(params) :], probes, strict=True)
    }
    return BPTTResult(
        gd, delta, L.detach(), {nm: ui.detach() for nm, ui in zip(pl.names, u, strict=True)}
    )


# -- energies -------------------------------------------------------------------------------
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
    return 0.5 * ((out - _targets(y, out)) ** 2).sum(1)


def total_energy(
    circuit: Circuit,
    x: torch.Tensor,
    u: dict[str, torch.Tensor],
    y: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """F = E + β C per sample."""
    return energy(circuit, x, u) + beta * cost(circuit, u, y)


# -- circuits -------------------------------------------------------------------------------
class DynamicalCircuit(Circuit):
    """A :class:`Circuit` whose output is read at the free fixed point.

    ``circuit(x)`` (and so :func:`bioprop.evaluate`) settles the circuit with
    ``self.settling`` and returns the output rates; :meth:`sweep` is still the
    feedforward sweep of the layered twin (what the shadow backprop reference uses).
    """

    def __init__(self, seed: int = 0, settling: Settling | None = None):
        super().__init__(seed=seed)
        self.settling = settling if settling is not None else Settling()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output rates at the end of the free phase (no autograd graph: use :func:`bptt`)."""
        return settle(self, x, self.settling).r[self.output]

    def describe(self) -> str:
        s = self.settling
        tol = f", tol={s.tol:g}" if s.tol is not None else ""
        return (
            super().describe()
            + f"\n  settling   Euler epsilon={s.epsilon:g}, steps={s.steps}{tol}, "
            + f"bounded={s.bounded}"
        )


def layered_dynamical(
    sizes: Sequence[int],
    activation: str = "hard-sigmoid",
    output_activation: str | None = None,
    init: _init.Init | str | None = None,
    bias: bool = True,
    seed: int = 0,
    *,
    epsilon: float = 0.5,
    steps: int = 20,
    tol: float | None = None,
    tau: float = 1.0,
    bounded: bool = True,
) -> DynamicalCircuit:
    """A chain ``input -> hidden(1..) -> output`` of leaky populations (the input is clamped,
    ``dynamics="instant"``), forward pathways only; the ``ep`` rule installs their
    :class:`~bioprop.TransposePathway` feedback when attached.

    Names follow :meth:`Circuit.layered` (``hidden`` for one hidden population).
    ``init`` defaults to Glorot's ``xavier_uniform()`` (Scellier & Bengio's), biases start at 0.
    """
    c = DynamicalCircuit.layered(
        sizes,
        activation=activation,
        output_activation=output_activation,
        init=init if init is not None else _init.xavier_uniform(),
        bias=bias,
        seed=seed,
        dynamics="leaky",
        tau=tau,
    )
    c.settling = Settling(epsilon, steps, tol, bounded)
    return c


def layered_twin(circuit: Circuit) -> Circuit:
    """The same populations, forward pathways and current weights as an ordinary layered
    circuit of ``instant`` populations (for plain backprop on the same architecture)."""
    twin = Circuit(seed=circuit.seed)
    for name in circuit.order():
        pop = circuit.populations[name]
        twin.add_population(name, pop.size, activation=pop.activation)
    for pw in circuit.feedforward_pathways():
        twin.connect(
            pw.source,
            pw.target,
            weight=pw.weight.detach().float(),
            bias=pw.bias.detach().clone() if pw.bias is not None else False,
            plastic=pw.plastic,
            name=pw.name,
        )
    twin.input, twin.output = circuit.input, circuit.output
    ref = next(circuit.parameters(), None)
    if ref is not None:
        twin.to(dtype=ref.dtype, device=ref.device)
        with torch.no_grad():
            for pw in circuit.feedforward_pathways():
                t = twin.pathways[pw.name]
                t.weight.copy_(pw.weight)
                if pw.bias is not None:
                    t.bias.copy_(pw.bias)
    return twin
