"""Running a spiking circuit: one brian2 ``run()`` over a whole schedule, on a chosen target.

Code generation targets (``target=``):

* ``"numpy"``  — no compiler; slowest per step, no start-up cost (the fast tests use it);
* ``"cython"`` — the default: compiled once (~45 s here), then cached in ``cache_dir``
  (brian2's ``prefs.codegen.runtime.cython.cache_dir``; default brian2's own);
* ``"cpp_standalone"`` — the whole network is generated as a C++ project in
  ``standalone_dir``, compiled and run; monitors are drained after the run (there is no
  Python in its loop).

Everything a run needs is checked before brian2 starts (units, sizes, targets, dt grid).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from brian2 import (
    Hz,
    Network,
    Quantity,
    device,
    ms,
    network_operation,
    prefs,
    second,
    set_device,
)
from brian2 import seed as brian2_seed

from bioprop.spiking.encoding import Schedule
from bioprop.spiking.network import SpikingNetwork, build, check_spiking_circuit
from bioprop.spiking.recording import Drain, SpikeRecord, schedule_attrs
from bioprop.spiking.rule import ThreeFactorFA
from bioprop.spiking.units import check_quantity

__all__ = ["run", "SpikingRun", "TARGETS"]

TARGETS = ("numpy", "cython", "cpp_standalone")


@dataclass
class SpikingRun:
    """What a spiking run leaves: per-presentation predictions, the test accuracy after
    each block of learning, simulated and wall time, and the recording path."""

    schedule: Schedule
    predictions: np.ndarray
    simulated_s: float
    wall_s: float
    build_s: float
    path: Path | None
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def correct(self) -> np.ndarray:
        return self.predictions == self.schedule.labels

    def test_blocks(self) -> list[tuple[int, float]]:
        """(learning presentations before the block, accuracy) for every block of
        consecutive test (non-learning, labelled) presentations."""
        s = self.schedule
        out, start = [], None
        trained = np.cumsum(s.learn) - s.learn
        for n in range(s.n + 1):
            testing = n < s.n and not s.learn[n] and s.labels[n] >= 0
            if testing and start is None:
                start = n
            elif not testing and start is not None:
                out.append((int(trained[start]), float(self.correct[start:n].mean())))
                start = None
        return out

    @property
    def final_accuracy(self) -> float:
        blocks = self.test_blocks()
        if not blocks:
            raise ValueError("the schedule has no test presentations")
        return blocks[-1][1]

    def summary(self) -> str:
        return (
            f"test accuracy {self.final_accuracy:.3f} after "
            f"{int(self.schedule.learn.sum())} learning presentations; simulated "
            f"{self.simulated_s:.1f} s in {self.wall_s:.1f} s wall "
            f"({self.simulated_s / self.wall_s:.2f}x real time)"
        )


def run(
    circuit,
    rule: ThreeFactorFA,
    schedule: Schedule,
    *,
    target: str = "cython",
    dt: Quantity = 0.5 * ms,
    seed: int = 0,
    record: SpikeRecord | None = None,
    cache_dir: str | os.PathLike | None = None,
    standalone_dir: str | os.PathLike | None = None,
    learn: bool = True,
    write_back: bool = True,
) -> SpikingRun:
    """Simulate ``circuit`` with brian2 over ``schedule``, learning with ``rule``.

    Parameters
    ----------
    circuit
        A :class:`bioprop.Circuit` whose populations are all spiking, the input one an
        encoder; ``rule.attach(circuit)`` must have installed the feedback pathways.
    rule
        The learning rule (:class:`ThreeFactorFA`).
    schedule
        What is presented when (:class:`Schedule`).
    target
        ``"numpy"``, ``"cython"`` (default) or ``"cpp_standalone"``.
    dt
        Simulation time step (time).
    seed
        Seeds brian2's random numbers (Poisson inputs).
    record
        What to write (:class:`SpikeRecord`); None keeps only the metrics in memory.
    cache_dir
        Cython cache directory (``target="cython"``).
    standalone_dir
        Project directory of ``cpp_standalone`` (default: a temporary one).
    learn
        False: run without plasticity (evaluation only).
    write_back
        Copy the learned weights into the circuit's pathways after the run.
    """
    # -- checks before any work ---------------------------------------------------------
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    dt = check_quantity(dt, "time", "run", "dt", positive=True)
    if not isinstance(rule, ThreeFactorFA):
        raise TypeError(f"rule must be a bioprop.spiking.ThreeFactorFA, got {rule!r}")
    check_spiking_circuit(circuit)
    missing = [
        pw.name
        for pw in circuit.feedforward_pathways()
        if pw.source != circuit.input and pw.name not in rule.feedback
    ]
    if missing:
        raise ValueError(
            f"pathways {missing} have no feedback pathway: call rule.attach(circuit) first"
        )
    schedule.grid(dt)
    if record is not None and not isinstance(record, SpikeRecord):
        raise TypeError(f"record must be a SpikeRecord or None, got {record!r}")
    if cache_dir is not None and target != "cython":
        raise ValueError("cache_dir applies to target='cython' only")

    old_target = prefs.codegen.target
    old_cache = prefs.codegen.runtime.cython.cache_dir
    standalone = target == "cpp_standalone"
    t0 = time.perf_counter()
    drain = None
    try:
        if standalone:
            directory = standalone_dir or tempfile.mkdtemp(prefix="bioprop-standalone-")
            set_device("cpp_standalone", directory=str(directory), build_on_run=True)
        else:
            prefs.codegen.target = target
            if cache_dir is not None:
                Path(cache_dir).mkdir(parents=True, exist_ok=True)
                prefs.codegen.runtime.cython.cache_dir = str(cache_dir)
        brian2_seed(seed)
        sn: SpikingNetwork = build(circuit, rule, schedule, dt, learn=learn)
        attrs = {
            "rule": rule.name,
            "rule_hyperparameters": json.dumps(rule.hyperparameters()),
            "simulator": "brian2",
            "codegen_target": target,
            "dt": str(dt),
            "seed": seed,
            "circuit": circuit.describe(),
            "populations": json.dumps(list(circuit.order())),
            "input_population": circuit.input,
            "output_population": circuit.output,
            "hidden_populations": json.dumps(circuit.hidden()),
            **schedule_attrs(schedule),
            **_versions(),
        }
        drain = Drain(record, sn, schedule, dt, attrs)
        drain.target_rate = float(rule.target_rate / Hz)
        objects: list = list(drain.monitors)
        if not standalone:
            every = (record.drain_every if record else 50) * schedule.present

            @network_operation(dt=every, when="start", order=-10, name="drain")
            def _drain(t):
                drain(t)

            objects.append(_drain)
        sn.net.add(*objects)
        build_s = time.perf_counter() - t0
        sn.net.run(schedule.duration, namespace={}, report=None)
        drain(schedule.duration)
        drain.write_final_weights(schedule.duration)
        if write_back:
            sn.write_back()
        weights = {k: sn.weight(k) for k in sn.synapses}
        wall = time.perf_counter() - t0
        preds = np.full(schedule.n, -1, np.int64)
        preds[: drain.done] = drain.prediction(np.arange(drain.done))
        return SpikingRun(
            schedule,
            preds,
            float(schedule.duration / second),
            wall,
            build_s,
            record.path if record else None,
            weights,
        )
    finally:
        if drain is not None:
            drain.close()
        if standalone:
            device.reinit()
            device.activate()
            set_device("runtime")
        prefs.codegen.target = old_target
        prefs.codegen.runtime.cython.cache_dir = old_cache


def _versions() -> dict[str, str]:
    import platform

    import brian2
    import numpy
    import torch

    import bioprop

    return {
        "bioprop_version": bioprop.__version__,
        "brian2_version": brian2.__version__,
        "torch_version": torch.__version__,
        "numpy_version": numpy.__version__,
        "python_version": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


_ = Network  # re-exported type of SpikingNetwork.net
