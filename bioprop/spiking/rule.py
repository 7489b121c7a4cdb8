"""Spiking feedback alignment: a local three-factor rule written as brian2 equations.

Every spiking population carries, besides its neuron model's equations:

    τ_pre dx/dt = −x              on a spike: x ← x + 1          presynaptic trace x̄
    τ_r   dr/dt = −r              on a spike: r ← r + 1/τ_r      rate estimate (Hz)
    ψ = exp(−r/ν_ψ) / (1 + |v − v_threshold| / v_ψ)²             postsynaptic factor
    δ = ψ · m                                                    local error

where the third factor m is

* at the output: the signed rate error  m_k = e_k = (ν_max^y · y_k(t) − r_k) / ν_max^y,
  with the target y(t) ∈ [0, 1] from a ``TimedArray`` (ν_max^y = ``target_rate``);
* at a hidden population: what the **feedback pathway** delivers,
  m_j = Σ_k B_jk δ_k  (a brian2 ``Synapses`` from the population above with fixed random
  weights B and the summed variable ``m_post = B * delta_pre``).

A plastic feedforward synapse i → j changes as (clock-driven, forward Euler on the
learning clock ``dt_learn``)::

    dw_ij/dt = η · g(t) · x̄_i · ψ_j · m_j   =  η g(t) x̄_i δ_j

g(t) is the learning gate of the schedule (0 while a new sample settles and on test
presentations).  The update reads the presynaptic trace x̄_i, the postsynaptic neuron's
ψ_j and the feedback m_j that reaches it — nothing else (``tests/test_spiking_rule.py``).
Averaged over a presentation, ⟨x̄_i⟩ = τ_pre ν_i and ⟨δ_j⟩ follows the rate-FA teaching
signal δ_h = f′(u_h) ⊙ B δ_o, δ_o = f′(u_o) ⊙ (y − r_o), with ψ in place of f′: the
spiking rule is feedback alignment (Lillicrap et al. 2016) in continuous time.  With
B := W_outᵀ it follows backprop's direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from brian2 import Hz, Quantity, ms, mV

from bioprop.core import init as _init
from bioprop.core.pathway import Pathway
from bioprop.spiking.units import check_quantity, to_str

__all__ = ["ThreeFactorFA"]


@dataclass
class ThreeFactorFA:
    """Spiking feedback alignment (see the module docstring for the equations).

    Parameters
    ----------
    eta
        Learning rate η (rate: the weight change per second of x̄ δ = 1).
    tau_pre
        Time constant of the presynaptic trace x̄ (time).
    tau_rate
        Time constant of the rate estimate r (time).
    v_psi
        Width of the postsynaptic factor ψ around the threshold (voltage).
    target_rate
        ν_max^y, the rate a target of 1 asks for (rate); also scales the error e.
    rate_psi
        ν_ψ, the rate over which ψ decays as the neuron fires faster (rate; the role of the
        saturating f′ of a logistic rate unit); None: no rate factor.
    dt_learn
        Step of the learning clock (time; a multiple of the simulation dt).
    feedback_init
        Initialiser of the fixed random feedback weights B (default ``uniform(1.0)``).
    """

    eta: Quantity = field(default_factory=lambda: 2.0 * Hz)
    tau_pre: Quantity = field(default_factory=lambda: 20 * ms)
    tau_rate: Quantity = field(default_factory=lambda: 20 * ms)
    v_psi: Quantity = field(default_factory=lambda: 5 * mV)
    target_rate: Quantity = field(default_factory=lambda: 100 * Hz)
    rate_psi: Quantity | None = field(default_factory=lambda: 100 * Hz)
    dt_learn: Quantity = field(default_factory=lambda: 1 * ms)
    feedback_init: _init.Init | str | None = None

    name = "spiking-fa"

    def __post_init__(self):
        own = type(self).__name__
        self.eta = check_quantity(self.eta, "rate", own, "eta", nonnegative=True)
        self.tau_pre = check_quantity(self.tau_pre, "time", own, "tau_pre", positive=True)
        self.tau_rate = check_quantity(self.tau_rate, "time", own, "tau_rate", positive=True)
        self.v_psi = check_quantity(self.v_psi, "voltage", own, "v_psi", positive=True)
        self.target_rate = check_quantity(
            self.target_rate, "rate", own, "target_rate", positive=True
        )
        self.dt_learn = check_quantity(self.dt_learn, "time", own, "dt_learn", positive=True)
        if self.rate_psi is not None:
            self.rate_psi = check_quantity(self.rate_psi, "rate", own, "rate_psi", positive=True)
        self.feedback: dict[str, Pathway] = {}

    # -- circuit ---------------------------------------------------------------------------
    def attach(self, circuit, generator: torch.Generator | None = None) -> ThreeFactorFA:
        """Install one fixed feedback pathway per feedforward pathway that leaves a hidden
        population: ``target -> source``, role ``feedback``, ``mirrors`` the forward one,
        weight B drawn with ``feedback_init`` (shape source.size × target.size)."""
        from bioprop.core import seeding

        gen = generator or seeding.generator(circuit.seed, "feedback")
        spec = _init.resolve(self.feedback_init, _init.uniform(1.0))
        for name in [n for n, p in circuit.pathways.items() if p.role == "feedback"]:
            if circuit.pathways[name].mirrors in self.feedback:
                circuit.remove_pathway(name)
        self.feedback = {}
        inp = circuit.input
        for pw in list(circuit.feedforward_pathways()):
            if pw.source == inp:
                continue
            n_post, n_pre = pw.shape
            fb = Pathway(
                pw.target,
                pw.source,
                spec((n_pre, n_post), gen),
                None,
                role="feedback",
                plastic=False,
                mirrors=pw.name,
                init=spec,
            )
            circuit.add_pathway(fb)
            self.feedback[pw.name] = fb
        receivers = [fb.target for fb in self.feedback.values()]
        dup = sorted({r for r in receivers if receivers.count(r) > 1})
        if dup:
            raise ValueError(
                f"ThreeFactorFA: populations {dup} would receive feedback from several "
                "populations; this rule supports chains (one population above each hidden one)"
            )
        return self

    def set_feedback(self, circuit, forward: str, weight: torch.Tensor) -> None:
        """Replace B of the feedback pathway mirroring ``forward`` (e.g. by W_forwardᵀ)."""
        fb = self.feedback.get(forward)
        if fb is None:
            raise KeyError(f"no feedback pathway mirrors {forward!r}; attach the rule first")
        with torch.no_grad():
            fb.weight.copy_(torch.as_tensor(weight, dtype=fb.weight.dtype))

    # -- brian2 ----------------------------------------------------------------------------
    def neuron_equations(self, is_output: bool) -> str:
        """Equations added to a spiking population's model (traces, ψ, δ and m)."""
        rate_factor = "exp(-r/rate_psi)*" if self.rate_psi is not None else ""
        eqs = f"""
        dx/dt = -x/tau_pre : 1
        dr/dt = -r/tau_rate : Hz
        psi = {rate_factor}1.0/(1.0 + abs(v - v_threshold)/v_psi)**2 : 1
        delta = psi*m : 1
        """
        if is_output:
            eqs += "m = (target_rate*target(t, i) - r)/target_rate : 1\n"
        else:
            eqs += "m : 1\n"
        return eqs

    def input_equations(self) -> str:
        """Equations added to an input (encoder) population: its presynaptic trace."""
        return "dx/dt = -x/tau_pre : 1\n"

    def on_spike(self, is_input: bool) -> str:
        """Statements added to a population's reset."""
        return "x += 1" if is_input else "x += 1\nr += 1/tau_rate"

    def plasticity(self) -> str:
        """The weight update of a plastic feedforward synapse, run every ``dt_learn``:
        w ← w + η g(t) x̄_pre ψ_post m_post · dt_learn."""
        return "w += eta*gate(t)*x_pre*psi_post*m_post*dt_learn"

    def feedback_model(self) -> str:
        """Synapses model of a feedback pathway: the summed third factor."""
        return "B : 1\nm_post = B*delta_pre : 1 (summed)"

    def namespace(self) -> dict[str, Any]:
        return {
            "eta": self.eta,
            "tau_pre": self.tau_pre,
            "tau_rate": self.tau_rate,
            "v_psi": self.v_psi,
            "target_rate": self.target_rate,
            "dt_learn": self.dt_learn,
            **({"rate_psi": self.rate_psi} if self.rate_psi is not None else {}),
        }

    def hyperparameters(self) -> dict[str, str]:
        out = {k: to_str(v) for k, v in self.namespace().items()}
        out.setdefault("rate_psi", "None")
        out["feedback_init"] = repr(self.feedback_init) if self.feedback_init else "uniform(1.0)"
        return out
