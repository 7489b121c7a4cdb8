"""Random-feedback rules: feedback alignment, direct FA and sign symmetry.

All three send the output error e = ∂ℓ/∂u_out back through fixed feedback
pathways instead of the transposed forward weights Wᵀ (no weight transport):

* **fa** (Lillicrap et al. 2016)::

      δ_p = f'(u_p) ⊙ Σ_{p -> q} B_{q->p} δ_q          (B_{q->p} fixed, random)

* **dfa** (Nøkland 2016)::

      δ_p = f'(u_p) ⊙ B_{out->p} e                      (straight from the output error)

* **sign-symmetry** (Liao, Leibo & Poggio 2016)::

      δ_p = f'(u_p) ⊙ Σ_{p -> q} (|M_{q->p}| ⊙ sign(W_{q<-p}ᵀ)) δ_q

Every plastic feedforward pathway p -> q then gets ĝ_W = ⟨δ_q r_pᵀ⟩ and
ĝ_b = ⟨δ_q⟩ (batch means).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from bioprop.core import init as _init
from bioprop.core.circuit import Circuit, SweepState
from bioprop.core.losses import Loss
from bioprop.core.pathway import Pathway, SignSymmetricPathway
from bioprop.rules.contract import Rule, Signals, write_pathway_grads
from bioprop.rules.registry import register

__all__ = ["FeedbackAlignment", "DirectFeedbackAlignment", "SignSymmetry"]


def _draw(spec, forward: Pathway, shape, generator) -> tuple[torch.Tensor, _init.Init]:
    """Feedback weights from ``spec``, or — when None — like the forward pathway's init."""
    default = forward.init if forward.init is not None else _init.kaiming_uniform()
    chosen = _init.resolve(spec, default)
    return chosen(shape, generator), chosen


def output_error(circuit: Circuit, state: SweepState, y: torch.Tensor, loss: Loss) -> torch.Tensor:
    """e = ∂ℓ/∂u_out, local to the output population."""
    out = circuit.output
    return loss.output_error(state.u[out], state.r[out], y, circuit.populations[out].act)


def propagate(
    circuit: Circuit, state: SweepState, e: torch.Tensor, feedback: dict[str, Pathway]
) -> dict[str, torch.Tensor]:
    """δ_p = f'(u_p) ⊙ Σ_{p->q} F_{q->p}(δ_q), visiting populations in reverse sweep order.

    ``feedback`` maps each forward pathway's name to the feedback pathway that
    carries δ back across it.
    """
    delta = {circuit.output: e}
    for name in reversed(circuit.order()):
        if name in (circuit.output, circuit.input):
            continue
        total = None
        for pw in circuit.outgoing(name):
            d = delta.get(pw.target)
            if d is None:
                continue
            back = feedback[pw.name].forward(d)  # B δ_q  (batch x n_p)
            total = back if total is None else total + back
        if total is None:
            continue
        pop = circuit.populations[name]
        if pop.act.name != "linear":
            total = total * pop.act.fprime(state.u[name], state.r[name])
        delta[name] = total
    return delta


def mirror_feedback(
    forward: Pathway, spec, generator: torch.Generator, plastic: bool = False
) -> Pathway:
    """The feedback pathway ``target -> source`` that carries δ back across ``forward``: role
    ``feedback``, ``mirrors`` the forward pathway, weight B (source.size × target.size)
    drawn from ``spec`` (None: like the forward pathway's init), no bias."""
    n_post, n_pre = forward.shape
    w, used = _draw(spec, forward, (n_pre, n_post), generator)
    return Pathway(
        forward.target,
        forward.source,
        w,
        None,
        role="feedback",
        plastic=plastic,
        mirrors=forward.name,
        init=used,
    )


def install_mirrors(
    rule: Rule,
    circuit: Circuit,
    make: Callable[[Pathway], Pathway],
) -> dict[str, Pathway]:
    """Add ``make(forward)`` for every feedforward pathway that leaves a hidden population
    (no teaching signal is sent to the input); returns them by forward pathway name."""
    feedback = {}
    for fw in list(circuit.feedforward_pathways()):
        if fw.source == circuit.input:
            continue
        fb = make(fw)
        rule._add(circuit, fb)
        feedback[fw.name] = fb
    return feedback


class _FeedbackRule(Rule):
    """Shared machinery: one feedback pathway per forward pathway leaving a hidden population."""

    direct_updates = True  # teach ends with write_pathway_grads

    def __init__(self, feedback_init: _init.Init | str | None = None):
        super().__init__()
        self.feedback_init = feedback_init
        self.feedback: dict[str, Pathway] = {}

    def _make(self, forward: Pathway, generator: torch.Generator) -> Pathway:
        return mirror_feedback(forward, self.feedback_init, generator)

    def install(self, circuit, generator):
        self.feedback = install_mirrors(self, circuit, lambda fw: self._make(fw, generator))

    def teach(self, circuit, state, y, loss):
        with torch.no_grad():
            e = output_error(circuit, state, y, loss)
            delta = propagate(circuit, state, e, self.feedback)
            write_pathway_grads(circuit, state, delta)
            out = circuit.output
            L = loss(state.r[out], y)
        return Signals(L, state.r[out], delta)

    def hyperparameters(self):
        return {"feedback_init": repr(self.feedback_init) if self.feedback_init else "like-forward"}


@register
class FeedbackAlignment(_FeedbackRule):
    """Feedback alignment: δ_p = f'(u_p) ⊙ Σ B_{q->p} δ_q with fixed random B.

    Parameters
    ----------
    feedback_init
        Initialiser of B (default: the forward pathway's own initialiser).
    """

    name = "fa"
    description = "feedback alignment: errors return through fixed random matrices B"


@register
class DirectFeedbackAlignment(_FeedbackRule):
    """Direct feedback alignment: δ_p = f'(u_p) ⊙ B_{out->p} e for every hidden p.

    Parameters
    ----------
    feedback_init
        Initialiser of each B (default: the init of the pathway into the output).
    """

    name = "dfa"
    description = "direct feedback alignment: the output error reaches every layer through B"

    def install(self, circuit, generator):
        out = circuit.output
        n_out = circuit.populations[out].size
        into_out = circuit.incoming(out)
        self.feedback = {}
        for name in circuit.hidden():
            direct = [pw for pw in into_out if pw.source == name]
            like = direct[0] if direct else into_out[0]
            w, used = _draw(
                self.feedback_init, like, (circuit.populations[name].size, n_out), generator
            )
            fb = Pathway(
                out,
                name,
                w,
                None,
                role="feedback",
                plastic=False,
                mirrors=direct[0].name if direct else None,
                init=used,
            )
            self._add(circuit, fb)
            self.feedback[name] = fb

    def teach(self, circuit, state, y, loss):
        with torch.no_grad():
            out = circuit.output
            e = output_error(circuit, state, y, loss)
            delta = {out: e}
            for name, fb in self.feedback.items():
                d = fb.forward(e)  # B_p e
                pop = circuit.populations[name]
                if pop.act.name != "linear":
                    d = d * pop.act.fprime(state.u[name], state.r[name])
                delta[name] = d
            write_pathway_grads(circuit, state, delta)
            L = loss(state.r[out], y)
        return Signals(L, state.r[out], delta)


@register
class SignSymmetry(_FeedbackRule):
    """Sign symmetry: B = |M| ⊙ sign(Wᵀ), magnitudes |M| fixed, signs read from current W."""

    name = "sign-symmetry"
    description = "feedback |B| ⊙ sign(Wᵀ): random magnitudes, signs of the forward weights"

    def _make(self, forward, generator):
        n_post, n_pre = forward.shape
        m, used = _draw(self.feedback_init, forward, (n_pre, n_post), generator)
        return SignSymmetricPathway(forward, m, init=used)
