"""Settling circuits: what they are made of and how they settle.

A *settling* circuit has a clamped input population (its rates are the data x) and free
populations with state u (``dynamics="leaky"``) coupled by symmetric pathways: every
feedforward pathway ``p -> q`` with weight W_qp is matched by a feedback pathway
``q -> p`` whose weight *is* W_qpᵀ (:class:`bioprop.TransposePathway`, no copy).  Its
states follow the gradient flow of an energy (:mod:`bioprop.settling.energy`), integrated
by :func:`bioprop.settling.settle` with the circuit's :class:`Settling` options.

Here: :class:`Settling` (ε, steps, tolerance), :class:`DynamicalCircuit` (a circuit whose
output is read at the free fixed point), the builders :func:`layered_dynamical` and
:func:`layered_twin`, and the structure checks :func:`check_dynamical` and
:func:`symmetric_feedback`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bioprop.core import init as _init
from bioprop.core.circuit import Circuit
from bioprop.core.pathway import Pathway, TransposePathway

__all__ = [
    "Settling",
    "DynamicalCircuit",
    "layered_dynamical",
    "layered_twin",
    "check_dynamical",
    "symmetric_feedback",
    "free_populations",
    "settling_of",
]


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
        tolerance, running out of steps emits a
        :class:`~bioprop.settling.settle.NonConvergenceWarning`.
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


# -- structure ------------------------------------------------------------------------------
def free_populations(circuit: Circuit) -> list[str]:
    """Populations that settle: every population but the clamped input, in sweep order."""
    return [n for n in circuit.order() if n != circuit.input]


def settling_of(circuit: Circuit) -> Settling:
    """The circuit's :class:`Settling` (``circuit.settling``), or the defaults."""
    s = getattr(circuit, "settling", None)
    return s if isinstance(s, Settling) else Settling()


def symmetric_feedback(circuit: Circuit) -> dict[str, TransposePathway]:
    """``{forward pathway: its TransposePathway}`` for every feedforward pathway whose
    source settles (pathways from the clamped input need no feedback).

    Raises
    ------
    ValueError
        When a forward pathway has no feedback, or its feedback is not Wᵀ itself
        (a random B, a copy of Wᵀ that would drift apart, ...).
    """
    from bioprop.analysis.alignment import angle

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
            ang = angle(fb.effective_weight(), pw.weight.t())
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
                "input. Build the circuit with bioprop.settling.layered_dynamical(...) or "
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


# -- circuits -------------------------------------------------------------------------------
class DynamicalCircuit(Circuit):
    """A :class:`Circuit` whose output is read at the free fixed point.

    ``circuit(x)`` (and so :func:`bioprop.evaluate`) settles the circuit with
    ``self.settling`` and returns the output rates; :meth:`sweep` is still the
    feedforward sweep of the layered twin.
    """

    def __init__(self, seed: int = 0, settling: Settling | None = None):
        super().__init__(seed=seed)
        self.settling = settling if settling is not None else Settling()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output rates at the end of the free phase (no autograd graph: use
        :func:`bioprop.settling.bptt`)."""
        from bioprop.settling.settle import settle

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
