"""The loop of recurrent circuits: one update per batch of sequences, under a length curriculum.

``bioprop.train(circuit, rule, data, steps=...)`` with a :class:`RecurrentCircuit` and a
:class:`SequenceData` lands here.  Per step: a batch of sequences of the curriculum's current
length N is drawn from the generator ``seeding.generator(seed, "data")`` (the same stream
for every rule for as long as their curricula agree on N); the rule writes ``.grad`` (its
windows' gradients summed); the core's gradient norm is clipped; the optimizer (built by
:func:`bioprop.training.optim.make_optimizer`, the module in its group ``"module"``) steps;
and the batch's error in bits per character feeds the :class:`Curriculum`.

On recording steps the one writer (:class:`bioprop.recording.writer.Recorder`) stores every
pathway's ``weight_update`` (−ĝ) beside ``weight_update_bp`` (full BPTT, the rule's
:meth:`~bioprop.rules.Rule.reference`), and the extra groups of
:mod:`bioprop.recurrent.recording` (boundary gradients, curriculum).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm import tqdm

from bioprop.core import seeding
from bioprop.recording.provenance import provenance
from bioprop.recording.writer import Record, Recorder
from bioprop.recurrent.circuit import RecurrentCircuit
from bioprop.recurrent.recording import RECURRENT_VARIABLES, boundary_records, extra_variables
from bioprop.recurrent.tasks import SequenceData
from bioprop.rules.contract import Rule
from bioprop.training.optim import make_optimizer
from bioprop.training.run import DivergenceError, Run

__all__ = ["fit", "CurriculumResult", "LOSS_NAMES"]

#: what ``loss=`` may say: the family's one loss (None means it too)
LOSS_NAMES = (None, "sequence", "bce")


@dataclass
class CurriculumResult:
    """``Run.details`` of a recurrent run: ``max_solved`` (the largest N that met the
    curriculum's criterion: the paper's metric), the final N and the per-update history of
    (N, error in bits per character)."""

    task: str
    rule: str
    T: int | None
    max_solved: int
    final_n: int
    history: list[tuple[int, float]] = field(default_factory=list)
    diverged: bool = False


def fit(
    circuit: RecurrentCircuit,
    rule: Rule | str,
    data: SequenceData,
    *,
    steps: int | None = None,
    max_steps: int | None = None,
    batch_size: int = 32,
    optimizer: Any = ("adam", {"lr": 1e-3}),
    clip: float | None = 10.0,
    seed: int = 0,
    record: Record | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    loss: str | None = None,
    record_boundaries: int = 32,
    evaluate: tuple[str, ...] = ("valid", "test"),
    **unknown: Any,
) -> Run:
    """Train ``circuit`` with a recurrent ``rule`` on ``data`` for ``steps`` updates.

    Parameters
    ----------
    circuit
        A :class:`RecurrentCircuit` (modified in place).
    rule
        A recurrent rule (``bptt``, ``dni``, ``dni-aux``) or its name.
    data
        A :class:`SequenceData`: the task and its curriculum (a fresh copy is used).
    steps, max_steps
        Updates to run; ``max_steps`` caps them (quick runs).
    batch_size
        Sequences per batch.
    optimizer
        A spec for :func:`make_optimizer`; ``module_lr`` sets the module's learning rate.
    clip
        Gradient-norm clip of the core's update (None: no clipping).
    seed
        Seeds the batches (``"data"``) and the rule's module (``"feedback"``).
    record
        A :class:`Record` (default variables: :data:`RECURRENT_VARIABLES`), or None.
    loss
        None: the family's sequence loss (binary cross-entropy summed over bits and steps).
    record_boundaries
        How many window boundaries ``interfaces/hidden`` holds (0: no such group, for
        rules without window boundaries such as ``dp-bptt``).
    evaluate
        For a task with held-out text (:class:`~bioprop.recurrent.language.CharLMTask`):
        the splits scored after training (``history["valid_loss"]``, ``["test_loss"]``, in
        bits per character); select on ``("valid",)``, report ``test`` once.

    Returns
    -------
    Run
        ``history``: per update ``train_loss`` (L), ``error_bits`` and ``n``; ``test_loss``
        is the mean bits per character of the last curriculum window of updates (so
        ``run.final_loss`` is that) — for a task with held-out text, the BPC of the splits
        in ``evaluate`` instead; ``details`` is a :class:`CurriculumResult`.

    Raises
    ------
    DivergenceError
        When the loss, a weight or an update becomes NaN/Inf (recording kept); its
        ``details`` attribute holds the :class:`CurriculumResult` so far.
    """
    from bioprop.rules.recurrent import SEQUENCE_LOSS
    from bioprop.training.train import resolve_rule

    if unknown:
        raise TypeError(
            f"the recurrent loop has no option(s) {sorted(unknown)}; its options are steps, "
            "max_steps, batch_size, optimizer, clip, seed, record, device, progress, loss, "
            "record_boundaries, evaluate"
        )
    rule = resolve_rule(rule, circuit)
    _check(circuit, data, steps, max_steps, batch_size, loss)
    bad = [v for v in evaluate if v not in ("train", "valid", "test")]
    if bad or isinstance(evaluate, str):
        raise ValueError(
            f"evaluate= is a tuple of held-out splits from 'train', 'valid', 'test', got "
            f"{evaluate!r}; e.g. evaluate=('valid',) while selecting settings"
        )
    # an episode task (bioprop.plasticity.tasks) names its own loss; sequence tasks use BCE
    loss_name = getattr(data.task, "loss_name", SEQUENCE_LOSS)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device")
    rule.attach(circuit, seeding.generator(seed, "feedback"))
    circuit.to(device)
    opt = make_optimizer(optimizer, circuit, rule)
    core = circuit.core_parameters()
    dtype = circuit.pathways["hidden->output"].weight.dtype
    curriculum = data.curriculum.fresh()
    gen = seeding.generator(seed, "data")
    total = steps if max_steps is None else min(steps, max_steps)

    recorder, k = None, 0
    if record is not None:
        if record.variables is None:
            record = dataclasses.replace(record, variables=list(RECURRENT_VARIABLES))
        k = max(1, record.samples)
        attrs = provenance(
            circuit,
            rule,
            task=data.name,
            loss=loss_name,
            optimizer=opt,
            seed=seed,
            steps=steps,
            max_steps=max_steps,
            batch_size=batch_size,
            clip=clip,
            curriculum=curriculum.settings(),
        )
        extra = extra_variables(circuit.state_size, k, record_boundaries)
        if not record_boundaries:  # record_boundaries=0: no window boundaries to record
            del extra["interfaces/hidden"]
        extra.update(rule.record_variables(circuit, k))
        recorder = Recorder(
            record, circuit, attrs=attrs, extra=extra, reference_roles=("feedforward", "lateral")
        )

    history: dict[str, list[float]] = {"train_loss": [], "error_bits": [], "n": []}
    bar = tqdm(total=total, disable=not progress, desc=rule.name, unit="step", leave=False)
    t0, step = time.perf_counter(), 0

    def result(diverged: bool = False) -> CurriculumResult:
        return CurriculumResult(
            data.name,
            rule.name,
            getattr(rule, "T", None),
            curriculum.max_solved,
            curriculum.n,
            list(curriculum.history),
            diverged,
        )

    stream = getattr(data.task, "stateful", False)
    last_batch, carry = None, None
    try:
        for step in range(total):
            if stream:  # the next piece of the same streams, from where they stopped
                batch = data.task.sample(curriculum.n, batch_size, gen, after=last_batch)
                batch = batch.to(dtype, device)
                if batch.follows:
                    batch.state = carry
            else:
                batch = data.task.sample(curriculum.n, batch_size, gen).to(dtype, device)
            recording = recorder is not None and record.due(step)
            ref = (
                rule.reference(circuit, batch, None, None) if recording and record.shadow else None
            )
            opt.zero_grad(set_to_none=True)
            rule.recording = recording
            signals = rule.step(circuit, batch, None, None)
            lv, err = float(signals.loss), float(signals.extra["error"])
            if recording:
                if record_boundaries:
                    signals.records["interfaces/hidden"] = boundary_records(
                        signals, ref, k, record_boundaries, circuit.state_size
                    )
                signals.records["curriculum"] = {
                    "n": curriculum.n,
                    "error_bits": err,
                    "max_solved": curriculum.max_solved,
                }
                recorder.write(step, 0, signals, ref)
            if not math.isfinite(lv):
                _diverged(circuit, rule, step, recorder, result(True))
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(core, clip)
            opt.step()
            history["train_loss"].append(lv)
            history["error_bits"].append(err)
            history["n"].append(float(curriculum.n))
            curriculum.update(err)
            if stream:
                last_batch = batch
                carry = tuple(t.detach() for t in signals.extra["final_state"])
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(N=curriculum.n, refresh=False)
        step = total
    finally:
        bar.close()
        if recorder is not None:
            recorder.close()
    last = history["error_bits"][-curriculum.window :]
    history["test_loss"] = [sum(last) / len(last) if last else math.nan]
    if hasattr(data.task, "evaluate"):  # a task with held-out text: its BPC, once, at the end
        for split in evaluate:
            history[f"{split}_loss"] = [data.task.evaluate(circuit, split)]
    path = record.path if record is not None else None
    wall = time.perf_counter() - t0
    return Run(circuit, rule, data, loss_name, history, step, 0, wall, path, details=result())


def _check(circuit, data, steps, max_steps, batch_size, loss) -> None:
    if not isinstance(data, SequenceData):
        raise TypeError(
            "a recurrent circuit trains on a bioprop.recurrent.SequenceData (a sequence task "
            f"and its curriculum), got {type(data).__name__}; e.g. "
            "SequenceData(CopyTask(), Curriculum(n_start=1))"
        )
    for what, v in (("steps", steps), ("max_steps", max_steps), ("batch_size", batch_size)):
        if v is None and what != "max_steps":
            raise ValueError(f"the recurrent loop needs {what}= (a positive integer)")
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ValueError(f"{what} must be a positive integer, got {v!r}")
    if loss not in LOSS_NAMES:
        raise ValueError(
            f"recurrent rules train on the family's sequence loss (binary cross-entropy "
            f"summed over bits and steps); loss= must be one of {list(LOSS_NAMES)}, got {loss!r}"
        )
    n_in, n_out = circuit.populations["input"].size, circuit.populations["output"].size
    if (data.n_inputs, data.n_outputs) != (n_in, n_out):
        raise ValueError(
            f"task {data.name!r} has {data.n_inputs} input and {data.n_outputs} output "
            f"channels but the circuit has {n_in} and {n_out}; build "
            f"RecurrentCircuit({data.n_inputs}, n_hidden, {data.n_outputs})"
        )


def _diverged(circuit, rule, step, recorder, details: CurriculumResult) -> None:
    from bioprop.training.loop import raise_diverged as diverged

    try:
        diverged(circuit, rule, step, recorder, "the loss")
    except DivergenceError as exc:
        exc.details = details
        raise
