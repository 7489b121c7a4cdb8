"""What a spiking run records (:class:`SpikeRecord`) and hence monitors (:func:`plan`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from brian2 import ms

from bioprop.recording.writer import VARIABLES, Record
from bioprop.spiking.units import check_quantity

__all__ = ["SpikeRecord", "Plan", "plan"]


@dataclass
class SpikeRecord(Record):
    """A :class:`bioprop.Record` plus what only spiking runs record.

    ``every`` counts presentations: weights (and, on learning presentations, the update
    and the reference update) are recorded every ``every`` presentations and at the end.

    Parameters
    ----------
    spikes
        Populations whose spikes are recorded (default: all).
    rate_bin
        Bin of the per-neuron rates ``(time, neuron)`` (time; must divide ``present``;
        default: one bin per presentation).
    states
        Population → state variables sampled as ``(time, neuron)``, e.g.
        ``{"hidden": ["v", "m"]}`` (default none).
    state_neurons
        How many neurons (the first ones) of each population the states sample.
    state_dt
        Sampling interval of the states (time; default 1 ms).
    drain_every
        Drain the monitors into the file every this many presentations.
    """

    spikes: list[str] | None = None
    rate_bin: Any = None
    states: dict[str, list[str]] = field(default_factory=dict)
    state_neurons: int = 10
    state_dt: Any = None
    drain_every: int = 50

    def __post_init__(self):
        super().__post_init__()
        for k in ("drain_every", "state_neurons"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"SpikeRecord({k}=...) must be a positive integer, got {v!r}")
        if self.rate_bin is not None:
            self.rate_bin = check_quantity(
                self.rate_bin, "time", "SpikeRecord", "rate_bin", positive=True
            )
        self.state_dt = check_quantity(
            self.state_dt if self.state_dt is not None else 1 * ms,
            "time",
            "SpikeRecord",
            "state_dt",
            positive=True,
        )

    @classmethod
    def of(cls, record: Record) -> SpikeRecord:
        """``record`` as a SpikeRecord (a plain :class:`Record` gets the defaults)."""
        if isinstance(record, cls):
            return record
        if not isinstance(record, Record):
            raise TypeError(f"record must be a bioprop.Record or None, got {record!r}")
        return cls(**{f.name: getattr(record, f.name) for f in fields(Record)})


@dataclass
class Plan:
    """What a run monitors: pathways whose weights are written (``pathways``) or read
    (``weights``), whose per-presentation update is tracked (``tracked``) and gets the
    reference (``reference``); populations whose window spike counts are kept
    (``counted``), whose spikes (``spikes``) and binned rates (``rates``) are written."""

    pathways: list[str] = field(default_factory=list)
    weights: list[str] = field(default_factory=list)
    tracked: list[str] = field(default_factory=list)
    reference: list[str] = field(default_factory=list)
    counted: list[str] = field(default_factory=list)
    spikes: list[str] = field(default_factory=list)
    rates: list[str] = field(default_factory=list)


def plan(spec: SpikeRecord | None, circuit, learn: bool, measure: str = "output") -> Plan:
    """The monitors a run with ``spec`` needs (``measure="all"``: count every population's
    spikes, for the rates a rule step returns)."""
    order = list(circuit.order())
    hidden_out = [n for n in order if n != circuit.input]
    p = Plan(counted=hidden_out if measure == "all" else [circuit.output])
    if spec is None:
        return p
    names = list(spec.populations) if spec.populations is not None else order
    wanted = list(spec.spikes) if spec.spikes is not None else order
    for n in wanted + list(spec.states) + names:
        if n not in circuit.populations:
            raise ValueError(f"SpikeRecord: no population {n!r}; the circuit has {order}")
    variables = set(spec.variables) if spec.variables is not None else set(VARIABLES)
    p.pathways = list(spec.pathways) if spec.pathways is not None else list(circuit.pathways)
    unknown = [n for n in p.pathways if n not in circuit.pathways]
    if unknown:
        raise ValueError(
            f"SpikeRecord: no pathways {unknown}; the circuit has {list(circuit.pathways)}"
        )
    plastic = [
        n
        for n in p.pathways
        if circuit.pathways[n].role == "feedforward" and circuit.pathways[n].plastic and learn
    ]
    p.tracked = plastic if "weight_update" in variables else []
    p.reference = plastic if spec.shadow and "weight_update_bp" in variables else []
    p.weights = list(p.pathways)
    if p.reference:
        p.counted = hidden_out
        p.weights += [pw.name for pw in circuit.feedforward_pathways() if pw.name not in p.weights]
    p.spikes = [n for n in order if n in wanted]
    p.rates = [n for n in order if n in names] if "rate" in variables else []
    return p
