"""The rule contract: every learning rule, of every family, is a *gradient estimator*.

A rule states which circuit kind it runs on (:attr:`Rule.kind`: ``layered``, ``settling``,
``recurrent`` or ``spiking``) and can refuse a circuit it cannot handle
(:meth:`Rule.supports` returns what it needs, like brian2's state updaters refusing
equations they cannot integrate).  Attached to a circuit it installs the feedback pathways
it needs (:meth:`Rule.attach`).  One :meth:`Rule.step` on a batch computes the teaching
signal each population receives through those pathways and writes a pseudo-gradient ĝ
into ``.grad`` of every plastic parameter it trains; any ``torch.optim`` optimizer then
applies it (a spiking rule runs its brian2 equations instead and writes the weights back).
:meth:`Rule.reference` returns the family's exact reference for the same batch — autograd
bp, BPTT through the settling, BPTT through time, or the rate twin's bp — as one
:class:`~bioprop.rules.reference.Reference`.

A layered step has two phases so that locality can be tested from outside:

* :meth:`Rule.forward` — the forward sweep, returning a :class:`SweepState`;
* :meth:`Rule.teach` — everything after it: teaching signals and ``.grad``.

A rule's ``teach`` reads only what its equations say it reads.

A recurrent step takes a batch of sequences: ``step(circuit, x, y, loss)`` with ``x`` a
:class:`bioprop.recurrent.Batch` (inputs, targets and mask, time first), ``y = None`` and
``loss = None`` (the family's sequence loss); ``reference`` takes the same and returns full
BPTT through the sequence.  ``Signals.loss`` is L of the whole sequence, ``Signals.output``
the logits ``(time, batch, n_out)`` (see :mod:`bioprop.rules.recurrent`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from bioprop.core import seeding
from bioprop.core.circuit import Circuit, SweepState
from bioprop.core.losses import Loss
from bioprop.rules.reference import Reference

__all__ = [
    "KINDS",
    "Rule",
    "Signals",
    "UnsupportedCircuitError",
    "write_pathway_grads",
    "apply_sgd_directly",
]

#: The circuit kinds a rule can run on (see :attr:`bioprop.Circuit.kind`).
KINDS = ("layered", "settling", "recurrent", "spiking")


class UnsupportedCircuitError(ValueError):
    """A rule was given a circuit it cannot train; the message says what it needs."""


@dataclass
class Signals:
    """What one rule step produced besides ``.grad``.

    Attributes
    ----------
    loss
        Batch-mean loss L of the clean forward pass (a detached scalar).
    output
        Output rates of that pass (detached), for error counting.
    delta
        Teaching signal per population, per sample: ``{population: (N, n)}``.
        For error-propagating rules δ_p ≈ ∂ℓ_n/∂u_p.
    rates
        Rates r of each population in the clean pass (filled in by :meth:`Rule.step`).
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
    """Base class of learning rules of every family.

    Subclasses set ``name``, ``description`` and ``kind``, and implement :meth:`teach`
    (layered and settling rules) or :meth:`step` (recurrent and spiking rules), plus
    :meth:`install` if they need feedback pathways and :meth:`reference` if their family's
    exact reference is not autograd bp through the feedforward sweep.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: the circuit kind this rule runs on (one of :data:`KINDS`)
    kind: ClassVar[str] = "layered"
    #: True for a rule that *is* its family's exact reference (bp), so comparing it with
    #: the reference says nothing
    is_reference: ClassVar[bool] = False
    #: (batch type, what it is, what it carries) for families whose batches bring their own
    #: targets and loss (sequences, episodes): their ``step`` checks calls with
    #: :func:`check_batch_call`; None for rules stepped on (x, y, loss)
    batch_call: ClassVar[tuple | None] = None

    def __init__(self) -> None:
        self.circuit: Circuit | None = None
        self.installed: list[str] = []

    # -- which circuits ------------------------------------------------------------------
    def supports(self, circuit: Circuit) -> str | None:
        """``None`` if this rule can train ``circuit``, else a sentence saying what it needs.

        The default accepts circuits of this rule's :attr:`kind`; families refine it."""
        if getattr(circuit, "kind", None) != self.kind:
            return (
                f"rule {self.name!r} trains {self.kind} circuits, but this circuit is "
                f"{getattr(circuit, 'kind', type(circuit).__name__)}"
            )
        return None

    def check(self, circuit: Circuit) -> None:
        """Raise :class:`UnsupportedCircuitError` if :meth:`supports` refuses ``circuit``."""
        why = self.supports(circuit)
        if why:
            raise UnsupportedCircuitError(why)

    # -- attaching -----------------------------------------------------------------------
    def attach(self, circuit: Circuit, generator: torch.Generator | None = None) -> Rule:
        """Install this rule's feedback pathways into ``circuit`` (drawn from ``generator``,
        by default ``seeding.generator(circuit.seed, "feedback")``).  Returns self."""
        if self.circuit is circuit:
            return self
        if self.circuit is not None:
            raise RuntimeError(
                f"rule {self.name!r} is already attached to another circuit; make a new rule "
                f"with bioprop.rules.get({self.name!r}) for this one"
            )
        self.check(circuit)
        if generator is None:
            generator = seeding.generator(circuit.seed, "feedback")
        if self.kind in ("layered", "settling"):
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

    def step(self, circuit: Circuit, x: torch.Tensor, y: Any, loss: Loss) -> Signals:
        """One update on a batch: ``forward`` then ``teach``.  ``.grad`` of trained
        parameters is overwritten; parameters the rule does not train are left with
        ``.grad = None``."""
        state = self.forward(circuit, x)
        signals = self.teach(circuit, state, y, loss)
        if not signals.rates:
            signals.rates = state.r
        return signals

    def reference(self, circuit: Circuit, x: torch.Tensor, y: Any, loss: Loss) -> Reference:
        """The family's exact reference for this batch, leaving ``.grad`` alone.

        Default (layered rules): autograd bp through the feedforward sweep; settling,
        recurrent and spiking rules return BPTT through the settling, full BPTT through
        the sequence, or the rate twin's bp."""
        from bioprop.rules.reference import backprop

        return backprop(circuit, x, y, loss)

    # -- bookkeeping ---------------------------------------------------------------------
    def parameter_groups(self, circuit: Circuit) -> list[dict[str, Any]]:
        """Optimizer parameter groups beyond the circuit's forward parameters, each a dict
        with ``params`` and optionally ``name`` and ``lr`` (e.g. a synthetic-gradient
        module at its own learning rate).  Default: none."""
        return []

    def record_variables(self, circuit: Circuit, samples: int) -> dict[str, dict[str, Any]]:
        """Rule-specific variables to lay out in recordings:
        ``{group path: {name: bioprop.recording.writer.ExtraVariable}}`` (default none).
        On recording steps the trainer sets ``self.recording = True`` before the step,
        and the rule fills ``Signals.records`` with matching values."""
        return {}

    recording: bool = False

    #: True for rules whose ``teach`` ends with :func:`write_pathway_grads` and reads no
    #: forward weight after it (fa, dfa, sign-symmetry, shallow, node perturbation): with
    #: plain SGD the batch loop may then let that call apply the update to the weights
    #: directly on steps that are not recorded (:func:`apply_sgd_directly`)
    direct_updates: bool = False

    def on_epoch(self, epoch: int) -> None:
        """Called by the batch loop at the start of every epoch (0-based, before its first
        step; also for the epoch a resumed run continues).  Default: nothing.  A rule whose
        schedule depends on the epoch uses it, e.g. target propagation's alternating
        schedule (an epoch training the inverses, then one training the forward weights)."""

    def after_step(self, circuit: Circuit) -> None:
        """Called by the batch loop after every optimizer step.  Default: nothing.  A rule
        that constrains the weights it trains uses it, e.g. kickback's ``keep_coherent``
        (weights that would break coherence are clipped at zero)."""

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


def _grad_buffer(p: torch.Tensor) -> torch.Tensor:
    """A tensor like ``p`` for its gradient, allocated once per parameter (kept on the
    parameter; made again only when the parameter changes shape, device or dtype)."""
    buf = getattr(p, "_bioprop_grad", None)
    if buf is None or buf.shape != p.shape or buf.device != p.device or buf.dtype != p.dtype:
        buf = torch.empty_like(p, memory_format=torch.contiguous_format)
        p._bioprop_grad = buf
    return buf


#: the attribute that arms a parameter for a direct SGD update (its optimizer group)
DIRECT = "_bioprop_sgd_group"


def apply_sgd_directly(params, optimizer: torch.optim.Optimizer | None) -> bool:
    """Arm (``optimizer`` given) or disarm (None) ``params`` for direct SGD updates.

    Armed, :func:`write_pathway_grads` applies plain SGD with weight decay itself,
    W ← (1 − η λ) W − η ĝ_W — one in-place GEMM, W.addmm_(δᵀ, r, β = 1 − ηλ,
    α = −η/N) — instead of writing ĝ into ``.grad`` for the optimizer to apply in a second
    pass over W; ``.grad`` stays None, so the optimizer's step skips the parameter.  Only a
    ``torch.optim.SGD`` without momentum, Nesterov or maximize qualifies; returns whether
    the parameters were armed."""
    params = list(params)
    if optimizer is None:
        for p in params:
            if hasattr(p, DIRECT):
                delattr(p, DIRECT)
        return False
    if type(optimizer) is not torch.optim.SGD:
        return False
    groups = {}
    for g in optimizer.param_groups:
        if g.get("momentum", 0) or g.get("nesterov") or g.get("maximize"):
            return False
        if g.get("differentiable"):
            return False
        groups.update({id(p): g for p in g["params"]})
    for p in params:
        if id(p) in groups:
            setattr(p, DIRECT, groups[id(p)])
    return True


def write_pathway_grads(
    circuit: Circuit,
    state: SweepState,
    delta: dict[str, torch.Tensor],
    only: set[str] | None = None,
) -> None:
    """Write ĝ_W = (1/N) Σ_n δ_q,n r_p,nᵀ and ĝ_b = (1/N) Σ_n δ_q,n into every plastic
    feedforward pathway ``p -> q`` whose target has a teaching signal δ_q — or, for a
    parameter armed by :func:`apply_sgd_directly`, apply the SGD step with them at once.

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
        group = getattr(pw.weight, DIRECT, None)
        if group is not None:
            _sgd_in_place(pw, d, r_pre, group)
            continue
        # ĝ_W = δ_qᵀ r_p / N   (post x pre), one fused GEMM into a buffer kept across steps
        # (a fresh multi-MB tensor every step costs page faults; the optimizer's
        # zero_grad(set_to_none=True) drops .grad, the buffer stays)
        with torch.no_grad():  # a gradient is data, never part of a graph
            pw.weight.grad = torch.addmm(
                pw.weight, d.t(), r_pre, beta=0.0, alpha=1.0 / n, out=_grad_buffer(pw.weight)
            )
            if pw.bias is not None:
                pw.bias.grad = torch.mean(d, dim=0, out=_grad_buffer(pw.bias))


def _sgd_in_place(pw, d: torch.Tensor, r_pre: torch.Tensor, group: dict) -> None:
    """W ← (1 − ηλ) W − (η/N) δᵀ r and b ← (1 − ηλ) b − η mean(δ), η and λ the group's
    ``lr`` and ``weight_decay`` now (a scheduler's changes apply)."""
    lr, wd = group["lr"], group.get("weight_decay", 0.0)
    with torch.no_grad():
        pw.weight.addmm_(d.t(), r_pre, beta=1.0 - lr * wd, alpha=-lr / d.shape[0])
        pw.weight.grad = None
        if pw.bias is not None:
            bgroup = getattr(pw.bias, DIRECT, group)
            blr, bwd = bgroup["lr"], bgroup.get("weight_decay", 0.0)
            if bwd:
                pw.bias.mul_(1.0 - blr * bwd)
            pw.bias.add_(d.mean(dim=0), alpha=-blr)
            pw.bias.grad = None


def check_batch_call(rule: Rule, x: Any, y: Any, loss: Any):
    """``x`` if it is the batch type of ``rule.batch_call`` and ``y`` and ``loss`` are None —
    the call of a rule whose batches carry their own targets and loss (sequences, episodes)
    — else a clear error.  ``rule.batch_call`` is (batch type, what it is, what it carries),
    e.g. ``(Batch, "a batch of sequences", "the Batch (its y, mask and the sequence loss)")``."""
    batch, what, carries = rule.batch_call
    if not isinstance(x, batch):
        raise TypeError(
            f"rule {rule.name!r} steps on {what}: step(circuit, batch, None, None) with a "
            f"{batch.__module__.rsplit('.', 1)[0]}.{batch.__name__}, got {type(x).__name__}"
        )
    if y is not None or loss is not None:
        raise ValueError(
            f"rule {rule.name!r}: the targets and the loss come with {carries}; pass y=None "
            "and loss=None"
        )
    return x
