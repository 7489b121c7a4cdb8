"""The learning-rule interface: a rule is a *gradient estimator*.

Given a circuit and a batch, a rule computes the teaching signal each
population receives (an error δ, a target, a nudged state, ...) through the
circuit's feedback pathways, and writes a pseudo-gradient ĝ into ``.grad`` of
every plastic parameter it trains.  Any ``torch.optim`` optimizer then applies
it.  A rule installs the feedback pathways it needs when it is attached.

A step has two phases so that locality can be tested from outside:

* :meth:`Rule.forward` — the forward sweep, returning a :class:`SweepState`;
* :meth:`Rule.teach` — everything after it: teaching signals and ``.grad``.

A rule's ``teach`` reads only what its equations say it reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from bioprop.circuit import Circuit, SweepState
from bioprop.losses import Loss

__all__ = ["Rule", "Signals", "write_pathway_grads"]


@dataclass
class Signals:
    """What one rule step produced besides ``.grad``.

    Attributes
    ----------
    loss
        Batch-mean loss L of the clean forward sweep (a detached scalar).
    output
        Output rates of that sweep (detached), for error counting.
    delta
        Teaching signal per population, per sample: ``{population: (N, n)}``.
        For error-propagating rules δ_p ≈ ∂ℓ_n/∂u_p.
    rates
        Rates r of each population in the clean sweep (filled in by :meth:`Rule.step`).
    extra
        Rule-specific quantities for the caller (not recorded).
    records
        Rule-specific values to record: ``{group path: {variable: tensor}}`` matching
        what :meth:`Rule.record_variables` declared (e.g. a settling trajectory).
    """

    loss: torch.Tensor
    output: torch.Tensor
    delta: dict[str, torch.Tensor] = field(default_factory=dict)
    rates: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)


class Rule:
    """Base class of learning rules.  Subclasses set ``name`` and ``description``,
    and implement :meth:`teach` (and :meth:`install` if they need feedback pathways)."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self) -> None:
        self.circuit: Circuit | None = None
        self.installed: list[str] = []

    # -- attaching -----------------------------------------------------------------------
    def attach(self, circuit: Circuit, generator: torch.Generator | None = None) -> Rule:
        """Install this rule's feedback pathways into ``circuit`` (drawn from ``generator``,
        by default one seeded from ``circuit.seed + 1``).  Returns self."""
        if self.circuit is circuit:
            return self
        if self.circuit is not None:
            raise RuntimeError(
                f"rule {self.name!r} is already attached to another circuit; make a new rule "
                f"with bioprop.rules.get({self.name!r}) for this one"
            )
        if generator is None:
            generator = torch.Generator().manual_seed(circuit.seed + 1)
        circuit.order()  # validate the circuit before installing anything
        self.circuit = circuit
        self.installed = []
        self.install(circuit, generator)
        return self

    def install(self, circuit: Circuit, generator: torch.Generator) -> None:
        """Add the feedback pathways this rule needs (default: none)."""

    def _add(self, circuit: Circuit, pathway) -> None:
        circuit.add_pathway(pathway)
        self.installed.append(pathway.name)

    # -- one step ------------------------------------------------------------------------
    def forward(self, circuit: Circuit, x: torch.Tensor) -> SweepState:
        """The forward sweep (no autograd graph: rules other than bp need none)."""
        with torch.no_grad():
            return circuit.sweep(x)

    def teach(self, circuit: Circuit, state: SweepState, y: torch.Tensor, loss: Loss) -> Signals:
        """Compute teaching signals and write ``.grad``; return the :class:`Signals`."""
        raise NotImplementedError

    def step(self, circuit: Circuit, x: torch.Tensor, y: torch.Tensor, loss: Loss) -> Signals:
        """``forward`` then ``teach``.  ``.grad`` of trained parameters is overwritten;
        parameters the rule does not train are left with ``.grad = None``."""
        state = self.forward(circuit, x)
        signals = self.teach(circuit, state, y, loss)
        if not signals.rates:
            signals.rates = state.r
        return signals

    # -- bookkeeping ---------------------------------------------------------------------
    def record_variables(self, circuit: Circuit, samples: int) -> dict[str, dict[str, Any]]:
        """Rule-specific variables to lay out in recordings:
        ``{group path: {name: bioprop.recorder.ExtraVariable}}`` (default none).
        On recording steps the trainer sets ``self.recording = True`` before the step,
        and the rule fills ``Signals.records`` with matching values."""
        return {}

    recording: bool = False

    def hyperparameters(self) -> dict[str, Any]:
        """Hyper-parameters, stored in recordings' provenance."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Internal state beyond the circuit's (e.g. a noise generator), for checkpoints."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({hp})"


def write_pathway_grads(
    circuit: Circuit,
    state: SweepState,
    delta: dict[str, torch.Tensor],
    only: set[str] | None = None,
) -> None:
    """Write ĝ_W = (1/N) Σ_n δ_q,n r_p,nᵀ and ĝ_b = (1/N) Σ_n δ_q,n into every plastic
    feedforward pathway ``p -> q`` whose target has a teaching signal δ_q.

    Pathways without a δ at their target (or outside ``only``) get ``.grad = None``.
    """
    for pw in circuit.feedforward_pathways():
        if not pw.plastic:
            continue
        d = delta.get(pw.target)
        if d is None or (only is not None and pw.name not in only):
            pw.weight.grad = None
            if pw.bias is not None:
                pw.bias.grad = None
            continue
        n = d.shape[0]
        r_pre = state.r[pw.source]
        # ĝ_W = δ_qᵀ r_p / N   (post x pre), one fused GEMM
        pw.weight.grad = torch.addmm(pw.weight, d.t(), r_pre, beta=0.0, alpha=1.0 / n)
        if pw.bias is not None:
            pw.bias.grad = d.mean(dim=0)
