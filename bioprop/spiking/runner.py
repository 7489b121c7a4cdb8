"""Running a spiking circuit: one brian2 ``run()`` over a whole schedule, on a chosen target.

Code generation targets (``target=``):

* ``"numpy"``  — no compiler; slowest per step, no start-up cost (the fast tests use it);
* ``"cython"`` — the default: compiled once (~45 s here), then cached in ``cache_dir``
  (brian2's ``prefs.codegen.runtime.cython.cache_dir``; default brian2's own);
* ``"cpp_standalone"`` — the whole network is generated as a C++ project in
  ``standalone_dir``, compiled and run; monitors are drained after the run (there is no
  Python in its loop).

Everything a run needs is checked before brian2 starts (units, sizes, targets, dt grid).
:func:`run` is the runner under :func:`bioprop.spiking.loop.fit` (what :func:`bioprop.train`
calls for spiking circuits) and under ``ThreeFactorFA.step``; call it directly for a
hand-made :class:`Schedule`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from brian2 import Hz, device, ms, network_operation, prefs, second, set_device
from brian2 import seed as brian2_seed

from bioprop.recording.provenance import provenance
from bioprop.recording.writer import Record
from bioprop.rules.spiking_fa import ThreeFactorFA
from bioprop.spiking.encoding import Schedule
from bioprop.spiking.network import SpikingNetwork, build
from bioprop.spiking.recording import Drain, SpikeRecord, evaluation_blocks, plan
from bioprop.spiking.units import check_quantity

__all__ = ["run", "SpikingRun", "TARGETS", "schedule_attrs"]

TARGETS = ("numpy", "cython", "cpp_standalone")


@dataclass
class SpikingRun:
    """What a spiking run leaves: per-presentation predictions and loss
    ½‖y − r_out/ν_y‖², the rates (Hz) in every presentation's learning window of the
    populations it counted, simulated and wall time, the recording path and the final
    weights."""

    schedule: Schedule
    predictions: np.ndarray
    simulated_s: float
    wall_s: float
    build_s: float
    path: Path | None
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    loss: np.ndarray | None = None
    rates: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def correct(self) -> np.ndarray:
        return self.predictions == self.schedule.labels

    def test_blocks(self) -> list[tuple[int, float]]:
        """(learning presentations before the block, accuracy) for every block of
        consecutive test (non-learning, labelled) presentations."""
        trained = np.cumsum(self.schedule.learn) - self.schedule.learn
        return [
            (int(trained[a]), float(self.correct[a:b].mean()))
            for a, b in evaluation_blocks(self.schedule)
        ]

    def test_losses(self) -> list[float]:
        """Mean loss of every test block (same blocks as :meth:`test_blocks`)."""
        return [float(self.loss[a:b].mean()) for a, b in evaluation_blocks(self.schedule)]

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


def schedule_attrs(schedule: Schedule) -> dict[str, Any]:
    """The schedule's budget, for provenance."""
    return {
        "present": str(schedule.present),
        "settle": str(schedule.settle),
        "presentations": schedule.n,
        "learning_presentations": int(schedule.learn.sum()),
        "simulated_time_s": float(schedule.duration / second),
    }


def run(
    circuit,
    rule: ThreeFactorFA,
    schedule: Schedule,
    *,
    target: str = "cython",
    dt: Any = 0.5 * ms,
    seed: int = 0,
    record: Record | None = None,
    attrs: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike | None = None,
    standalone_dir: str | os.PathLike | None = None,
    learn: bool = True,
    write_back: bool = True,
    measure: str = "output",
    report: Callable | None = None,
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
        Seeds brian2's random numbers (Poisson inputs), an integer in [0, 2³²).
    record
        What to write (:class:`SpikeRecord`, or a plain :class:`bioprop.Record` with the
        spiking defaults); None keeps only the per-presentation results in memory.
    attrs
        Provenance of the recording (default: :func:`bioprop.recording.provenance.provenance`
        with task ``"schedule"``); the run adds its target, dt, seed and schedule.
    cache_dir
        Cython cache directory (``target="cython"``).
    standalone_dir
        Project directory of ``cpp_standalone`` (default: a temporary one).
    learn
        False: run without plasticity (evaluation only).
    write_back
        Copy the learned weights into the circuit's pathways after the run.
    measure
        ``"output"`` (count the output's spikes per presentation) or ``"all"`` (every
        population's, for :attr:`SpikingRun.rates`).
    report
        brian2 progress callback ``(elapsed, completed, start, duration)`` (runtime targets).
    """
    # -- checks before any work ---------------------------------------------------------
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    dt = check_quantity(dt, "time", "run", "dt", positive=True)
    if not isinstance(rule, ThreeFactorFA):
        raise TypeError(f"rule must be a bioprop.spiking.ThreeFactorFA, got {rule!r}")
    rule.check(circuit)
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
    if measure not in ("output", "all"):
        raise ValueError(f"measure must be 'output' or 'all', got {measure!r}")
    spec = SpikeRecord.of(record) if record is not None else None
    if cache_dir is not None and target != "cython":
        raise ValueError("cache_dir applies to target='cython' only")
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an integer in [0, 2**32), got {seed!r}")
    the_plan = plan(spec, circuit, learn, measure)

    old_target = prefs.codegen.target
    old_cache = prefs.codegen.runtime.cython.cache_dir
    standalone = target == "cpp_standalone"
    t0 = time.perf_counter()
    drain = None
    scratch = None  # a standalone project folder made here, removed after the run
    try:
        if standalone:
            if standalone_dir is None:
                scratch = tempfile.mkdtemp(prefix="bioprop-standalone-")
            directory = standalone_dir or scratch
            set_device("cpp_standalone", directory=str(directory), build_on_run=True)
        else:
            prefs.codegen.target = target
            if cache_dir is not None:
                Path(cache_dir).mkdir(parents=True, exist_ok=True)
                prefs.codegen.runtime.cython.cache_dir = str(cache_dir)
        brian2_seed(int(seed))
        sn: SpikingNetwork = build(
            circuit,
            rule,
            schedule,
            dt,
            learn=learn,
            track=the_plan.tracked,
            track_every=spec.every if spec is not None else 1,
        )
        if attrs is None and spec is not None:
            attrs = provenance(circuit, rule, task="schedule", loss="mse", seed=seed)
        attrs = {
            **(attrs or {}),
            "simulator": "brian2",
            "codegen_target": target,
            "dt": str(dt),
            "brian2_seed": int(seed),
            **schedule_attrs(schedule),
        }
        target_rate = float(rule.target_rate / Hz)
        drain = Drain(spec, the_plan, sn, schedule, dt, attrs, target_rate)
        objects: list = list(drain.monitors)
        if not standalone:
            every = (spec.drain_every if spec else 50) * schedule.present

            @network_operation(dt=every, when="start", order=-10, name="drain")
            def _drain(t):
                drain(t)

            objects.append(_drain)
        sn.net.add(*objects)
        build_s = time.perf_counter() - t0
        progress = {} if standalone or report is None else {"report": report}
        sn.net.run(schedule.duration, namespace={}, report_period=1 * second, **progress)
        drain.finish(schedule.duration)
        if write_back:
            sn.write_back()
        weights = {k: sn.weight(k) for k in sn.synapses}
        window = float((schedule.present - schedule.settle) / second)
        rates = {n: c / window for n, c in drain.counts.items()}
        inp = circuit.populations[circuit.input].model
        rates[circuit.input] = schedule.x * float(inp.max_rate / Hz)
        return SpikingRun(
            schedule,
            drain.predictions.copy(),
            float(schedule.duration / second),
            time.perf_counter() - t0,
            build_s,
            spec.path if spec is not None else None,
            weights,
            drain.loss.copy(),
            rates,
        )
    finally:
        if drain is not None:
            drain.close()
        if standalone:
            device.reinit()
            device.activate()
            set_device("runtime")
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        prefs.codegen.target = old_target
        prefs.codegen.runtime.cython.cache_dir = old_cache
