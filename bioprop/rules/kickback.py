"""Kickback (Balduzzi, Vanchinathan & Buhmann, "Kickback cuts Backprop's red-tape", AAAI 2015).

Units are *rectilinear*: r_j = s_j · max(u_j, 0) with a sign s_j = ±1 per unit
(:class:`bioprop.core.activations.Rectilinear`), so f'(u_j) = s_j 1_j with the gate
1_j = 1[u_j > 0].  Backprop's update of the weights into unit j is gradient descent on the
unit's *rectilinear loss* φ_j · r_j (the paper's Theorem 1), where the feedback
φ_j = ∂ℓ/∂r_j = Σ_{j→k} W_kj f'(u_k) φ_k is computed recursively down the network.

Kickback truncates that feedback to two factors every unit has (our reading, see
``docs/rules.md``): every downstream φ_k is replaced by the global error::

    β_o   = −e_o = −∂ℓ/∂u_o              one global error per output o, broadcast
    τ_j   = Σ_{j→k} W_kj f'(u_k)         unit j's influence on the layer above: its own
                                         outgoing weights onto the active units (f'(u_k) =
                                         s_k 1_k: each counted with its target's sign; 1 for
                                         a linear output)
    φ_j   = −Σ_o β_o W_oj                j projects onto the outputs: each output's broadcast
                                         read through j's own synapse onto it (= bp's φ_j)
    φ_j   = −β̄ τ_j,  β̄ = Σ_o β_o        j reaches hidden units only
    δ_j   = φ_j f'(u_j) = φ_j s_j 1_j    ĝ_W = ⟨δ_q r_pᵀ⟩, ĝ_b = ⟨δ_q⟩

No per-unit error vector flows down: the only errors are the broadcast β, and a unit's
feedback is read through its own outgoing synapses, which carry back the responses
f'(u_k) of the units they reach (the "kickback").  Those synapses are installed as feedback
pathways (:class:`~bioprop.core.pathway.TransposePathway`, ``mirrors`` the forward
pathway): the pathway ``q -> p`` carries f'(u_q) (β at the output) back to p.

*Coherence* (our reading): unit j is coherent on a sample when its influence is positive,
τ_j > 0.  When every synapse onto an active hidden unit raises that unit's rate
(s_k W_kj ≥ 0) and every weight onto the outputs is ≥ 0, every unit is coherent and
kickback's δ_j is bp's δ_j divided by a positive factor per unit (the dropped part of the
feedback), so for one sample its update is a descent direction (``tests/test_kickback.py``;
:func:`make_coherent` builds such a network).  On recording steps the rule records the
fraction of coherent units, the agreement of its δ's signs with bp's, and the angle of its
update to bp's (group ``kickback``; :mod:`bioprop.analysis.kickback`).
"""

from __future__ import annotations

from typing import Any

import torch

from bioprop.analysis import kickback as _analysis  # noqa: F401  (bioprop.analysis.kickback)
from bioprop.analysis.alignment import angle
from bioprop.core.circuit import Circuit, SweepState
from bioprop.core.pathway import TransposePathway
from bioprop.recording.writer import ExtraVariable
from bioprop.rules.contract import Rule, Signals, write_pathway_grads
from bioprop.rules.feedback_alignment import output_error
from bioprop.rules.registry import register

__all__ = ["Kickback", "response", "influence", "make_coherent", "signs_of", "RECTIFYING"]

#: activations whose units are on or off (the gate 1_k of "active" units)
RECTIFYING = ("rectilinear", "relu")
OUTPUT_ACTIVATIONS = ("linear", *RECTIFYING)


def signs_of(circuit: Circuit, name: str) -> torch.Tensor:
    """s_j of every unit of population ``name``: its rectilinear signs, +1 for relu units."""
    pop = circuit.populations[name]
    if pop.activation == "rectilinear":
        return torch.tensor(pop.signs, dtype=torch.float32)
    return torch.ones(pop.size)


def response(circuit: Circuit, state: SweepState, name: str) -> torch.Tensor | None:
    """f'(u_k) = s_k 1_k of a rectifying population — each unit's gate, with its sign — or
    None for a linear population (every unit active, f' = 1)."""
    pop = circuit.populations[name]
    if pop.activation == "linear":
        return None
    return pop.act.fprime(state.u[name], state.r[name])


def influence(circuit: Circuit, state: SweepState, name: str, feedback=None) -> torch.Tensor:
    """τ_j = Σ_{j→k} W_kj f'(u_k) per sample (N, n_j): how much unit j's rate drives the
    rates of the units it reaches — its outgoing weights onto the active ones, each with
    its target's sign (linear targets count fully)."""
    total = None
    for pw in circuit.outgoing(name):
        back = feedback[pw.name] if feedback is not None else TransposePathway(pw)
        g = response(circuit, state, pw.target)
        if g is None:
            g = state.u[pw.target].new_ones(state.u[pw.target].shape)
        t = back.forward(g)
        total = t if total is None else total + t
    return total


@torch.no_grad()
def make_coherent(circuit: Circuit, x: torch.Tensor | None = None) -> Circuit:
    """Make every synapse leaving a hidden unit raise its target's rate: W_kj ← s_k |W_kj|
    on pathways from hidden populations (s_k = +1 for relu and linear targets, so weights
    onto a linear output become ≥ 0).  Positive units then excite and negative units
    inhibit every unit they reach, each unit's influence is τ_j = Σ_k |W_kj| 1_k ≥ 0, and
    kickback's update is a positive rescaling of bp's, unit by unit.

    Inputs of a coherent unit are correlated, so their sum grows with the fan-in; with a
    batch of inputs ``x``, each changed pathway is rescaled, layer by layer in sweep order,
    so that its target's pre-activations keep the spread (std over ``x``) they had before
    (a data-dependent initialisation).  Returns the circuit."""
    before = circuit.sweep(x).u if x is not None else None
    for name in circuit.order():
        changed = [pw for pw in circuit.incoming(name) if pw.source in circuit.hidden()]
        for pw in changed:
            target = circuit.populations[name]
            w = pw.weight.abs()
            if target.activation == "rectilinear":
                w = w * signs_of(circuit, name).to(w).unsqueeze(1)
            pw.weight.copy_(w)
        if changed and before is not None:
            ratio = before[name].std() / circuit.sweep(x).u[name].std().clamp_min(1e-12)
            for pw in changed:
                pw.weight.mul_(ratio)
    return circuit


@register
class Kickback(Rule):
    """Kickback: a broadcast output error times each unit's influence on the layer above.

    δ_j = −β̄ τ_j s_j 1_j with τ_j = Σ_k W_kj s_k 1_k (units reaching hidden units only) and
    δ_j = Σ_o e_o W_oj s_j 1_j (units projecting onto the outputs); no error vector is
    propagated.  Trains layered circuits whose hidden populations are rectilinear (or relu)
    and whose output is linear (or rectifying).
    """

    name = "kickback"
    description = (
        "kickback: the broadcast output error times each unit's influence "
        "(its outgoing weights onto active units)"
    )
    kind = "layered"

    def __init__(self, keep_coherent: bool = False) -> None:
        super().__init__()
        if not isinstance(keep_coherent, bool):
            raise TypeError(
                f"rule 'kickback': keep_coherent must be True or False, got {keep_coherent!r}"
            )
        self.keep_coherent = keep_coherent
        self.feedback: dict[str, TransposePathway] = {}
        self._shadow: tuple[torch.Tensor, object] | None = None

    def after_step(self, circuit: Circuit) -> None:
        """With ``keep_coherent``: W_kj ← s_k max(s_k W_kj, 0) on every pathway leaving a
        hidden population (a sign constraint, as Dale's law): a synapse whose update would
        flip it to the incoherent sign stops at zero, so every unit stays coherent."""
        if not self.keep_coherent:
            return
        hidden = set(circuit.hidden())
        with torch.no_grad():
            for pw in circuit.feedforward_pathways():
                if pw.source not in hidden:
                    continue
                target = circuit.populations[pw.target]
                if target.activation == "rectilinear":
                    s = signs_of(circuit, pw.target).to(pw.weight).unsqueeze(1)
                    pw.weight.copy_(s * (s * pw.weight).clamp_min(0))
                else:
                    pw.weight.clamp_(min=0)

    def hyperparameters(self) -> dict[str, Any]:
        return {"keep_coherent": self.keep_coherent}

    def supports(self, circuit):
        why = super().supports(circuit)
        if why:
            return why
        out = circuit.output
        for name in circuit.hidden():
            act = circuit.populations[name].activation
            if act not in RECTIFYING:
                return (
                    f"rule 'kickback' needs units that are on or off (rectilinear or relu) to "
                    f"say which units are active, but hidden population {name!r} is {act!r}; "
                    "build it with activation='rectilinear'"
                )
        act = circuit.populations[out].activation
        if act not in OUTPUT_ACTIVATIONS:
            return (
                f"rule 'kickback' broadcasts the output error of a linear or rectifying output, "
                f"but output population {out!r} is {act!r}; use output_activation='linear'"
            )
        if not circuit.hidden():
            return "rule 'kickback' trains hidden populations, and this circuit has none"
        for pw in circuit.feedforward_pathways():
            back = f"{pw.target}->{pw.source}"
            if pw.source != circuit.input and back in circuit.pathways:
                return (
                    f"rule 'kickback' reads pathway {pw.name!r} back through a feedback pathway "
                    f"{back!r}, but the circuit already has a pathway of that name (another "
                    "rule's?); build a fresh circuit"
                )
        return None

    def install(self, circuit, generator):
        # a unit's own outgoing synapses, read backwards: q -> p carries 1_q (β at the output)
        self.feedback = {}
        for pw in list(circuit.feedforward_pathways()):
            if pw.source == circuit.input:
                continue
            back = TransposePathway(pw)
            self._add(circuit, back)
            self.feedback[pw.name] = back

    def teach(self, circuit, state, y, loss):
        with torch.no_grad():
            out = circuit.output
            e = output_error(circuit, state, y, loss)  # e_o = ∂ℓ/∂u_o = −β_o
            e_sum = e.sum(1, keepdim=True)  # −β̄: every output's broadcast, summed
            delta = {out: e}
            for name in circuit.hidden():
                phi = None  # φ_j = ∂ℓ/∂r_j as kickback estimates it
                for pw in circuit.outgoing(name):
                    back = self.feedback[pw.name]
                    if pw.target == out:
                        part = back.forward(e)  # Σ_o e_o W_oj: each output's β on j's synapse
                    else:
                        g = response(circuit, state, pw.target)  # f'(u_k) = s_k 1_k
                        part = e_sum * back.forward(g)  # −β̄ τ_j
                    phi = part if phi is None else phi + part
                delta[name] = phi * circuit.populations[name].act.fprime(
                    state.u[name], state.r[name]
                )  # δ_j = φ_j s_j 1_j
            write_pathway_grads(circuit, state, delta)
            L = loss(state.r[out], y)
            signals = Signals(L, state.r[out], delta)
            if self.recording:
                signals.records["kickback"] = self._measure(circuit, state, delta)
        return signals

    # -- measurements on recording steps (they never enter the update) -------------------------
    def reference(self, circuit, x, y, loss):
        """bp for this batch (the trainer's shadow reference), kept until the step on the same
        batch so that the step can record its angle and sign agreement with it."""
        ref = super().reference(circuit, x, y, loss)
        self._shadow = (x, ref)
        return ref

    def _measure(self, circuit: Circuit, state: SweepState, delta) -> dict[str, torch.Tensor]:
        hidden = circuit.hidden()
        coherent, agree, dangle = [], [], []
        shadow, self._shadow = self._shadow, None
        ref = shadow[1] if shadow is not None and shadow[0] is state.r[circuit.input] else None
        n_coh = n_all = 0
        for name in hidden:
            tau = influence(circuit, state, name, self.feedback)
            c = (tau > 0).to(tau.dtype)  # coherent: a positive influence
            coherent.append(c.mean())
            n_coh, n_all = n_coh + float(c.sum()), n_all + c.numel()
            if ref is not None and name in ref.delta:
                d_bp = ref.delta[name].to(tau)
                active = (state.u[name] > 0) & (d_bp != 0)
                same = torch.sign(delta[name]) == torch.sign(d_bp)
                agree.append(
                    same[active].to(tau.dtype).mean()
                    if active.any()
                    else tau.new_tensor(float("nan"))
                )
                dangle.append(tau.new_tensor(angle(delta[name], d_bp)))
            else:
                agree.append(tau.new_tensor(float("nan")))
                dangle.append(tau.new_tensor(float("nan")))
        whole = float("nan")
        if ref is not None:
            ours, theirs = [], []
            for key, g in ref.grads.items():
                pathway, part = key.split(".")
                mine = getattr(circuit.pathways[pathway], part).grad
                if mine is not None:
                    ours.append(mine.flatten())
                    theirs.append(g.flatten())
            if ours:
                whole = angle(torch.cat(ours), torch.cat(theirs))
        return {
            "coherent_fraction": torch.stack(coherent),
            "coherent_fraction_all": torch.tensor(n_coh / max(n_all, 1)),
            "sign_agreement": torch.stack(agree),
            "delta_angle": torch.stack(dangle),
            "angle_to_bp": torch.tensor(whole),
        }

    def record_variables(self, circuit, samples):
        hidden = circuit.hidden()
        n = len(hidden)
        per = {"hidden_populations": hidden}
        return {
            "kickback": {
                "coherent_fraction": ExtraVariable(
                    ("hidden",),
                    (n,),
                    "fraction of (sample, unit) pairs with a positive influence tau_j > 0",
                    attrs=per,
                ),
                "coherent_fraction_all": ExtraVariable(
                    (), (), "fraction of coherent (sample, unit) pairs over every hidden unit"
                ),
                "sign_agreement": ExtraVariable(
                    ("hidden",),
                    (n,),
                    "fraction of active (sample, unit) pairs whose delta has the sign of bp's",
                    attrs=per,
                ),
                "delta_angle": ExtraVariable(
                    ("hidden",),
                    (n,),
                    "angle between kickback's and bp's teaching signals over the batch",
                    attrs={**per, "units": "degree"},
                ),
                "angle_to_bp": ExtraVariable(
                    (),
                    (),
                    "angle between kickback's whole update and bp's gradient",
                    attrs={"units": "degree"},
                ),
            }
        }
