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

brian2 is imported only when a rule is made or run, so ``import bioprop`` stays light.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bioprop.core import init as _init
from bioprop.core.circuit import Circuit
from bioprop.core.losses import Loss
from bioprop.core.pathway import Pathway
from bioprop.rules.contract import Rule, Signals
from bioprop.rules.feedback_alignment import install_mirrors, mirror_feedback
from bioprop.rules.reference import Reference
from bioprop.rules.registry import register

__all__ = ["ThreeFactorFA"]

_DEFAULT = object()  # rate_psi not given: 100 Hz (None switches the rate factor off)


@register
class ThreeFactorFA(Rule):
    """Spiking feedback alignment (see the module docstring for the equations).

    On the rule contract:

    * :meth:`supports` accepts chains of spiking populations (a Poisson encoder as input,
      neuron models above it, no biases, no lateral pathways, one population above each
      hidden one);
    * :meth:`attach` installs one fixed feedback pathway B per forward pathway that leaves
      a hidden population;
    * :meth:`step` **runs the brian2 equations** over the given presentations (one sample
      per presentation, learning after ``settle``) **and writes the learned weights back**
      into the circuit's pathways — a spiking rule applies its own update, so it writes no
      ``.grad`` and takes no optimizer;
    * :meth:`reference` is the rate twin's backprop update at the measured rates
      (:func:`bioprop.spiking.twin.bp_at_rates`, method ``"rate twin bp"``).

    :func:`bioprop.train` runs a whole schedule in one brian2 ``run()``
    (:func:`bioprop.spiking.loop.fit`) rather than calling :meth:`step` per sample.

    Parameters
    ----------
    eta
        Learning rate η (rate: the weight change per second of x̄ δ = 1; default 2 Hz).
    tau_pre
        Time constant of the presynaptic trace x̄ (time; default 20 ms).
    tau_rate
        Time constant of the rate estimate r (time; default 20 ms).
    v_psi
        Width of the postsynaptic factor ψ around the threshold (voltage; default 5 mV).
    target_rate
        ν_max^y, the rate a target of 1 asks for (rate; default 100 Hz); also scales e.
    rate_psi
        ν_ψ, the rate over which ψ decays as the neuron fires faster (rate, default 100 Hz;
        the role of the saturating f′ of a logistic rate unit); None: no rate factor.
    dt_learn
        Step of the learning clock (time, a multiple of the simulation dt; default 1 ms).
    feedback_init
        Initialiser of the fixed random feedback weights B (default ``uniform(1.0)``).

    Quantities are brian2 quantities (``8*Hz``) or strings (``"8 Hz"``).
    """

    name = "spiking-fa"
    description = (
        "spiking feedback alignment: brian2 three-factor rule η x̄_pre ψ_post m_post, "
        "the output error reaching hidden neurons through fixed random B"
    )
    kind = "spiking"

    def __init__(
        self,
        eta: Any = None,
        tau_pre: Any = None,
        tau_rate: Any = None,
        v_psi: Any = None,
        target_rate: Any = None,
        rate_psi: Any = _DEFAULT,
        dt_learn: Any = None,
        feedback_init: _init.Init | str | None = None,
    ):
        super().__init__()
        from brian2 import Hz, ms, mV

        from bioprop.spiking.units import check_quantity

        own = type(self).__name__

        def q(value, default, kind, field, **kw):
            return check_quantity(default if value is None else value, kind, own, field, **kw)

        self.eta = q(eta, 2.0 * Hz, "rate", "eta", nonnegative=True)
        self.tau_pre = q(tau_pre, 20 * ms, "time", "tau_pre", positive=True)
        self.tau_rate = q(tau_rate, 20 * ms, "time", "tau_rate", positive=True)
        self.v_psi = q(v_psi, 5 * mV, "voltage", "v_psi", positive=True)
        self.target_rate = q(target_rate, 100 * Hz, "rate", "target_rate", positive=True)
        self.dt_learn = q(dt_learn, 1 * ms, "time", "dt_learn", positive=True)
        if rate_psi is _DEFAULT:
            rate_psi = 100 * Hz
        self.rate_psi = (
            None if rate_psi is None else q(rate_psi, None, "rate", "rate_psi", positive=True)
        )
        self.feedback_init = feedback_init
        self.feedback: dict[str, Pathway] = {}

    # -- which circuits --------------------------------------------------------------------
    def supports(self, circuit: Circuit) -> str | None:
        """None for a chain of spiking populations this rule can train, else what it needs."""
        why = super().supports(circuit)
        if why:
            return (
                f"{why}; rule 'spiking-fa' needs spiking populations "
                "(Circuit.add_population(name, size, model=bioprop.spiking.LIF()))"
            )
        pops = circuit.populations
        rate = [n for n, p in pops.items() if p.kind != "spiking"]
        if rate:
            return (
                f"rule 'spiking-fa' needs every population to be spiking; {rate} are rate "
                "populations (give them model=bioprop.spiking.LIF())"
            )
        try:
            order, inp = circuit.order(), circuit.input
        except ValueError as exc:
            return f"rule 'spiking-fa' cannot order this circuit: {exc}"
        if not getattr(pops[inp].model, "is_encoder", False):
            return (
                f"rule 'spiking-fa' needs an encoder as input population; {inp!r} is a "
                f"{pops[inp].model.name} (use model=bioprop.spiking.PoissonEncoder(...))"
            )
        encoders = [n for n in order if n != inp and getattr(pops[n].model, "is_encoder", False)]
        if encoders:
            return f"rule 'spiking-fa': only the input population may be an encoder, not {encoders}"
        for pw in circuit.pathways.values():
            if pw.bias is not None:
                return (
                    f"rule 'spiking-fa' needs pathways without bias; {pw.name!r} has one "
                    "(connect(..., bias=False))"
                )
            if pw.role == "lateral":
                return f"rule 'spiking-fa' does not support lateral pathways ({pw.name!r})"
        for name in circuit.hidden():
            above = circuit.outgoing(name)
            if len(above) != 1:
                return (
                    f"rule 'spiking-fa' trains chains (one population above each one); "
                    f"{name!r} projects to {[p.target for p in above]}"
                )
        return None

    # -- attaching -------------------------------------------------------------------------
    def install(self, circuit: Circuit, generator: torch.Generator) -> None:
        """One fixed feedback pathway per feedforward pathway that leaves a hidden
        population: ``target -> source``, role ``feedback``, ``mirrors`` the forward one,
        weight B drawn with ``feedback_init`` (shape source.size × target.size)."""
        spec = _init.resolve(self.feedback_init, _init.uniform(1.0))
        self.feedback = install_mirrors(
            self, circuit, lambda fw: mirror_feedback(fw, spec, generator)
        )

    def set_feedback(self, circuit: Circuit, forward: str, weight: torch.Tensor) -> None:
        """Replace B of the feedback pathway mirroring ``forward`` (e.g. by W_forwardᵀ)."""
        fb = self.feedback.get(forward)
        if fb is None:
            raise KeyError(f"no feedback pathway mirrors {forward!r}; attach the rule first")
        with torch.no_grad():
            fb.weight.copy_(torch.as_tensor(weight, dtype=fb.weight.dtype))

    # -- brian2 equations ------------------------------------------------------------------
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

    def plasticity(self, track: bool = False) -> str:
        """The weight update of a plastic feedforward synapse, run every ``dt_learn``:
        w ← w + η g(t) x̄_pre ψ_post m_post · dt_learn.  ``track``: also accumulate the
        change into ``w_change`` while ``track(t)`` is 1 (the recorded presentations)."""
        if not track:
            return "w += eta*gate(t)*x_pre*psi_post*m_post*dt_learn"
        return "dw = eta*gate(t)*x_pre*psi_post*m_post*dt_learn\nw += dw\nw_change += track(t)*dw"

    def feedback_model(self) -> str:
        """Synapses model of a feedback pathway: the summed third factor."""
        return "B : 1\nm_post = B*delta_pre : 1 (summed)"

    def namespace(self) -> dict[str, Any]:
        """The rule's constants, for brian2's namespaces."""
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
        from bioprop.spiking.units import to_str

        out = {k: to_str(v) for k, v in self.namespace().items()}
        out.setdefault("rate_psi", "None")
        out["feedback_init"] = repr(self.feedback_init) if self.feedback_init else "uniform(1.0)"
        return out

    # -- one step, and the reference -------------------------------------------------------
    def step(self, circuit: Circuit, x: torch.Tensor, y: Any, loss: Loss | None = None, **run):
        """Present each row of ``x`` (values in [0, 1]) for ``present``, learning towards
        ``y`` (labels or targets in [0, 1]) after ``settle``, in one brian2 run; write the
        learned weights back into the circuit.  ``run`` options: ``present`` (default
        50 ms), ``settle`` (20 ms), ``dt`` (0.5 ms), ``target`` (``"numpy"``), ``seed``.

        Returns :class:`Signals` with the loss ½‖y − r_out/ν_y‖² (mean over samples), the
        output rates / ν_y and every population's rate (Hz) in the learning window."""
        res = self._simulate(circuit, x, y, learn=True, **run)
        return Signals(
            loss=torch.tensor(float(np.mean(res.loss))),
            output=torch.as_tensor(res.rates[circuit.output] / float(self.target_rate)),
            rates={k: torch.as_tensor(v) for k, v in res.rates.items()},
            extra={"run": res},
        )

    def reference(
        self,
        circuit: Circuit,
        x: torch.Tensor,
        y: Any,
        loss: Loss | None = None,
        *,
        rates: dict[str, Any] | None = None,
        **run,
    ) -> Reference:
        """The rate twin's backprop update at the measured rates (method ``"rate twin bp"``;
        :func:`bioprop.spiking.twin.bp_at_rates`).  Without ``rates`` ({population: (N, n)
        Hz}) the circuit is simulated on ``x`` with learning off to measure them; the
        circuit's weights are left alone."""
        from bioprop.spiking import twin

        if rates is None:
            rates = self._simulate(circuit, x, y, learn=False, **run).rates
        n_out = circuit.populations[circuit.output].size
        return twin.bp_at_rates(circuit, rates, _targets(y, n_out)[1], float(self.target_rate))

    def _simulate(self, circuit, x, y, *, learn: bool, seed: int = 0, **run):
        from bioprop.spiking.encoding import Schedule
        from bioprop.spiking.runner import run as simulate

        opts = {"present": "50 ms", "settle": "20 ms", **run}
        sched = {k: opts.pop(k) for k in ("present", "settle")}
        opts.setdefault("target", "numpy")
        x = np.asarray(torch.as_tensor(x).detach().cpu().double())
        labels, targets = _targets(y, circuit.populations[circuit.output].size)
        schedule = Schedule(x, targets, labels, np.full(len(x), learn), **sched)
        return simulate(
            circuit, self, schedule, seed=seed, learn=learn, write_back=learn, measure="all", **opts
        )


def _targets(y: Any, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """(labels, targets in [0, 1]) from integer labels or (N, n_out) target rows."""
    y = np.asarray(torch.as_tensor(y).detach().cpu())
    if y.ndim == 1:
        from bioprop.core.encoding import one_hot

        return y.astype(np.int64), one_hot(y.astype(np.int64), n_out)
    if y.ndim != 2 or y.shape[1] != n_out:
        raise ValueError(
            f"targets must be labels (N,) or rows (N, {n_out}) for the output population, "
            f"got shape {y.shape}"
        )
    labels = np.where(y.max(1) > 0, y.argmax(1), -1)
    return labels.astype(np.int64), y.astype(np.float64)
