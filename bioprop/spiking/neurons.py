"""Spiking neuron models and spiking populations.

Both models integrate a membrane potential v; a presynaptic spike through a feedforward
pathway makes v jump by w · ``w_unit`` (delta synapses), and ``I_ext`` is an external
current (zero unless set).

**LIF** (leaky integrate-and-fire)::

    τ_m dv/dt = (v_rest − v) + R I_ext                   (unless refractory)
    v > v_threshold  →  spike,  v ← v_reset,  refractory for t_ref

With a constant current and no synaptic input, v relaxes to v_∞ = v_rest + R I_ext, and
the neuron fires at (:func:`lif_rate`)::

    ν = 1 / (t_ref + τ_m ln((v_∞ − v_reset) / (v_∞ − v_threshold)))   if v_∞ > v_threshold
    ν = 0                                                             otherwise

**Adaptive LIF** adds a spike-triggered adaptation current a::

    τ_m dv/dt = (v_rest − v) + R (I_ext − a)
    τ_a da/dt = −a,          on a spike: a ← a + b

A :class:`SpikingPopulation` is what a :class:`bioprop.Circuit` holds for a spiking
population (``Circuit.add_population(name, size, model=LIF())``); it shares the rate
population's ``name``, ``size``, ``kind`` and ``describe()``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from brian2 import Hz, Mohm, NeuronGroup, Quantity, ms, mV, nA

from bioprop.core.population import check_name_and_size
from bioprop.spiking.units import check_quantity, to_str

__all__ = ["NeuronModel", "LIF", "AdaptiveLIF", "SpikingPopulation", "lif_rate"]


class NeuronModel:
    """A brian2 neuron model: equations, threshold, reset and a per-group namespace.

    Subclasses are dataclasses whose fields are brian2 quantities; ``_kinds`` maps each
    field to the dimension it must carry (checked on construction).
    """

    name = "model"
    _kinds: dict[str, str] = {}
    _positive: tuple[str, ...] = ()
    #: brian2 integration method: exponential Euler is exact for these linear equations
    #: while the input is constant over a step, and needs no symbolic solve at build time
    #: (brian2's "exact" spends seconds in sympy per distinct set of equations)
    method = "exponential_euler"

    def __post_init__(self):
        for f in fields(self):
            if f.name in self._kinds:
                q = check_quantity(
                    getattr(self, f.name),
                    self._kinds[f.name],
                    type(self).__name__,
                    f.name,
                    positive=f.name in self._positive,
                )
                setattr(self, f.name, q)

    def equations(self) -> str:
        raise NotImplementedError

    def threshold(self) -> str:
        return "v > v_threshold"

    def reset(self) -> str:
        return "v = v_reset"

    def refractory(self) -> Quantity | None:
        return None

    def namespace(self) -> dict[str, Any]:
        """Parameter name → quantity, for the brian2 group's ``namespace``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in self._kinds}

    def initial(self) -> dict[str, Any]:
        """Initial values of state variables."""
        return {"v": self.v_rest}

    def describe(self) -> dict[str, str]:
        """Model name and parameters with their units (for recordings)."""
        return {"model": self.name, **{k: to_str(v) for k, v in self.namespace().items()}}

    def group(
        self,
        n: int,
        dt: Quantity,
        *,
        extra_equations: str = "",
        on_spike: str = "",
        namespace: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> NeuronGroup:
        """A brian2 ``NeuronGroup`` of ``n`` neurons of this model, at initial values;
        ``extra_equations``/``on_spike`` add a rule's variables and reset statements."""
        refractory = self.refractory()
        g = NeuronGroup(
            n,
            self.equations() + "\n" + extra_equations,
            threshold=self.threshold(),
            reset="\n".join(s for s in (self.reset(), on_spike) if s),
            refractory=refractory if refractory is not None else False,
            method=self.method,
            dt=dt,
            namespace={**self.namespace(), **(namespace or {})},
            name=name or "neurongroup*",
        )
        for var, value in self.initial().items():
            setattr(g, var, value)
        return g


@dataclass
class LIF(NeuronModel):
    """Leaky integrate-and-fire neuron (see the module docstring for the equations).

    Parameters
    ----------
    tau_m
        Membrane time constant (time).
    v_rest, v_reset, v_threshold
        Resting, reset and threshold potentials (voltage); v_reset < v_threshold.
    refractory
        Absolute refractory period t_ref (time, ≥ 0).
    R
        Membrane resistance (resistance), converts ``I_ext`` into a voltage.
    w_unit
        What a synaptic weight of 1 adds to v (voltage).
    """

    tau_m: Quantity = field(default_factory=lambda: 20 * ms)
    v_rest: Quantity = field(default_factory=lambda: -65 * mV)
    v_reset: Quantity = field(default_factory=lambda: -65 * mV)
    v_threshold: Quantity = field(default_factory=lambda: -50 * mV)
    refractory_period: Quantity = field(default_factory=lambda: 2 * ms)
    R: Quantity = field(default_factory=lambda: 100 * Mohm)
    w_unit: Quantity = field(default_factory=lambda: 1 * mV)

    name = "LIF"
    _kinds = {
        "tau_m": "time",
        "v_rest": "voltage",
        "v_reset": "voltage",
        "v_threshold": "voltage",
        "refractory_period": "time",
        "R": "resistance",
        "w_unit": "voltage",
    }
    _positive = ("tau_m", "R")

    def __post_init__(self):
        super().__post_init__()
        if not self.v_reset < self.v_threshold:
            raise ValueError(
                f"{self.name}: v_reset ({self.v_reset}) must lie below v_threshold "
                f"({self.v_threshold})"
            )
        if self.refractory_period < 0 * ms:
            raise ValueError(f"{self.name}: refractory_period must be >= 0")

    def equations(self) -> str:
        return """
        dv/dt = (v_rest - v + R*I_ext)/tau_m : volt (unless refractory)
        I_ext : amp
        """

    def refractory(self) -> Quantity:
        return self.refractory_period


@dataclass
class AdaptiveLIF(LIF):
    """LIF with a spike-triggered adaptation current a (τ_a da/dt = −a, a ← a + b).

    Parameters
    ----------
    tau_a
        Adaptation time constant (time).
    b
        Increment of the adaptation current per spike (current, ≥ 0).
    """

    tau_a: Quantity = field(default_factory=lambda: 100 * ms)
    b: Quantity = field(default_factory=lambda: 0.02 * nA)

    name = "AdaptiveLIF"
    _kinds = {**LIF._kinds, "tau_a": "time", "b": "current"}
    _positive = ("tau_m", "R", "tau_a")

    def __post_init__(self):
        super().__post_init__()
        if self.b < 0 * nA:
            raise ValueError(f"{self.name}: b must be >= 0, got {self.b}")

    def equations(self) -> str:
        return """
        dv/dt = (v_rest - v + R*(I_ext - a))/tau_m : volt (unless refractory)
        da/dt = -a/tau_a : amp
        I_ext : amp
        """

    def reset(self) -> str:
        return "v = v_reset\na += b"

    def initial(self) -> dict[str, Any]:
        return {"v": self.v_rest, "a": 0 * nA}


def lif_rate(model: LIF, current: Quantity) -> Quantity:
    """Closed-form firing rate of a LIF driven by a constant ``current`` (no noise)::

        v_∞ = v_rest + R I,  ν = 1 / (t_ref + τ_m ln((v_∞ − v_reset)/(v_∞ − v_threshold)))

    and 0 when v_∞ ≤ v_threshold.
    """
    current = check_quantity(current, "current", "lif_rate", "current")
    v_inf = model.v_rest + model.R * current
    if v_inf <= model.v_threshold:
        return 0 * Hz
    isi = model.refractory_period + model.tau_m * math.log(
        float((v_inf - model.v_reset) / (v_inf - model.v_threshold))
    )
    return 1 / isi


@dataclass
class SpikingPopulation:
    """A named group of ``size`` spiking neurons of one ``model`` (simulated by brian2).

    ``model`` is a :class:`NeuronModel` (LIF, AdaptiveLIF) or, for an input population, an
    encoder such as :class:`bioprop.spiking.PoissonEncoder`.
    """

    name: str
    size: int
    model: Any
    kind: str = field(default="spiking", init=False)
    dynamics: str = field(default="spiking", init=False)
    activation: str = field(default="spikes", init=False)

    def __post_init__(self):
        check_name_and_size(self.name, self.size)
        if not hasattr(self.model, "describe"):
            raise TypeError(
                f"population {self.name!r}: model must be a neuron model (bioprop.spiking.LIF, "
                f"AdaptiveLIF) or an encoder (PoissonEncoder), got {self.model!r}"
            )

    @property
    def is_encoder(self) -> bool:
        return getattr(self.model, "is_encoder", False)

    def describe(self) -> dict:
        """Attributes stored in recordings."""
        return {
            "kind": self.kind,
            "size": self.size,
            "dynamics": self.dynamics,
            **self.model.describe(),
        }
