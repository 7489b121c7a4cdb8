"""Recording a spiking run into bioprop's file format, draining brian2's monitors as it goes.

brian2 keeps everything a monitor records in RAM until the run ends.  Here a
``network_operation`` (the *drain*) runs every ``drain_every`` presentations inside the
single ``run()``: it appends what the monitors hold to the HDF5 file, flushes, and empties
the monitors — so a long run's memory stays bounded by one drain interval and a killed run
keeps everything drained before the kill.  (``cpp_standalone`` has no Python in the loop:
there the monitors are drained once, after the run.)

Layout (NetCDF4-valid HDF5, opened by :func:`bioprop.load`; see ``docs/recordings.md``)::

    /                       attrs: rule, hyper-parameters, target, dt, seed, schedule, ...
    /metrics                step (unlimited; one record per presentation): time, train_step,
                            learn, label, prediction, correct, loss
    /pathways/<name>        step (unlimited), post, pre: weight (+ time); attrs role, mirrors,
                            units — feedforward W and feedback B, sampled during learning
    /populations/<name>     time (unlimited), neuron: rate [Hz] (spike counts per bin / bin)
    /states/<name>          time (unlimited), neuron: sampled state variables, units in attrs
    /spikes/<name>          spike (unlimited): neuron, time [s] — ragged spike trains

``step`` counts presentations (sample n is presented during [n·present, (n+1)·present)).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5netcdf
import h5py
import numpy as np
from brian2 import Quantity, SpikeMonitor, StateMonitor, get_unit, ms, second
from brian2.units.fundamentalunits import DIMENSIONLESS

from bioprop.recording.writer import _to_attr, pathway_group, population_group
from bioprop.spiking.encoding import Schedule
from bioprop.spiking.network import SpikingNetwork
from bioprop.spiking.units import check_quantity

__all__ = ["SpikeRecord", "Drain"]


@dataclass
class SpikeRecord:
    """What a spiking run writes, and how often.

    Parameters
    ----------
    path
        HDF5 file to write (None: keep only the per-presentation metrics in memory).
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
        Sampling interval of the states (time).
    weight_every
        Sample every pathway's weight every this many presentations (and at the end).
    drain_every
        Drain the monitors into the file every this many presentations.
    """

    path: str | os.PathLike | None
    spikes: list[str] | None = None
    rate_bin: Quantity | None = None
    states: dict[str, list[str]] = field(default_factory=dict)
    state_neurons: int = 10
    state_dt: Quantity = field(default_factory=lambda: 1 * ms)
    weight_every: int = 100
    drain_every: int = 50
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.path is not None:
            self.path = Path(self.path)
        for k in ("weight_every", "drain_every", "state_neurons"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"SpikeRecord({k}=...) must be a positive integer, got {v!r}")
        if self.rate_bin is not None:
            self.rate_bin = check_quantity(
                self.rate_bin, "time", "SpikeRecord", "rate_bin", positive=True
            )
        self.state_dt = check_quantity(
            self.state_dt, "time", "SpikeRecord", "state_dt", positive=True
        )


class Drain:
    """Owns the monitors of one run and moves their contents to the file (and to the
    in-memory per-presentation metrics).  ``__call__`` is the network operation."""

    def __init__(
        self,
        spec: SpikeRecord | None,
        network: SpikingNetwork,
        schedule: Schedule,
        dt: Quantity,
        attrs: dict[str, Any],
    ):
        self.spec = spec or SpikeRecord(None)
        self.network, self.schedule = network, schedule
        circuit = network.circuit
        self.output = circuit.output
        self.present_s = float(schedule.present / second)
        self.settle_s = float(schedule.settle / second)
        steps, _ = schedule.grid(dt)
        bin_ = self.spec.rate_bin or schedule.present
        per = float(schedule.present / bin_)
        if abs(per - round(per)) > 1e-6:
            raise ValueError(
                f"SpikeRecord: rate_bin ({bin_}) must divide the presentation ({schedule.present})"
            )
        self.bins_per = round(per)
        self.bin_s = self.present_s / self.bins_per
        names = list(circuit.order())
        wanted = self.spec.spikes if self.spec.spikes is not None else names
        for n in list(wanted) + list(self.spec.states):
            if n not in circuit.populations:
                raise ValueError(f"SpikeRecord: no population {n!r}; the circuit has {names}")
        self.writing = self.spec.path is not None
        spike_pops = set(wanted) if self.writing else set()
        spike_pops.add(self.output)
        g = network.groups
        self.spike_mon = {
            n: SpikeMonitor(g[n], name=f"spikes_{_safe(n)}") for n in names if n in spike_pops
        }
        self.state_mon: dict[str, StateMonitor] = {}
        if self.writing:
            for n, variables in self.spec.states.items():
                unknown = [v for v in variables if v not in g[n].variables]
                if unknown:
                    have = sorted(k for k in g[n].variables if not k.startswith("_"))
                    raise ValueError(
                        f"SpikeRecord(states=...): population {n!r} has no variable(s) "
                        f"{unknown}; it has {have}"
                    )
                k = min(self.spec.state_neurons, g[n].N)
                self.state_mon[n] = StateMonitor(
                    g[n],
                    list(variables),
                    record=np.arange(k),
                    dt=self.spec.state_dt,
                    when="end",
                    name=f"states_{_safe(n)}",
                )
        self.weight_mon: dict[str, StateMonitor] = {}
        if self.writing:
            every = self.spec.weight_every * schedule.present
            for pname, pw in circuit.pathways.items():
                var = "w" if pw.role == "feedforward" else "B"
                self.weight_mon[pname] = StateMonitor(
                    network.synapses[pname],
                    var,
                    record=True,
                    dt=every,
                    when="start",
                    order=10,
                    name=f"weights_{_safe(pname)}",
                )
        self.monitors = [
            *self.spike_mon.values(),
            *self.state_mon.values(),
            *self.weight_mon.values(),
        ]
        # per-presentation metrics, kept in memory (a few numbers per presentation)
        n_out = circuit.populations[self.output].size
        self.counts = np.zeros((schedule.n, n_out), np.int32)
        self.done = 0  # presentations whose window is complete and scored
        self.binned_until = 0.0  # seconds
        self._carry: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._last_weights: dict[str, np.ndarray] = {}
        self.target_rate = 1.0  # Hz; the runner sets the rule's target_rate
        self.h5 = None
        if self.writing:
            self._create(attrs)

    # -- layout ---------------------------------------------------------------------------
    def _create(self, attrs: dict[str, Any]) -> None:
        path = self.spec.path
        path.parent.mkdir(parents=True, exist_ok=True)
        circuit, net = self.network.circuit, self.network
        with h5netcdf.File(path, "w") as f:
            for k, v in {**attrs, **self.spec.attrs}.items():
                f.attrs[k] = _to_attr(v)
            f.attrs["Conventions"] = "bioprop-recording-1"
            f.attrs["record_every"] = self.spec.weight_every
            m = f.create_group("metrics")
            m.dimensions["step"] = None
            m.create_variable("step", ("step",), "i8", chunks=(4096,))
            m.variables["step"].attrs["long_name"] = "presentation index"
            for v, dt_, long in (
                ("time", "f8", "start of the presentation (s)"),
                ("train_step", "i8", "learning presentations before this one"),
                ("learn", "i1", "1 if the rule learned during this presentation"),
                ("label", "i8", "class label (-1: none)"),
                ("prediction", "i8", "output neuron with most spikes after settle (-1: none)"),
                ("correct", "i1", "prediction == label"),
                ("loss", "f8", "0.5 * sum_k (y_k - r_k/target_rate)^2 over the scored window"),
            ):
                m.create_variable(v, ("step",), dt_, chunks=(4096,))
                m.variables[v].attrs["long_name"] = long
            m.variables["time"].attrs["units"] = "second"
            pws = f.create_group("pathways")
            for pname, pw in circuit.pathways.items():
                n_post, n_pre = pw.shape
                g = pathway_group(pws, pname, pw)
                g.create_variable("time", ("step",), "f8", chunks=(1024,))
                g.variables["time"].attrs["units"] = "second"
                v = g.create_variable(
                    "weight",
                    ("step", "post", "pre"),
                    "f4",
                    chunks=(1, n_post, n_pre),
                    fillvalue=np.nan,
                )
                v.attrs["long_name"] = (
                    "weight W (post x pre) at the start of presentation `step`"
                    if pw.role == "feedforward"
                    else "fixed feedback weight B (post x pre)"
                )
                ff = pw.role == "feedforward"
                v.attrs["units"] = _weight_unit(circuit.populations[pw.target].model) if ff else "1"
            pops = f.create_group("populations")
            for n in circuit.order():
                pop = circuit.populations[n]
                g = population_group(pops, n, circuit)
                g.dimensions["time"] = None
                g.dimensions["neuron"] = pop.size
                g.create_variable("time", ("time",), "f8", chunks=(4096,))
                g.variables["time"].attrs["units"] = "second"
                g.variables["time"].attrs["long_name"] = "start of the rate bin"
                r = g.create_variable(
                    "rate", ("time", "neuron"), "f4", chunks=(max(1, 4096 // pop.size), pop.size)
                )
                r.attrs["units"] = "Hz"
                r.attrs["long_name"] = f"spike count per {self.bin_s * 1e3:g} ms bin / bin"
            sts = f.create_group("states")
            for n, mon in self.state_mon.items():
                g = sts.create_group(n)
                k = len(mon.record)
                g.dimensions["time"] = None
                g.dimensions["neuron"] = k
                g.create_variable("time", ("time",), "f8", chunks=(4096,))
                g.variables["time"].attrs["units"] = "second"
                g.create_variable("neuron", ("neuron",), "i8")
                g.variables["neuron"][:] = np.asarray(mon.record)
                for var in self.spec.states[n]:
                    v = g.create_variable(var, ("time", "neuron"), "f4", chunks=(1024, k))
                    v.attrs["units"] = _unit(net.groups[n], var)
            spk = f.create_group("spikes")
            for n in self.spike_mon:
                if self.spec.spikes is not None and n not in self.spec.spikes:
                    continue
                g = spk.create_group(n)
                g.dimensions["spike"] = None
                g.create_variable("neuron", ("spike",), "i4", chunks=(65536,))
                g.create_variable("time", ("spike",), "f8", chunks=(65536,))
                g.variables["time"].attrs["units"] = "second"
                g.variables["neuron"].attrs["long_name"] = "index of the neuron that spiked"
        self.h5 = h5py.File(path, "a")

    # -- draining -------------------------------------------------------------------------
    def __call__(self, t: Quantity | None = None) -> None:
        """Move everything the monitors hold up to time ``t`` (default: now) out of them."""
        t_s = float((t if t is not None else self.network.net.t) / second)
        n_complete = min(self.schedule.n, int(round(t_s / self.present_s, 9)))
        for n, mon in self.spike_mon.items():
            i = np.array(mon.i[:], dtype=np.int32)  # copies: clearing reuses the buffers
            ts = np.array(mon.t[:] / second)
            _clear(mon)
            if self.writing and f"spikes/{n}" in self.h5:
                _append(self.h5[f"spikes/{n}"], {"neuron": i, "time": ts})
            ci, ct = self._carry.get(n, (np.empty(0, np.int32), np.empty(0)))
            i, ts = np.concatenate([ci, i]), np.concatenate([ct, ts])
            if n == self.output:
                self._score(i, ts, n_complete)
            if self.writing:
                i, ts = self._bin(n, i, ts, n_complete * self.present_s)
            else:
                keep = ts >= n_complete * self.present_s
                i, ts = i[keep], ts[keep]
            self._carry[n] = (i, ts)
        if self.writing:
            self.binned_until = n_complete * self.present_s
            for n, mon in self.state_mon.items():
                data = {"time": np.array(mon.t[:] / second)}
                for var in self.spec.states[n]:
                    data[var] = np.array(getattr(mon, var)[:]).T
                _clear(mon)
                _append(self.h5[f"states/{n}"], data)
            for pname, mon in self.weight_mon.items():
                var = "w" if self.network.circuit.pathways[pname].role == "feedforward" else "B"
                ts = np.array(mon.t[:] / second)
                values = np.array(getattr(mon, var)[:])  # (synapse, sample)
                _clear(mon)
                if ts.size:
                    self._write_weights(pname, ts, values)
            self._write_metrics(n_complete)
            self.h5.flush()
        self.done = max(self.done, n_complete)

    def _score(self, i: np.ndarray, ts: np.ndarray, n_complete: int) -> None:
        """Output spike counts in each presentation's scored window (after settle)."""
        n = np.floor(ts / self.present_s + 1e-9).astype(np.int64)
        within = ts - n * self.present_s >= self.settle_s - 1e-9
        sel = within & (n < n_complete) & (n >= self.done)
        np.add.at(self.counts, (n[sel], i[sel]), 1)

    def _bin(self, pop: str, i: np.ndarray, ts: np.ndarray, until: float):
        """Append rates of complete bins in [binned_until, until); return the rest."""
        start = self.binned_until
        nb = int(round((until - start) / self.bin_s))
        if nb <= 0:
            return i, ts
        size = self.network.circuit.populations[pop].size
        b = np.floor((ts - start) / self.bin_s + 1e-9).astype(np.int64)
        sel = (b >= 0) & (b < nb)
        counts = np.zeros((nb, size), np.float32)
        np.add.at(counts, (b[sel], i[sel]), 1)
        _append(
            self.h5[f"populations/{pop}"],
            {"time": start + self.bin_s * np.arange(nb), "rate": counts / self.bin_s},
        )
        return i[~sel & (b >= nb)], ts[~sel & (b >= nb)]

    def _write_weights(self, pname: str, ts: np.ndarray, values: np.ndarray) -> None:
        i, j = self.network.index[pname]
        n_post, n_pre = self.network.circuit.pathways[pname].shape
        mats = np.empty((ts.size, n_post, n_pre), np.float32)
        mats[:, j, i] = values.T
        steps = np.round(ts / self.present_s).astype(np.int64)
        _append(self.h5[f"pathways/{pname}"], {"step": steps, "time": ts, "weight": mats})
        self._last_weights[pname] = mats[-1]

    def _write_metrics(self, n_complete: int) -> None:
        lo, hi = self.done, n_complete
        if hi <= lo:
            return
        s = self.schedule
        idx = np.arange(lo, hi)
        pred = self.prediction(idx)
        window = self.present_s - self.settle_s
        rates = self.counts[idx] / window
        tr = self.target_rate
        y = s.y[idx] if s.y is not None else np.zeros_like(rates)
        loss = 0.5 * ((y - rates / tr) ** 2).sum(1)
        train_step = np.cumsum(s.learn)[idx] - s.learn[idx]
        _append(
            self.h5["metrics"],
            {
                "step": idx,
                "time": idx * self.present_s,
                "train_step": train_step,
                "learn": s.learn[idx].astype(np.int8),
                "label": s.labels[idx],
                "prediction": pred,
                "correct": (pred == s.labels[idx]).astype(np.int8),
                "loss": loss,
            },
        )

    def prediction(self, idx: np.ndarray) -> np.ndarray:
        """Output neuron with the most spikes in the scored window (−1 when none spiked)."""
        c = self.counts[idx]
        pred = c.argmax(1)
        pred[c.max(1) == 0] = -1
        return pred

    def final_weights(self) -> dict[str, np.ndarray]:
        return dict(self._last_weights)

    def write_final_weights(self, t: Quantity) -> None:
        """Append the weights at the end of the run (one last ``step``)."""
        if not self.writing:
            return
        t_s = float(t / second)
        for pname in self.weight_mon:
            w = self.network.weight(pname)
            i, j = self.network.index[pname]
            self._write_weights(pname, np.array([t_s]), w[j, i][:, None])
        self.h5.flush()

    def close(self) -> None:
        if self.h5 is not None:
            self.h5.close()
            self.h5 = None


def _append(group: h5py.Group, data: dict[str, np.ndarray]) -> None:
    """Append rows to every variable named in ``data`` (all along their first dimension)."""
    n = new = None
    for k, v in data.items():
        v = np.asarray(v)
        ds = group[k]
        if n is None:
            n = ds.shape[0]
            new = n + v.shape[0]
        ds.resize(new, axis=0)
        ds[n:] = v
    for k, ds in group.items():  # NetCDF dimension scales of the grown dimension
        if (
            k not in data
            and isinstance(ds, h5py.Dataset)
            and ds.maxshape
            and ds.maxshape[0] is None
            and ds.shape[0] < new
        ):
            ds.resize(new, axis=0)


def _clear(mon) -> None:
    """Empty a runtime monitor (brian2 would otherwise keep everything in RAM); standalone
    monitors are read once, after the run, and left as they are."""
    from brian2 import get_device
    from brian2.devices.cpp_standalone.device import CPPStandaloneDevice

    if isinstance(get_device(), CPPStandaloneDevice):
        return
    mon.resize(0)
    mon.variables["N"].set_value(0)


def _weight_unit(model) -> str:
    """What a weight of 1 means: ``"mV"`` for w_unit = 1 mV, else e.g. ``"0.5 mV"``."""
    q = model.w_unit
    best = q.get_best_unit()
    factor = float(q / best)
    return str(best) if np.isclose(factor, 1.0) else f"{factor:g} {best}"


def _unit(group, var: str) -> str:
    dim = group.variables[var].dim
    if dim is DIMENSIONLESS:
        return "1"
    return str(get_unit(dim))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def schedule_attrs(schedule: Schedule) -> dict[str, Any]:
    return {
        "present": str(schedule.present),
        "settle": str(schedule.settle),
        "presentations": schedule.n,
        "learning_presentations": int(schedule.learn.sum()),
        "simulated_time_s": float(schedule.duration / second),
    }
