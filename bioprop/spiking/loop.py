"""The spiking loop: ``bioprop.train`` for circuits of spiking populations.

A spiking rule learns online while brian2 simulates, so the loop does not step a batch
optimizer: it lays out a presentation *schedule* — the test subset (learning off), then
``test_every`` training samples (learning on after ``settle``), the test subset again, …
— and simulates it in one brian2 ``run()`` (:func:`bioprop.spiking.runner.run`), draining
the monitors into the one recording format as it goes.  The training samples are the
first ``n_train`` of the seeded epoch order the batch loop uses
(:func:`bioprop.training.loop.epoch_order`), so a rate twin trained by
``bioprop.train(..., batch_size=1, max_steps=n_train)`` with the same seed sees the same
samples in the same order.

The returned :class:`bioprop.Run` has, per test block, ``history["test_error"]`` (1 −
accuracy of the prediction "output neuron with most spikes after settle"),
``history["test_loss"]`` (mean ½‖y − r_out/ν_y‖², the rule's squared rate error) and
``history["train_loss"]`` (mean over the learning presentations before the block), so
``run.test_error`` and ``run.final_loss`` mean what they mean for every family;
``run.details`` is the :class:`~bioprop.spiking.runner.SpikingRun`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from bioprop.core import losses as _losses
from bioprop.core import seeding
from bioprop.core.circuit import Circuit
from bioprop.data.base import Dataset
from bioprop.recording.provenance import provenance
from bioprop.recording.writer import Record
from bioprop.rules.contract import Rule
from bioprop.spiking.encoding import Schedule
from bioprop.spiking.runner import TARGETS, run
from bioprop.training.loop import epoch_order
from bioprop.training.run import Run

__all__ = ["fit"]


def fit(
    circuit: Circuit,
    rule: Rule | str,
    data: Dataset,
    *,
    seed: int = 0,
    record: Record | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    max_steps: int | None = None,
    loss: str | _losses.Loss = "mse",
    optimizer: Any = None,
    target: str = "cython",
    dt: Any = "0.5 ms",
    present: Any = "50 ms",
    settle: Any = "20 ms",
    n_train: int | None = None,
    n_test: int | None = None,
    test_every: int | None = None,
    epochs: int = 1,
    batch_size: int = 1,
    cache_dir: str | None = None,
    standalone_dir: str | None = None,
) -> Run:
    """Train a spiking ``circuit`` with a spiking ``rule`` online on ``data``.

    Parameters
    ----------
    circuit
        A circuit of spiking populations (modified in place: the learned weights are
        written back).
    rule
        A spiking rule (e.g. ``"spiking-fa"``); attached here (feedback drawn from
        ``seeding.generator(seed, "feedback")``) unless it already is.
    data
        A classification :class:`bioprop.data.Dataset` with inputs in [0, 1] (they scale
        the Poisson rates), as many features as the input population has neurons and as
        many classes as the output population.
    seed
        Seeds the sample order (the batch loop's epoch-0 order), the feedback weights and
        brian2's random numbers (``seeding.derive(seed, "spiking noise")``).
    record
        A :class:`bioprop.Record` (or :class:`bioprop.spiking.SpikeRecord` for spikes,
        states, rate bins): ``every`` counts presentations; None records nothing.
    device
        brian2 simulates on the CPU whatever ``device`` says (accepted so that every loop
        takes the same options).
    progress
        A progress bar over simulated time (runtime targets).
    max_steps
        At most this many learning presentations (caps ``n_train``).
    loss
        ``"mse"``: the rule's squared rate error ½‖y − r_out/ν_y‖² (the only one).
    optimizer
        Must be None: a spiking rule applies its own updates inside brian2 (η is the
        rule's learning rate).
    target
        brian2 code generation target: one of ``"numpy"``, ``"cython"``, ``"cpp_standalone"``.
    dt, present, settle
        Simulation step, presentation per sample, and the start of each presentation
        without learning (times: ``0.5*ms`` or ``"0.5 ms"``).
    n_train, n_test
        Training samples (default all, one pass) and test samples (the first ``n_test``
        of the test set; default all).
    test_every
        Present the test subset after every this many training samples (default: only
        before and after training).
    epochs, batch_size
        Must be 1: a spiking circuit learns online, one pass, one sample at a time.
    cache_dir, standalone_dir
        Cython cache / ``cpp_standalone`` project directory.
    """
    from bioprop.rules import get as get_rule

    if isinstance(rule, str):
        rule = get_rule(rule, kind="spiking")
    rule.check(circuit)
    if optimizer is not None:
        raise ValueError(
            f"rule {rule.name!r} applies its own updates inside brian2 (its learning rate is "
            "the rule's eta); pass optimizer=None"
        )
    if epochs != 1 or batch_size != 1:
        raise ValueError(
            "a spiking circuit learns online in one pass: epochs and batch_size must be 1 "
            f"(got {epochs}, {batch_size}); use n_train and test_every for the budget"
        )
    if _losses.get(loss).name != "mse":
        raise ValueError(f"rule {rule.name!r} learns the squared rate error: loss must be 'mse'")
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    torch.device(device)  # a valid device name, though brian2 runs on the CPU
    x_tr, l_tr, x_te, l_te = _split(circuit, data, seed, n_train, n_test, max_steps)
    test_every = test_every or max(len(l_tr), 1)
    if not isinstance(test_every, int) or test_every < 1:
        raise ValueError(f"test_every must be a positive integer, got {test_every!r}")
    n_classes = circuit.populations[circuit.output].size
    schedule = Schedule.interleaved(
        x_tr, l_tr, x_te, l_te, n_classes, test_every, _time(present), _time(settle)
    )
    rule.attach(circuit, seeding.generator(seed, "feedback"))
    attrs = None
    if record is not None:
        attrs = provenance(
            circuit,
            rule,
            task=data.name,
            loss="mse",
            seed=seed,
            n_train=len(l_tr),
            n_test=len(l_te),
            test_every=test_every,
        )
    bar = tqdm(total=100, disable=not progress, desc=rule.name, unit="%", leave=False)

    def report(elapsed, completed, start, duration) -> None:
        bar.update(round(100 * completed) - bar.n)

    t0 = time.perf_counter()
    try:
        res = run(
            circuit,
            rule,
            schedule,
            target=target,
            dt=_time(dt),
            seed=seeding.derive(seed, "spiking noise") % 2**32,
            record=record,
            attrs=attrs,
            cache_dir=cache_dir,
            standalone_dir=standalone_dir,
            report=report if progress else None,
        )
    finally:
        bar.close()
    return Run(
        circuit,
        rule,
        data,
        _losses.get("mse"),
        _history(res),
        int(schedule.learn.sum()),
        1,
        time.perf_counter() - t0,
        record.path if record is not None else None,
        details=res,
    )


def _time(value: Any):
    from bioprop.spiking.units import check_quantity

    return check_quantity(value, "time", "bioprop.train (spiking)", "a time option")


def _split(circuit, data, seed, n_train, n_test, max_steps):
    """The training samples in the seeded order and the test subset, as numpy arrays."""
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a bioprop.data.Dataset, got {type(data).__name__}")
    if data.kind != "classification":
        raise ValueError(f"a spiking circuit learns classification; data {data.name!r} is not")
    n_in = circuit.populations[circuit.input].size
    n_out = circuit.populations[circuit.output].size
    if data.n_inputs != n_in or data.n_outputs != n_out:
        raise ValueError(
            f"data {data.name!r} has {data.n_inputs} inputs and {data.n_outputs} classes but "
            f"the circuit's input {circuit.input!r} has {n_in} neurons and its output "
            f"{circuit.output!r} {n_out}"
        )
    n = data.x_train.shape[0]
    for name, v in (("n_train", n_train), ("n_test", n_test), ("max_steps", max_steps)):
        if v is not None and (not isinstance(v, int) or v < 0):
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    k = min(n, n_train if n_train is not None else n, max_steps if max_steps is not None else n)
    order = epoch_order(seed, 0, n)[:k]
    y_tr = data.y_train if data.y_train.dim() == 1 else data.y_train.argmax(1)
    y_te = data.y_test if data.y_test.dim() == 1 else data.y_test.argmax(1)
    m = data.x_test.shape[0] if n_test is None else min(n_test, data.x_test.shape[0])
    out = (data.x_train[order], y_tr[order], data.x_test[:m], y_te[:m])
    return tuple(np.asarray(t.detach().cpu().double() if t.is_floating_point() else t) for t in out)


def _history(res) -> dict[str, list[float]]:
    """Per test block: test_error, test_loss, train_step and the mean train loss since the
    previous block."""
    h: dict[str, list[float]] = {"train_step": [], "test_error": [], "test_loss": []}
    h["train_loss"] = []
    learn, previous = res.schedule.learn, 0
    for (trained, acc), tl in zip(res.test_blocks(), res.test_losses(), strict=True):
        h["train_step"].append(trained)
        h["test_error"].append(1.0 - acc)
        h["test_loss"].append(tl)
        seen = np.flatnonzero(learn)[previous:trained]
        h["train_loss"].append(float(res.loss[seen].mean()) if seen.size else math.nan)
        previous = trained
    return h
