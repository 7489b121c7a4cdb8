"""Equilibrium propagation (Scellier & Bengio 2017) on settling circuits.

Two phases of the same dynamics (:func:`bioprop.settling.settle`):

* **free phase** — the input is clamped and the free populations settle to a fixed
  point u⁰ of the energy E (:meth:`EquilibriumPropagation.forward`);
* **nudged phase** — starting from u⁰, the output is nudged towards the target by
  −β ∂C/∂u_out = β (y − u_out), C = ½‖u_out − y‖², and the circuit settles (for a few
  steps) to u^β (:meth:`EquilibriumPropagation.teach`).

Every plastic feedforward pathway p → q then gets the contrastive Hebbian update
(Scellier & Bengio 2017, eq. 11 with ∂E/∂W_qp = −ρ(u_q)ρ(u_p)ᵀ), a batch mean::

    ΔW_qp = (1/β) ⟨ρ(u_q^β) ρ(u_p^β)ᵀ − ρ(u_q⁰) ρ(u_p⁰)ᵀ⟩,     Δb_q = (1/β) ⟨ρ(u_q^β) − ρ(u_q⁰)⟩

written into ``.grad`` as the pseudo-gradient ĝ = −ΔW, so that SGD on ĝ applies +ΔW.
As β → 0, ĝ → ∂L/∂θ of L = C(u⁰(θ)), the gradient by backprop through the settling
(:func:`bioprop.settling.bptt`), which is the rule's :meth:`~EquilibriumPropagation.reference`.
Options:

* ``random_sign`` — β's sign is drawn per batch (Scellier & Bengio's code), which
  cancels the O(β) bias of the one-sided estimate on average;
* ``symmetric`` — a third phase with −β from u⁰ (Laborieux et al. 2021), and
  ΔW = (1/2β) ⟨ρ^β ρ^βᵀ − ρ^{−β} ρ^{−β}ᵀ⟩, whose bias is O(β²);
* ``persistent`` — each training example's free phase starts from its previous free
  fixed point (Scellier & Bengio's persistent particles, :class:`bioprop.settling.ParticleBank`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from bioprop.core import seeding
from bioprop.core.circuit import Circuit, SweepState
from bioprop.core.losses import Loss
from bioprop.core.pathway import TransposePathway
from bioprop.rules.contract import Rule, Signals
from bioprop.rules.reference import Reference
from bioprop.rules.registry import register
from bioprop.settling import recording as _recording
from bioprop.settling.circuit import (
    Settling,
    check_dynamical,
    free_populations,
    settling_of,
    symmetric_feedback,
)
from bioprop.settling.particles import ParticleBank
from bioprop.settling.reference import bptt
from bioprop.settling.settle import NonConvergenceWarning, Settled, plan, settle, targets

__all__ = ["EquilibriumPropagation", "EquilibriumState", "write_ep_grads", "ep_delta"]


class EquilibriumState(SweepState):
    """The free phase's fixed point as a :class:`SweepState` (``u``, ``r``), plus the
    :class:`~bioprop.settling.Settled` record it came from (``settled``)."""

    def __init__(self, settled: Settled):
        super().__init__(settled.u, settled.r)
        self.settled = settled


@torch.no_grad()
def write_ep_grads(
    circuit: Circuit,
    free: dict[str, torch.Tensor],
    nudged: dict[str, torch.Tensor],
    beta: float,
    minus: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the EP pseudo-gradient into every plastic feedforward pathway p → q.

    ``free``, ``nudged`` (and ``minus``) are the rates ρ(u) per population at the ends
    of the phases (batch-first).  One-sided (``minus`` None)::

        ĝ_W = −ΔW = (1/β) (1/N) (ρ_q⁰ᵀ ρ_p⁰ − ρ_q^βᵀ ρ_p^β),   ĝ_b = (1/β) ⟨ρ_q⁰ − ρ_q^β⟩

    symmetric (Laborieux et al. 2021)::

        ĝ_W = (1/2β) (1/N) (ρ_q^{−β}ᵀ ρ_p^{−β} − ρ_q^βᵀ ρ_p^β),   ĝ_b = (1/2β) ⟨ρ_q^{−β} − ρ_q^β⟩

    The update of W_qp reads the rates of p and q only (and W_qp's shape).  Where the
    source is the clamped input (the same x in both phases) it is one GEMM,
    ĝ_W = (1/β)(1/N) (ρ_q⁰ − ρ_q^β)ᵀ x.
    """
    if minus is None:
        lo, scale = free, 1.0 / beta
    else:
        lo, scale = minus, 1.0 / (2.0 * beta)
    hi = nudged
    for pw in circuit.feedforward_pathways():
        if not pw.plastic:
            continue
        q_lo, q_hi = lo[pw.target], hi[pw.target]
        p_lo, p_hi = lo[pw.source], hi[pw.source]
        n = q_hi.shape[0]
        dq = q_lo - q_hi
        if p_lo is p_hi:  # clamped source: ρ_p is the same in both phases
            pw.weight.grad = torch.addmm(pw.weight, dq.t(), p_hi, beta=0.0, alpha=scale / n)
        else:
            g = torch.addmm(pw.weight, q_lo.t(), p_lo, beta=0.0, alpha=scale / n)
            pw.weight.grad = g.addmm_(q_hi.t(), p_hi, alpha=-scale / n)
        if pw.bias is not None:
            pw.bias.grad = dq.mean(0).mul_(scale)


def ep_delta(
    free: dict[str, torch.Tensor],
    nudged: dict[str, torch.Tensor],
    beta: float,
    names: list[str],
    minus: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """EP's teaching signal per sample: δ_q = (ρ_q⁰ − ρ_q^β)/β (or (ρ_q^{−β} − ρ_q^β)/2β),
    the per-sample bias pseudo-gradient, which → ∂ℓ_n/∂b_q as β → 0."""
    if minus is None:
        return {q: (free[q] - nudged[q]) / beta for q in names}
    return {q: (minus[q] - nudged[q]) / (2.0 * beta) for q in names}


def _check_loss(loss: Loss) -> None:
    if loss.name != "mse":
        raise ValueError(
            f"ep nudges with the cost C = ½‖u_out − y‖² (Scellier & Bengio 2017); train it "
            f"with loss='mse', not {loss.name!r}"
        )


@register
class EquilibriumPropagation(Rule):
    """Equilibrium propagation: free phase, nudged phase, contrastive Hebbian update.

    The circuit's populations (but the clamped input) must be ``leaky``; the settling
    (ε, free steps, tolerance) is the circuit's (``circuit.settling``, see
    :func:`bioprop.settling.layered_dynamical`), so training and evaluation settle alike.
    On attach the rule installs a :class:`~bioprop.TransposePathway` (W itself, not a copy)
    behind every forward pathway whose source settles.

    Parameters
    ----------
    beta
        Nudging strength β ≠ 0 (F = E + β C, C = ½‖u_out − y‖²).
    nudged_steps
        Euler steps of the nudged phase (from the free fixed point).
    random_sign
        Draw the sign of β per batch (Scellier & Bengio's code).
    symmetric
        Add the −β phase of Laborieux et al. (2021): ĝ from ρ^β and ρ^{−β}.
    persistent
        Start each example's free phase from its last free fixed point (persistent
        particles); the bank lives in memory and is not checkpointed.
    nudged_tol
        Optional tolerance for the nudged phase (default: a fixed number of steps).

    Raises
    ------
    ValueError
        ``beta`` = 0 (the update is 0/0 there), bad step counts; at attach, populations
        that are not leaky, lateral pathways, or a feedback pathway that is not Wᵀ.
    """

    name = "ep"
    kind = "settling"
    description = (
        "equilibrium propagation: free and nudged settling of a symmetric circuit, "
        "contrastive Hebbian update (1/β)(ρ^β ρ^βᵀ − ρ⁰ρ⁰ᵀ)"
    )

    def __init__(
        self,
        beta: float = 0.5,
        nudged_steps: int = 4,
        random_sign: bool = False,
        symmetric: bool = False,
        persistent: bool = False,
        nudged_tol: float | None = None,
    ):
        super().__init__()
        if not isinstance(beta, (int, float)) or not math.isfinite(beta):
            raise ValueError(f"ep: beta must be a finite number, got {beta!r}")
        if beta == 0:
            raise ValueError(
                "ep: beta must be non-zero for training: the update (1/β)(ρ^β ρ^βᵀ − ρ⁰ρ⁰ᵀ) is "
                "0/0 at β = 0 (the nudged phase with β = 0 just reproduces the free state). "
                "Use a small beta such as 0.1–1.0, with random_sign=True or symmetric=True "
                "to cancel the finite-β bias"
            )
        if not isinstance(nudged_steps, int) or nudged_steps < 1:
            raise ValueError(f"ep: nudged_steps must be a positive integer, got {nudged_steps!r}")
        self.beta = float(beta)
        self.nudged_steps = nudged_steps
        self.random_sign = bool(random_sign)
        self.symmetric = bool(symmetric)
        self.persistent = bool(persistent)
        self.nudged_tol = nudged_tol
        self.generator = seeding.generator(0, "ep beta sign")
        self._bank = ParticleBank()
        self._plan = None
        self.last_beta = self.beta

    # -- attaching -----------------------------------------------------------------------
    def supports(self, circuit: Circuit) -> str | None:
        """Settling circuits only: every free population leaky, no lateral pathway."""
        try:
            check_dynamical(circuit)
        except ValueError as exc:
            return str(exc)
        return None

    def install(self, circuit: Circuit, generator: torch.Generator) -> None:
        mirrored = {fb.mirrors: fb for fb in circuit.feedback_pathways() if fb.mirrors}
        for pw in list(circuit.feedforward_pathways()):
            if pw.source == circuit.input:
                continue  # the input is clamped: nothing flows back into it
            fb = mirrored.get(pw.name)
            if isinstance(fb, TransposePathway) and fb._forward is pw:
                continue  # already symmetric (e.g. built by hand)
            if fb is None:
                self._add(circuit, TransposePathway(pw))
        symmetric_feedback(circuit)  # raises for a non-symmetric feedback pathway
        self._plan = plan(circuit)
        # the sign stream is drawn from the rule's seeded stream (seeding.generator(seed,
        # "feedback") under bioprop.train)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        self.generator = torch.Generator().manual_seed(seed)
        self._bank = ParticleBank()
        if type(circuit).forward is Circuit.forward:
            warnings.warn(
                "ep is attached to a plain Circuit: circuit(x) and bioprop.evaluate run its "
                "feedforward sweep, not the settling. Build it with "
                "bioprop.settling.layered_dynamical(...) (a DynamicalCircuit) so that test "
                "metrics are read at the free fixed point",
                UserWarning,
                stacklevel=3,
            )

    # -- one step ------------------------------------------------------------------------
    _trace_samples: int = 16

    def _start(self, keys: list[int] | None) -> dict[str, torch.Tensor] | None:
        """Where the free phase starts: the examples' persistent particles, or u = 0."""
        return self._bank.get(keys) if keys is not None else None

    def forward(self, circuit: Circuit, x: torch.Tensor) -> EquilibriumState:
        """The free phase: settle with the input clamped to x (β = 0)."""
        s = settling_of(circuit)
        self._plan = plan(circuit, s, self._plan)
        k = self._trace_samples if self.recording else 0
        keys = ParticleBank.keys(x) if self.persistent else None
        free = settle(circuit, x, s, start=self._start(keys), trace=k, plan_cache=self._plan)
        if keys is not None:
            self._bank.put(keys, free.u)
        return EquilibriumState(free)

    def _draw_beta(self) -> float:
        if self.random_sign and int(torch.randint(0, 2, (1,), generator=self.generator)) == 0:
            return -self.beta
        return self.beta

    def teach(self, circuit: Circuit, state: SweepState, y: torch.Tensor, loss: Loss) -> Signals:
        """The nudged phase(s) from the free fixed point, then ĝ into ``.grad``."""
        _check_loss(loss)
        if not isinstance(state, EquilibriumState):
            state = EquilibriumState(settle(circuit, state.r[circuit.input], plan_cache=self._plan))
        s = settling_of(circuit)
        free = state.settled
        x = free.r[circuit.input]
        out = circuit.output
        y = targets(y, free.u[out])
        beta = self._draw_beta()
        self.last_beta = beta
        k = self._trace_samples if self.recording else 0
        with torch.no_grad():
            phases = []
            for b in (beta, -beta) if self.symmetric else (beta,):
                phases.append(
                    settle(
                        circuit,
                        x,
                        s,
                        beta=b,
                        target=y,
                        start=free.u,
                        steps=self.nudged_steps,
                        tol=self.nudged_tol,
                        trace=k,
                        drive=free.drive,
                        plan_cache=self._plan,
                    )
                )
            nudged, minus = phases[0], (phases[1] if self.symmetric else None)
            write_ep_grads(circuit, free.r, nudged.r, beta, minus.r if minus else None)
            d = free.u[out] - y
            L = 0.5 * (d * d).sum(1).mean()
        signals = Signals(L, free.r[out])
        if self.recording:
            names = free_populations(circuit)
            signals.delta = ep_delta(free.r, nudged.r, beta, names, minus.r if minus else None)
            signals.records = _recording.values(
                circuit, s, x, y, beta, free, nudged, minus, self.nudged_steps, k
            )
        return signals

    # -- the family's reference ----------------------------------------------------------
    def reference(self, circuit: Circuit, x: torch.Tensor, y: Any, loss: Loss) -> Reference:
        """BPTT through the free phase that :meth:`step` runs on this batch (the same start
        — persistent particle or u = 0 —, ε and number of Euler steps), leaving ``.grad``
        and the particles alone: ∂L/∂θ of L = (1/N) Σ_n ½‖u_out,T − y_n‖², which the EP
        update approaches as β → 0 (:func:`bioprop.settling.bptt`)."""
        _check_loss(loss)
        s = settling_of(circuit)
        self._plan = plan(circuit, s, self._plan)
        start = self._start(ParticleBank.keys(x) if self.persistent else None)
        steps = s.steps
        if s.tol is not None:  # the free phase stops on its tolerance: count its steps
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NonConvergenceWarning)
                steps = settle(circuit, x, s, start=start, plan_cache=self._plan).steps
        return bptt(circuit, x, y, s, steps=steps, start=start, plan_cache=self._plan)

    # -- recording -----------------------------------------------------------------------
    def record_variables(self, circuit: Circuit, samples: int) -> dict[str, dict[str, Any]]:
        """Trajectories and energies over settling time (:mod:`bioprop.settling.recording`,
        ``docs/ep.md``); the BPTT reference is the trainer's ``weight_update_bp``."""
        self._trace_samples = int(samples)
        return _recording.variables(
            circuit, settling_of(circuit), self.nudged_steps, self.symmetric, samples
        )

    # -- bookkeeping ---------------------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        hp: dict[str, Any] = {
            "beta": self.beta,
            "nudged_steps": self.nudged_steps,
            "random_sign": self.random_sign,
            "symmetric": self.symmetric,
            "persistent": self.persistent,
            "nudged_tol": self.nudged_tol,
        }
        if self.circuit is not None:
            s: Settling = settling_of(self.circuit)
            hp.update(epsilon=s.epsilon, free_steps=s.steps, free_tol=s.tol, bounded=s.bounded)
        return hp

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])
