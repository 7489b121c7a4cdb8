"""Builder: a circuit with spiking populations → a brian2 ``Network``.

* every population becomes a ``NeuronGroup`` — its neuron model's equations plus the
  rule's (traces, ψ, δ, m); an encoder (input) population becomes a Poisson group driven
  by the schedule's ``stimulus`` TimedArray;
* every feedforward pathway becomes all-to-all ``Synapses`` with weight ``w`` (post × pre
  of the pathway's weight) and ``on_pre: v_post += w · w_unit``; a plastic one also runs the
  rule's update every ``dt_learn``; a *tracked* one (whose updates are recorded) also
  accumulates its change over the recorded presentations in ``w_change``, reset every
  ``track_every`` presentations;
* every feedback pathway becomes ``Synapses`` from the population above with fixed ``B``
  and the summed third factor ``m_post = B · delta_pre``.

Weights are copied from the circuit's pathways (``weight[j, i]`` → synapse i → j) and
:meth:`SpikingNetwork.write_back` copies the learned ones back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from brian2 import Network, NeuronGroup, Quantity, Synapses, TimedArray

from bioprop.rules.spiking_fa import ThreeFactorFA
from bioprop.spiking.encoding import Schedule
from bioprop.spiking.neurons import SpikingPopulation

__all__ = ["SpikingNetwork", "build"]


@dataclass
class SpikingNetwork:
    """The brian2 objects of one circuit: ``net``, ``groups`` (per population),
    ``synapses`` (per pathway) and the namespace the run resolves names in."""

    net: Network
    groups: dict[str, NeuronGroup]
    synapses: dict[str, Synapses]
    namespace: dict[str, Any]
    circuit: Any
    index: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def weight(self, pathway: str, var: str | None = None) -> np.ndarray:
        """The pathway's current weight (or synaptic variable ``var``) as a (post, pre)
        matrix."""
        s = self.synapses[pathway]
        if var is None:
            var = "w" if self.circuit.pathways[pathway].role == "feedforward" else "B"
        i, j = self.index[pathway]
        n_post, n_pre = self.circuit.pathways[pathway].shape
        out = np.empty((n_post, n_pre))
        out[j, i] = np.asarray(getattr(s, var)[:])
        return out

    def write_back(self) -> None:
        """Copy the learned feedforward weights into the circuit's pathways."""
        for name, pw in self.circuit.pathways.items():
            if pw.role == "feedforward" and name in self.synapses:
                with torch.no_grad():
                    pw.weight.copy_(torch.as_tensor(self.weight(name), dtype=pw.weight.dtype))


def build(
    circuit,
    rule: ThreeFactorFA,
    schedule: Schedule,
    dt: Quantity,
    learn: bool = True,
    track: tuple[str, ...] | set[str] = (),
    track_every: int = 1,
) -> SpikingNetwork:
    """Build the brian2 network of ``circuit`` trained by ``rule`` on ``schedule``.

    Parameters
    ----------
    learn
        Add the plasticity (rule updates) to plastic feedforward synapses.
    track, track_every
        Plastic pathways whose change over every ``track_every``-th presentation is
        accumulated in the synaptic variable ``w_change`` (zeroed at the start of every
        ``track_every``-th presentation, before learning, after a monitor at order −20).
    """
    rule.check(circuit)
    order = circuit.order()
    out_name = circuit.output
    stimulus = schedule.stimulus()
    target = schedule.target()
    gate = schedule.gate(dt)
    n_out = circuit.populations[out_name].size
    if schedule.y is not None and schedule.y.shape[1] != n_out:
        raise ValueError(
            f"schedule targets have {schedule.y.shape[1]} columns but the output population "
            f"{out_name!r} has {n_out} neurons"
        )
    if schedule.x.shape[1] != circuit.populations[circuit.input].size:
        raise ValueError(
            f"schedule inputs have {schedule.x.shape[1]} columns but the input population "
            f"{circuit.input!r} has {circuit.populations[circuit.input].size} neurons"
        )
    learn_steps = float(rule.dt_learn / dt)
    if abs(learn_steps - round(learn_steps)) > 1e-6:
        raise ValueError(f"rule dt_learn ({rule.dt_learn}) must be a multiple of dt ({dt})")
    rule_ns = rule.namespace()
    groups: dict[str, NeuronGroup] = {}
    for name in order:
        pop: SpikingPopulation = circuit.populations[name]
        m = pop.model
        ns = {**rule_ns, **m.namespace(), "stimulus": stimulus, "target": target}
        if pop.is_encoder:
            g = NeuronGroup(
                pop.size,
                m.equations() + "\n" + rule.input_equations(),
                threshold=m.threshold(),
                reset=rule.on_spike(True),
                method="exponential_euler",
                dt=dt,
                namespace=ns,
                name=f"pop_{_safe(name)}",
            )
        else:
            g = m.group(
                pop.size,
                dt,
                extra_equations=rule.neuron_equations(name == out_name),
                on_spike=rule.on_spike(False),
                namespace=ns,
                name=f"pop_{_safe(name)}",
            )
        groups[name] = g
    synapses: dict[str, Synapses] = {}
    index: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for pname, pw in circuit.pathways.items():
        src, dst = groups[pw.source], groups[pw.target]
        w = pw.effective_weight().detach().cpu().double().numpy()
        if pw.role == "feedforward":
            post = circuit.populations[pw.target].model
            ns = {
                **rule_ns,
                **post.namespace(),
                "stimulus": stimulus,
                "target": target,
                "gate": gate,
            }
            tracked = learn and pw.plastic and pname in track
            if tracked:
                ns["track"] = _track(schedule, track_every)
            s = Synapses(
                src,
                dst,
                "w : 1\nw_change : 1" if tracked else "w : 1",
                on_pre="v_post += w*w_unit",
                dt=dt,
                namespace=ns,
                name=f"syn_{_safe(pname)}",
            )
            i, j = _all_to_all(src.N, dst.N)
            s.connect(i=i, j=j)  # explicit indices: known without asking the device
            s.w[:] = w[j, i]
            if learn and pw.plastic:
                s.run_regularly(
                    rule.plasticity(track=tracked),
                    dt=rule.dt_learn,
                    when="start",
                    name=f"learn_{_safe(pname)}",
                )
            if tracked:
                s.run_regularly(
                    "w_change = 0",
                    dt=track_every * schedule.present,
                    when="start",
                    order=-15,
                    name=f"reset_{_safe(pname)}",
                )
        else:
            s = Synapses(
                src,
                dst,
                rule.feedback_model(),
                dt=rule.dt_learn,  # m is read on the learning clock only
                namespace={**rule_ns, **post_ns(circuit, pw.source), "target": target},
                name=f"syn_{_safe(pname)}",
            )
            i, j = _all_to_all(src.N, dst.N)
            s.connect(i=i, j=j)
            s.B[:] = w[j, i]
        synapses[pname] = s
        index[pname] = (i, j)
    net = Network(*groups.values(), *synapses.values())
    namespace = {"stimulus": stimulus, "target": target, "gate": gate}
    return SpikingNetwork(net, groups, synapses, namespace, circuit, index)


def _track(schedule: Schedule, every: int) -> TimedArray:
    """1 during the presentations whose update is recorded (every ``every``-th one that
    learns), else 0."""
    n = np.arange(schedule.n)
    return TimedArray(((n % every == 0) & schedule.learn).astype(float), dt=schedule.present)


def post_ns(circuit, name: str) -> dict[str, Any]:
    return circuit.populations[name].model.namespace()


def _all_to_all(n_pre: int, n_post: int) -> tuple[np.ndarray, np.ndarray]:
    """Synapse indices (i, j) of all-to-all connectivity, presynaptic index major."""
    return np.repeat(np.arange(n_pre), n_post), np.tile(np.arange(n_post), n_pre)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)
