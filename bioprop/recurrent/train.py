"""The curriculum training loop for recurrent rules on sequence tasks.

One update per batch: the rule writes ``.grad`` (its windows' gradients summed), the
gradient norm of the core is clipped, Adam applies it (the module at its own learning rate),
and the batch's error (bits per character) feeds the :class:`Curriculum`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field

import torch

from bioprop.core import seeding
from bioprop.recording.writer import Record
from bioprop.recurrent.circuit import RecurrentCircuit
from bioprop.recurrent.recording import SequenceRecorder
from bioprop.recurrent.rules import RecurrentRule, full_bptt
from bioprop.recurrent.tasks import Curriculum, SequenceTask

__all__ = ["CurriculumRun", "train_curriculum"]


@dataclass
class CurriculumRun:
    """Result of :func:`train_curriculum`: ``max_solved`` (the metric), the final N, the
    per-update history of (N, error) and the wall time."""

    rule: str
    T: int
    task: str
    steps: int
    max_solved: int
    final_n: int
    history: list[tuple[int, float]] = field(default_factory=list)
    wall: float = 0.0
    diverged: bool = False


def train_curriculum(
    circuit: RecurrentCircuit,
    rule: RecurrentRule,
    task: SequenceTask,
    curriculum: Curriculum,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    module_lr: float | None = None,
    clip: float = 10.0,
    seed: int = 0,
    record: Record | None = None,
    max_boundaries: int = 32,
    attrs: dict | None = None,
) -> CurriculumRun:
    """Train ``circuit`` with ``rule`` on ``task`` for ``steps`` updates under ``curriculum``.

    Batches come from a generator seeded by ``(seed, "data")``, so every rule sees the same
    sequences for as long as their curricula agree on N.  ``record`` writes a
    :class:`SequenceRecorder` file every ``record.every`` updates (with the full-BPTT shadow
    reference).  A non-finite loss stops the run (``diverged=True``), keeping the recording.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    rule.attach(circuit)
    dtype = circuit.pathways["hidden->output"].weight.dtype
    core = circuit.core_parameters()
    groups = [{"params": core, "lr": lr}]
    if rule.module is not None:
        groups.append({"params": list(rule.module.parameters()), "lr": module_lr or lr})
    opt = torch.optim.Adam(groups)
    gen = seeding.generator(seed, "data")
    rec = None
    if record is not None:
        meta = {
            "rule": rule.name,
            "rule_hyperparameters": json.dumps(rule.hyperparameters()),
            "task": task.name,
            "loss": "binary cross-entropy (summed over bits and steps)",
            "seed": seed,
            "batch_size": batch_size,
            "optimizer": "Adam",
            "optimizer_hyperparameters": json.dumps(
                {"lr": lr, "module_lr": module_lr, "clip": clip}
            ),
            "circuit": circuit.describe(),
            "populations": json.dumps(circuit.order()),
            "input_population": "input",
            "output_population": "output",
            "hidden_populations": json.dumps(circuit.state_names()),
            "curriculum": json.dumps(
                {
                    "n_start": curriculum.n_start,
                    "threshold": curriculum.threshold,
                    "window": curriculum.window,
                }
            ),
            "steps": steps,
            **(attrs or {}),
        }
        rec = SequenceRecorder(record, circuit, max_boundaries=max_boundaries, attrs=meta)
    t0 = time.perf_counter()
    diverged = False
    try:
        for step in range(steps):
            batch = task.sample(curriculum.n, batch_size, gen).to(dtype)
            sig = rule.backward(circuit, batch)
            if not math.isfinite(sig.loss):
                diverged = True
                break
            if rec is not None and rec.due(step):
                ref = full_bptt(circuit, batch, rule.T)
                rec.write(step, sig, ref, curriculum.n, curriculum.max_solved)
            torch.nn.utils.clip_grad_norm_(core, clip)
            opt.step()
            curriculum.update(sig.error)
    finally:
        if rec is not None:
            rec.close()
    return CurriculumRun(
        rule=rule.name,
        T=rule.T,
        task=task.name,
        steps=step + 1,
        max_solved=curriculum.max_solved,
        final_n=curriculum.n,
        history=list(curriculum.history),
        wall=time.perf_counter() - t0,
        diverged=diverged,
    )
