"""Kolen–Pollack feedback learning: the feedback matrices learn their way to Wᵀ.

Kolen & Pollack (1994) observed that two matrices given the *same* update and the *same*
weight decay forget their initial difference.  Akrout et al. (2019, "Deep learning without
weight transport", section "Kolen-Pollack algorithm") use it for feedback: the forward
weights learn as in feedback alignment, and each feedback matrix B learns with the
transposed same local update.  For a forward pathway ``p -> q`` (weight W, post x pre)
and its feedback pathway ``q -> p`` (weight B, pre x post of W)::

    δ_q = ∂ℓ/∂u_out                                   (q the output)
    δ_p = f'(u_p) ⊙ Σ_{p -> q} B_{q->p} δ_q            (as fa, through B, not Wᵀ)
    ΔW  = −η ⟨δ_q r_pᵀ⟩ − ηλ W                        (ĝ_W = ⟨δ_q r_pᵀ⟩)
    ΔB  = −η ⟨r_p δ_qᵀ⟩ − ηλ B                        (ĝ_B = ⟨r_p δ_qᵀ⟩ = ĝ_Wᵀ)

so ``W − Bᵀ`` obeys ``(W − Bᵀ)_{t+1} = (1 − ηλ)(W − Bᵀ)_t`` and decays as ``(1 − ηλ)^t``:
B → Wᵀ and the rule becomes backprop without any weight being transported.  (The
paper writes the decay as −λW per step; here λ is the optimizer's ``weight_decay``, so
the factor per step is 1 − ηλ.)  ĝ_B reads only what B's synapses see: δ_q, the signal
B carries, and r_p, the rate of the population B delivers to.

The rule writes ĝ_W and ĝ_B into ``.grad``; one ``torch.optim`` optimizer applies both.
B's parameters form the parameter group ``"feedback"`` (:meth:`KolenPollack.parameter_groups`),
so ``("sgd", {"lr": 0.01, "feedback_lr": 0.001, "weight_decay": 1e-4})`` gives B its own
learning rate (default: ``lr``), while ``weight_decay`` applies to W and B alike — as the
decay of W − Bᵀ needs.
"""

from __future__ import annotations

import torch

from bioprop.core import init as _init
from bioprop.core.circuit import Circuit, SweepState
from bioprop.core.losses import Loss
from bioprop.core.pathway import Pathway
from bioprop.rules.contract import Rule, Signals, write_pathway_grads
from bioprop.rules.feedback_alignment import (
    install_mirrors,
    mirror_feedback,
    output_error,
    propagate,
)
from bioprop.rules.registry import register

__all__ = ["KolenPollack", "write_feedback_grads"]


def write_feedback_grads(
    state: SweepState, delta: dict[str, torch.Tensor], feedback: dict[str, Pathway]
) -> None:
    """ĝ_B = ⟨r_p δ_qᵀ⟩ = (1/N) Σ_n r_p,n δ_q,nᵀ for every feedback pathway ``q -> p``.

    Reads δ_q (the teaching signal B carries) and r_p (the rate at B's target) only;
    a B whose source has no δ gets ``.grad = None``.
    """
    for fb in feedback.values():
        d = delta.get(fb.source)  # δ_q: B's presynaptic signal
        if d is None:
            fb.weight.grad = None
            continue
        r = state.r[fb.target]  # r_p: the rate of the population B projects to
        # ĝ_B = r_pᵀ δ_q / N  (n_p x n_q), the transpose of write_pathway_grads' ĝ_W
        fb.weight.grad = torch.addmm(fb.weight, r.t(), d, beta=0.0, alpha=1.0 / d.shape[0])


@register
class KolenPollack(Rule):
    """Kolen–Pollack: fa's teaching signals through B, and B learns ĝ_B = ĝ_Wᵀ.

    Parameters
    ----------
    feedback_init
        Initialiser of B (an :class:`bioprop.core.init.Init` or a name; default: the
        forward pathway's own initialiser).

    Notes
    -----
    Kolen & Pollack (1994), "Backpropagation without weight transport", Proc. IEEE ICNN;
    Akrout, Wilson, Humphreys, Lillicrap & Tweed (2019), "Deep learning without weight
    transport", NeurIPS 32 (the Kolen-Pollack algorithm: ΔW_{l+1} = −η δ_{l+1} y_lᵀ − λW_{l+1},
    ΔB_{l+1} = −η y_l δ_{l+1}ᵀ − λB_{l+1}).
    """

    name = "kp"
    description = "Kolen-Pollack: errors return through B, which learns the transposed update"
    kind = "layered"

    def __init__(self, feedback_init: _init.Init | str | None = None):
        super().__init__()
        if feedback_init is not None:
            _init.resolve(feedback_init)  # a bad name or type fails here, not at attach
        self.feedback_init = feedback_init
        self.feedback: dict[str, Pathway] = {}

    # -- which circuits ------------------------------------------------------------------
    def supports(self, circuit: Circuit) -> str | None:
        why = super().supports(circuit)
        if why:
            return why
        mirrored = [p.mirrors for p in circuit.feedback_pathways() if p.mirrors]
        if mirrored:
            return (
                f"rule 'kp' installs its own feedback pathway for every forward pathway, but "
                f"this circuit already has feedback pathways mirroring {mirrored} (another "
                "rule's?); start from a circuit without them"
            )
        for pw in circuit.feedforward_pathways():
            if pw.source == circuit.input:
                continue
            if not pw.plastic:
                return (
                    f"rule 'kp' drives B toward Wᵀ by giving W and B the same update, but "
                    f"forward pathway {pw.name!r} is fixed (plastic=False), so its B would "
                    "drift away from Wᵀ; make it plastic, or use 'fa' for fixed feedback"
                )
            if type(pw).effective_weight is not Pathway.effective_weight:
                return (
                    f"rule 'kp' needs forward pathways that hold their own weight, but "
                    f"{pw.name!r} is a {type(pw).__name__}"
                )
        return None

    # -- attaching: one plastic B per forward pathway above the input ---------------------
    def install(self, circuit: Circuit, generator: torch.Generator) -> None:
        self.feedback = install_mirrors(  # plastic=True is the difference from fa: B learns
            self, circuit, lambda fw: mirror_feedback(fw, self.feedback_init, generator, True)
        )

    # -- one step ------------------------------------------------------------------------
    def teach(self, circuit: Circuit, state: SweepState, y: torch.Tensor, loss: Loss) -> Signals:
        with torch.no_grad():
            e = output_error(circuit, state, y, loss)  # δ_out = ∂ℓ/∂u_out
            delta = propagate(circuit, state, e, self.feedback)  # δ_p = f'(u_p) ⊙ Σ B δ_q
            write_pathway_grads(circuit, state, delta)  # ĝ_W = ⟨δ_q r_pᵀ⟩
            write_feedback_grads(state, delta, self.feedback)  # ĝ_B = ⟨r_p δ_qᵀ⟩
            out = circuit.output
            L = loss(state.r[out], y)
        return Signals(L, state.r[out], delta)

    # -- bookkeeping ---------------------------------------------------------------------
    def parameter_groups(self, circuit: Circuit) -> list[dict]:
        """B's weights as the group ``"feedback"`` (its lr: the spec's ``feedback_lr``,
        else ``lr``)."""
        return [{"name": "feedback", "params": [fb.weight for fb in self.feedback.values()]}]

    def hyperparameters(self) -> dict:
        return {"feedback_init": repr(self.feedback_init) if self.feedback_init else "like-forward"}
