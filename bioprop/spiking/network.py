"""Builder: a circuit with spiking populations → a brian2 ``Network``.

* every population becomes a ``NeuronGroup`` — its neuron model's equations plus the
  rule's (traces, ψ, δ, m); an encoder (input) population becomes a Poisson group driven
  by the schedule's ``stimulus`` TimedArray;
* every feedforward pathway becomes all-to-all ``Synapses`` with weight ``w`` (post × pre
  of the pathway's weight) and ``on_pre: v_post += w · w_unit``; a plastic one also runs the
  rule's update every ``dt_learn``;
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
from brian2 import Network, NeuronGroup, Quantity, Synapses

from bioprop.spiking.encoding import Schedule
from bioprop.spiking.neurons import SpikingPopulation
from bioprop.spiking.rule import ThreeFactorFA

__all__ = ["SpikingNetwork", "build", "check_spiking_circuit"]


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

    def weight(self, pathway: str) -> np.ndarray:
        """The pathway's current weight as a (post, pre) matrix."""
        s = self.synapses[pathway]
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


def check_spiking_circuit(circuit) -> None:
    """Raise a clear error unless every population is spiking and the input is an encoder."""
    rate = [n for n, p in circuit.populations.items() if not isinstance(p, SpikingPopulation)]
    if rate:
        raise ValueError(
            f"populations {rate} are rate populations; a spiking run needs every population "
            "to be spiking (Circuit.add_population(name, size, model=bioprop.spiking.LIF()))"
        )
    inp = circuit.populations[circuit.input]
    if not inp.is_encoder:
        raise ValueError(
            f"the input population {circuit.input!r} must be an encoder "
            f"(model=bioprop.spiking.PoissonEncoder(...)), got {inp.model.name}"
        )
    others = [n for n, p in circuit.populations.items() if p.is_encoder and n != circuit.input]
    if others:
        raise ValueError(f"populations {others}: only the input population may be an encoder")
    for pw in circuit.pathways.values():
        if pw.bias is not None:
            raise ValueError(
                f"pathway {pw.name!r} has a bias; spiking pathways have none "
                "(connect(..., bias=False))"
            )
        if pw.role == "lateral":
            raise ValueError(f"pathway {pw.name!r}: lateral spiking pathways are not supported")


def build(
    circuit,
    rule: ThreeFactorFA,
    schedule: Schedule,
    dt: Quantity,
    learn: bool = True,
) -> SpikingNetwork:
    """Build the brian2 network of ``circuit`` trained by ``rule`` on ``schedule``.

    Parameters
    ----------
    learn
        Add the plasticity (rule updates) to plastic feedforward synapses.
    """
    check_spiking_circuit(circuit)
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
                rule.neuron_equations(name == out_name),
                rule.on_spike(False),
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
            s = Synapses(
                src,
                dst,
                "w : 1",
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
                    rule.plasticity(), dt=rule.dt_learn, when="start", name=f"learn_{_safe(pname)}"
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


def post_ns(circuit, name: str) -> dict[str, Any]:
    return circuit.populations[name].model.namespace()


def _all_to_all(n_pre: int, n_post: int) -> tuple[np.ndarray, np.ndarray]:
    """Synapse indices (i, j) of all-to-all connectivity, presynaptic index major."""
    return np.repeat(np.arange(n_pre), n_post), np.tile(np.arange(n_post), n_pre)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)
