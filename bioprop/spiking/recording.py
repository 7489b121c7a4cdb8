"""Recording a spiking run through the one writer, draining brian2's monitors as it goes.

brian2 keeps everything a monitor records in RAM until the run ends.  Here a
``network_operation`` (the *drain*) runs every ``drain_every`` presentations inside the
single ``run()``: it appends what the monitors hold to the recording
(:class:`bioprop.recording.writer.Recorder`, the writer of every family), flushes, and
empties the monitors — so a long run's memory stays bounded by one drain interval and a
killed run keeps everything drained before the kill.  (``cpp_standalone`` has no Python in
the loop: there the monitors are drained once, after the run.)

Layout (NetCDF4-valid HDF5, opened by :func:`bioprop.load`; see ``docs/recordings.md``)::

    /                       provenance (bioprop.recording.provenance): rule, hyper-parameters,
                            codegen target, dt, seed, schedule, versions, ...
    /metrics                step (one record per presentation): time, train_step, learn,
                            label, prediction, correct, loss; test_error and test_loss on the
                            last presentation of every test block
    /pathways/<name>        step, post, pre: weight (+ time) every ``every`` presentations;
                            plastic ones also weight_update (the change over that presentation)
                            and weight_update_bp (the rate twin's bp update at its rates)
    /populations/<name>     time (own unlimited dim), neuron: rate [Hz] (spike counts per bin)
    /states/<name>          time (own unlimited dim), neuron: sampled states, units in attrs
    /spikes/<name>          spike (own unlimited dim): neuron, time [s] — ragged spike trains

``step`` counts presentations (sample n is presented during [n·present, (n+1)·present)).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
from brian2 import Quantity, SpikeMonitor, StateMonitor, get_unit, second
from brian2.units.fundamentalunits import DIMENSIONLESS

from bioprop.recording.writer import ExtraVariable, Recorder
from bioprop.spiking.encoding import Schedule
from bioprop.spiking.network import SpikingNetwork
from bioprop.spiking.plan import Plan, SpikeRecord, plan

__all__ = ["SpikeRecord", "Plan", "plan", "Drain", "evaluation_blocks"]


class Drain:
    """Owns the monitors of one run and moves their contents into the recording and the
    in-memory per-presentation results (``counts``, ``predictions``, ``loss``);
    ``__call__`` is the network operation, :meth:`finish` ends the run."""

    def __init__(
        self,
        spec: SpikeRecord | None,
        plan_: Plan,
        network: SpikingNetwork,
        schedule: Schedule,
        dt: Quantity,
        attrs: dict[str, Any],
        target_rate: float,
    ):
        self.spec, self.plan, self.network, self.schedule = spec, plan_, network, schedule
        self.circuit = circuit = network.circuit
        self.output, self.target_rate = circuit.output, target_rate
        self.present_s = float(schedule.present / second)
        self.window_s = self.present_s - float(schedule.settle / second)
        self.settle_s = float(schedule.settle / second)
        self.every = spec.every if spec is not None else 1
        bin_ = (spec.rate_bin if spec is not None else None) or schedule.present
        per = float(schedule.present / bin_)
        if abs(per - round(per)) > 1e-6:
            raise ValueError(
                f"SpikeRecord: rate_bin ({bin_}) must divide the presentation ({schedule.present})"
            )
        self.bin_s = self.present_s / round(per)
        self.writing = spec is not None
        g, syn = network.groups, network.synapses
        self.spike_mon = {
            n: SpikeMonitor(g[n], name=f"spikes_{_safe(n)}")
            for n in circuit.order()
            if n in plan_.counted or n in plan_.spikes
        }
        self.state_mon: dict[str, StateMonitor] = {}
        for n, variables in (spec.states if spec is not None else {}).items():
            unknown = [v for v in variables if v not in g[n].variables]
            if unknown:
                have = sorted(k for k in g[n].variables if not k.startswith("_"))
                raise ValueError(
                    f"SpikeRecord(states=...): population {n!r} has no variable(s) "
                    f"{unknown}; it has {have}"
                )
            self.state_mon[n] = StateMonitor(
                g[n],
                list(variables),
                record=np.arange(min(spec.state_neurons, g[n].N)),
                dt=spec.state_dt,
                when="end",
                name=f"states_{_safe(n)}",
            )
        every = self.every * schedule.present

        def synapses(p: str, var: str, order: int, prefix: str) -> StateMonitor:
            """Every synapse's ``var`` once per ``every``, at the start of the step."""
            name = f"{prefix}_{_safe(p)}"
            return StateMonitor(syn[p], var, True, dt=every, when="start", order=order, name=name)

        self.weight_mon = {p: synapses(p, _var(circuit, p), -5, "weights") for p in plan_.weights}
        self.change_mon = {p: synapses(p, "w_change", -20, "changes") for p in plan_.tracked}
        self.monitors = [
            *self.spike_mon.values(),
            *self.state_mon.values(),
            *self.weight_mon.values(),
            *self.change_mon.values(),
        ]
        self.counts = {n: np.zeros((schedule.n, g[n].N), np.int32) for n in plan_.counted}
        self.predictions = np.full(schedule.n, -1, np.int64)
        self.loss = np.full(schedule.n, np.nan)
        self.done = 0  # presentations whose window is complete and scored
        self.binned_until = 0.0  # seconds
        self._carry: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._at: dict[int, dict[str, np.ndarray]] = {}  # step -> weights (for references)
        self._blocks = evaluation_blocks(schedule)
        self.recorder = None
        if self.writing:
            self.recorder = Recorder(replace(spec, samples=0), circuit, attrs, extra=self._layout())
            self._annotate()

    # -- layout ---------------------------------------------------------------------------
    def _layout(self) -> dict[str, dict[str, ExtraVariable]]:
        def ev(long, dtype="f8", dims=(), shape=(), grows="step", rows=4096, **attrs):
            return ExtraVariable(dims, shape, long, dtype, attrs, grows, rows)

        ex: dict[str, dict[str, ExtraVariable]] = {
            "metrics": {
                "time": ev("start of the presentation (s)", units="second"),
                "train_step": ev("learning presentations before this one", "i8"),
                "learn": ev("1 if the rule learned during this presentation", "i1"),
                "label": ev("class label (-1: none)", "i8"),
                "prediction": ev("output neuron with most spikes after settle (-1: none)", "i8"),
                "correct": ev("prediction == label", "i1"),
            }
        }
        for p in self.plan.pathways:
            ex[f"pathways/{p}"] = {
                "time": ev("time of the weight sample", units="second", rows=1024)
            }
        pops = self.circuit.populations
        for n in self.plan.rates:
            size = pops[n].size
            ex[f"populations/{n}"] = {
                "time": ev("start of the rate bin", grows="time", units="second"),
                "rate": ev(
                    f"spike count per {self.bin_s * 1e3:g} ms bin / bin",
                    "f4",
                    ("neuron",),
                    (size,),
                    "time",
                    max(1, 4096 // size),
                    units="Hz",
                ),
            }
        for n, mon in self.state_mon.items():
            k = len(mon.record)
            ex[f"states/{n}"] = {"time": ev("sample time", grows="time", units="second")}
            for var in self.spec.states[n]:
                unit = _unit(self.network.groups[n], var)
                ex[f"states/{n}"][var] = ev(var, "f4", ("neuron",), (k,), "time", 1024, units=unit)
        for n in self.plan.spikes:
            ex[f"spikes/{n}"] = {
                "neuron": ev("index of the neuron that spiked", "i4", grows="spike", rows=65536),
                "time": ev("spike time", grows="spike", rows=65536, units="second"),
            }
        return ex

    def _annotate(self) -> None:
        rec, pops = self.recorder, self.circuit.populations
        for p in self.plan.pathways:
            pw = self.circuit.pathways[p]
            ff = pw.role == "feedforward"
            units = _weight_unit(pops[pw.target].model) if ff else "1"
            if rec.has(f"pathways/{p}", "weight"):
                long = "weight W (post x pre) at the start of presentation `step`"
                rec.annotate(
                    f"pathways/{p}/weight",
                    units=units,
                    long_name=long if ff else "fixed feedback weight B (post x pre)",
                )
            if rec.has(f"pathways/{p}", "weight_update"):
                rec.annotate(
                    f"pathways/{p}/weight_update",
                    units=units,
                    long_name=("the rule's weight change over presentation `step` (eta included)"),
                )
            if rec.has(f"pathways/{p}", "weight_update_bp"):
                rec.annotate(
                    f"pathways/{p}/weight_update_bp",
                    long_name=(
                        "rate twin's bp update -dL/dW at the rates measured in presentation `step` "
                        "(bioprop.spiking.twin.bp_at_rates)"
                    ),
                )

    # -- draining -------------------------------------------------------------------------
    def __call__(self, t: Quantity | None = None) -> None:
        """Move everything the monitors hold up to time ``t`` (default: now) out of them."""
        t_s = float((t if t is not None else self.network.net.t) / second)
        n_complete = min(self.schedule.n, int(round(t_s / self.present_s, 9)))
        until = n_complete * self.present_s
        rec = self.recorder
        for n, mon in self.spike_mon.items():
            i = np.array(mon.i[:], dtype=np.int32)  # copies: clearing reuses the buffers
            ts = np.array(mon.t[:] / second)
            _clear(mon)
            if self.writing and n in self.plan.spikes:
                rec.extend(f"spikes/{n}", "spike", {"neuron": i, "time": ts})
            ci, ct = self._carry.get(n, (np.empty(0, np.int32), np.empty(0)))
            i, ts = np.concatenate([ci, i]), np.concatenate([ct, ts])
            k = np.floor(ts / self.present_s + 1e-9).astype(np.int64)
            if n in self.counts:
                within = ts - k * self.present_s >= self.settle_s - 1e-9
                sel = within & (k < n_complete) & (k >= self.done)
                np.add.at(self.counts[n], (k[sel], i[sel]), 1)
            if self.writing and n in self.plan.rates:
                self._bin(n, i, ts, until)
            self._carry[n] = (i[k >= n_complete], ts[k >= n_complete])
        if self.writing:
            self.binned_until = until
            for n, mon in self.state_mon.items():
                data = {"time": np.array(mon.t[:] / second)}
                for var in self.spec.states[n]:
                    data[var] = np.array(getattr(mon, var)[:]).T
                _clear(mon)
                rec.extend(f"states/{n}", "time", data)
        for p, mon in self.weight_mon.items():
            ts, values = (
                np.array(mon.t[:] / second),
                np.array(getattr(mon, _var(self.circuit, p))[:]),
            )
            _clear(mon)
            if ts.size:
                self._weights(p, ts, self._matrices(p, values.T))
        for p, mon in self.change_mon.items():
            ts, values = np.array(mon.t[:] / second), np.array(mon.w_change[:])
            _clear(mon)
            for T, change in zip(ts, self._matrices(p, values.T), strict=True):
                self._update(p, round(T / self.present_s) - self.every, change)
        self._metrics(n_complete)
        for s in sorted(s for s in self._at if s < n_complete):
            self._reference(s, self._at.pop(s))
        if self.writing:
            rec.flush()

    def _bin(self, pop: str, i: np.ndarray, ts: np.ndarray, until: float) -> None:
        """Append the rates of the complete bins in [binned_until, until)."""
        start = self.binned_until
        nb = int(round((until - start) / self.bin_s))
        if nb <= 0:
            return
        b = np.floor((ts - start) / self.bin_s + 1e-9).astype(np.int64)
        sel = (b >= 0) & (b < nb)
        counts = np.zeros((nb, self.circuit.populations[pop].size), np.float32)
        np.add.at(counts, (b[sel], i[sel]), 1)
        self.recorder.extend(
            f"populations/{pop}",
            "time",
            {"time": start + self.bin_s * np.arange(nb), "rate": counts / self.bin_s},
        )

    def _matrices(self, p: str, values: np.ndarray) -> np.ndarray:
        """(samples, synapses) → (samples, post, pre)."""
        i, j = self.network.index[p]
        mats = np.empty((values.shape[0], *self.circuit.pathways[p].shape), np.float32)
        mats[:, j, i] = values
        return mats

    def _weights(self, p: str, ts: np.ndarray, mats: np.ndarray) -> None:
        steps = np.round(ts / self.present_s).astype(np.int64)
        if self.plan.reference:
            for s, m in zip(steps, mats, strict=True):
                if s < self.schedule.n and self.schedule.learn[s]:
                    self._at.setdefault(int(s), {})[p] = m
        if self.writing and p in self.plan.pathways:
            values = {"step": steps, "time": ts}
            if self.recorder.has(f"pathways/{p}", "weight"):
                values["weight"] = mats
            self.recorder.extend(f"pathways/{p}", "step", values)

    def _update(self, p: str, s: int, change: np.ndarray) -> None:
        if 0 <= s < self.schedule.n and self.schedule.learn[s]:
            self.recorder.put(f"pathways/{p}", s, {"weight_update": change})

    def _reference(self, s: int, weights: dict[str, np.ndarray]) -> None:
        """weight_update_bp of step s: the rate twin's bp at the rates of presentation s."""
        from bioprop.spiking import twin

        c, sch = self.circuit, self.schedule
        rates = {n: self.counts[n][s] / self.window_s for n in self.counts}
        rates[c.input] = sch.x[s] * float(c.populations[c.input].model.max_rate)
        ref = twin.bp_at_rates(c, rates, sch.y[s], self.target_rate, weights=weights)
        for p in self.plan.reference:
            self.recorder.put(f"pathways/{p}", s, {"weight_update_bp": ref.update(p).numpy()})

    def _metrics(self, n_complete: int) -> None:
        lo, hi = self.done, n_complete
        if hi <= lo:
            return
        s, idx = self.schedule, np.arange(lo, hi)
        c = self.counts[self.output][idx]
        pred = np.where(c.max(1) > 0, c.argmax(1), -1)
        y = s.y[idx] if s.y is not None else np.zeros(c.shape)
        loss = 0.5 * ((y - c / self.window_s / self.target_rate) ** 2).sum(1)
        self.predictions[idx], self.loss[idx] = pred, loss
        self.done = n_complete
        if not self.writing:
            return
        test_error, test_loss = np.full(len(idx), np.nan), np.full(len(idx), np.nan)
        for a, b in self._blocks:
            if lo <= b - 1 < hi:
                test_error[b - 1 - lo] = 1.0 - np.mean(self.predictions[a:b] == s.labels[a:b])
                test_loss[b - 1 - lo] = self.loss[a:b].mean()
        self.recorder.extend(
            "metrics",
            "step",
            {
                "step": idx,
                "epoch": np.zeros(len(idx), np.int64),
                "time": idx * self.present_s,
                "train_step": np.cumsum(s.learn)[idx] - s.learn[idx],
                "learn": s.learn[idx].astype(np.int8),
                "label": s.labels[idx],
                "prediction": pred,
                "correct": (pred == s.labels[idx]).astype(np.int8),
                "loss": loss,
                "test_error": test_error,
                "test_loss": test_loss,
            },
        )

    def finish(self, t: Quantity) -> None:
        """Drain up to the end ``t``, then record the final weights (one last ``step``)
        and the update of the last recorded presentation, which no monitor sample saw."""
        self(t)
        if not self.writing:
            return
        n, t_s = self.schedule.n, float(t / second)
        for p in self.plan.pathways:
            self._weights(p, np.array([t_s]), self.network.weight(p)[None])
        last = (n - 1) // self.every * self.every
        for p in self.plan.tracked:
            self._update(p, last, self.network.weight(p, "w_change"))
        self.recorder.flush()

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.close()


def evaluation_blocks(schedule: Schedule) -> list[tuple[int, int]]:
    """[start, end) of every block of consecutive test (non-learning, labelled)
    presentations."""
    testing = ~schedule.learn & (schedule.labels >= 0)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], testing.astype(np.int8), [0]])))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _var(circuit, pathway: str) -> str:
    return "w" if circuit.pathways[pathway].role == "feedforward" else "B"


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
    return "1" if dim is DIMENSIONLESS else str(get_unit(dim))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)
