"""One training loop for every rule.

``train(circuit, rule, data, ...)`` runs epochs over ``data`` in a seeded
order (the same order for every rule with the same seed), lets the rule
write ``.grad``, applies a ``torch.optim`` optimizer, records on schedule
(with the shadow backprop reference), guards against divergence, and can
checkpoint and resume.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from tqdm import tqdm

from bioprop.core import losses as _losses
from bioprop.core import seeding
from bioprop.core.circuit import Circuit
from bioprop.data.base import Dataset
from bioprop.recording.provenance import provenance
from bioprop.recording.writer import Record, Recorder
from bioprop.rules.contract import DIRECT, Rule, apply_sgd_directly
from bioprop.training import checkpoints as _ckpt
from bioprop.training.checks import check_data, check_max_steps, effective_batch_size
from bioprop.training.optim import make_optimizer
from bioprop.training.run import Checkpoint, DivergenceError, Run, evaluate

__all__ = ["fit"]


def _looks_one_hot(data: Dataset) -> bool:
    return data.kind == "classification" and data.y_train.dim() == 2


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of one epoch: a permutation drawn from (seed, epoch) alone,
    so every rule with the same seed sees the same order and a resumed run too."""
    return torch.randperm(n, generator=seeding.generator(seed, "data order", epoch))


def _find_nonfinite(circuit: Circuit) -> tuple[str | None, str]:
    for pw in circuit.pathways.values():
        for what, t in (("weight", pw.effective_weight()), ("bias", pw.bias)):
            if t is not None and not torch.isfinite(t).all():
                return pw.name, what
        for what, p in (("weight update", pw.weight), ("bias update", pw.bias)):
            if p is not None and p.grad is not None and not torch.isfinite(p.grad).all():
                return pw.name, what
    return None, "loss"


def fit(
    circuit: Circuit,
    rule: Rule | str,
    data: Dataset,
    *,
    loss: str | _losses.Loss = "mse",
    optimizer: Any = ("sgd", {"lr": 1e-3}),
    epochs: int = 1,
    batch_size: int = 32,
    seed: int = 0,
    record: Record | None = None,
    checkpoint: Checkpoint | None = None,
    resume: bool | str = False,
    progress: bool = True,
    device: str | torch.device = "cpu",
    max_steps: int | None = None,
    evaluate_every_epoch: bool = True,
    on_step: Callable[[int, Any], None] | None = None,
    direct_updates: bool = True,
) -> Run:
    """Train ``circuit`` with ``rule`` on ``data``.

    Parameters
    ----------
    circuit
        The circuit (modified in place).
    rule
        A rule instance or registry name.  It is attached (installing its
        feedback pathways, drawn from a generator seeded by ``seed``) if it
        is not already.
    data
        A :class:`bioprop.data.Dataset`.
    loss
        ``"mse"`` (½‖r − y‖²) or ``"cross-entropy"``, or a :class:`Loss`.
    optimizer
        ``("sgd", {"lr": 1e-3, "weight_decay": 1e-6})``, ``"adam"``, or a callable
        ``circuit -> torch.optim.Optimizer``.
    epochs, batch_size
        Passes over the training set; samples per step (a ``batch_size`` larger than the
        training set is clamped to it: one batch of every sample per epoch; the recording's
        provenance holds the size used).
    seed
        Seeds the data order (the same for every rule) and the rule's feedback
        pathways.
    record
        A :class:`Record` schedule, or None for no recording.
    checkpoint, resume
        Save state every ``checkpoint.every`` steps (atomically); with ``resume=True``
        start from ``checkpoint.path`` if it exists (the recording is continued).  The
        checkpoint is read with ``weights_only=True`` and must come from the same run:
        rule, kind and hyper-parameters, circuit, optimizer and its groups' options, loss,
        batch size, seed and task; a difference is refused, listing them
        (:class:`bioprop.training.checkpoints.CheckpointMismatchError`), except learning
        rates with ``resume="allow-lr-change"``, which applies the new ones.  ``epochs`` and
        ``max_steps`` may change.  Every resume is noted in the recording's ``resumed``
        attribute.
    max_steps
        Stop after this many steps in total (for quick runs).
    on_step
        Called as ``on_step(step, signals)`` after every update.
    direct_updates
        With plain SGD and a rule that allows it (``Rule.direct_updates``: fa, dfa,
        sign-symmetry, shallow, node perturbation), the rule applies the update itself on
        steps that are not recorded — one in-place GEMM per weight instead of a gradient
        buffer and a second pass by the optimizer (the same arithmetic; ``.grad`` is then
        None on those steps).  False: ``.grad`` is written on every step.

    Raises
    ------
    DivergenceError
        When the loss, a weight or an update becomes NaN/Inf; the message names
        the step, the pathway and the rule, and the recording so far is kept.
    """
    from bioprop.rules import get as get_rule

    if isinstance(rule, str):
        rule = get_rule(rule)
    loss = _losses.get(loss)
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a bioprop.data.Dataset, got {type(data).__name__}")
    if not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    check_max_steps(max_steps)
    _ckpt.check_resume_mode(resume)
    if checkpoint is not None and not isinstance(checkpoint, Checkpoint):
        raise TypeError(f"checkpoint must be a bioprop.Checkpoint, got {checkpoint!r}")
    n_in = circuit.populations[circuit.input].size
    n_out = circuit.populations[circuit.output].size
    if data.n_inputs != n_in:
        raise ValueError(
            f"data {data.name!r} has {data.n_inputs} input features but the circuit's input "
            f"population {circuit.input!r} has {n_in} units"
        )
    if data.n_outputs != n_out:
        raise ValueError(
            f"data {data.name!r} has {data.n_outputs} outputs but the circuit's output "
            f"population {circuit.output!r} has {n_out} units"
        )
    check_data(data)
    if data.kind == "classification" and loss.name == "mse" and not _looks_one_hot(data):
        data = data.with_one_hot(True)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device")
    rule.attach(circuit, seeding.generator(seed, "feedback"))
    circuit.to(device)
    data = data.to(device)
    opt = make_optimizer(optimizer, circuit, rule)

    n = data.x_train.shape[0]
    if n == 0:
        raise ValueError(f"data {data.name!r} has no training samples")
    batch_size = effective_batch_size(batch_size, n)
    per_epoch = math.ceil(n / batch_size)
    start_epoch, start_batch, step = 0, 0, 0
    history: dict[str, list[float]] = {"train_loss": [], "epoch_step": []}
    this_run = _ckpt.describe_run(
        circuit, rule, opt, loss=loss.name, batch_size=batch_size, seed=seed, task=data.name
    )
    resumed, lr_changes = False, []
    if checkpoint is not None and resume and checkpoint.path.exists():
        state = _ckpt.read(checkpoint.path, map_location=device)
        lr_changes = _ckpt.check_same_run(checkpoint.path, state["run"], this_run, resume)
        circuit.load_state_dict(state["circuit"])
        opt.load_state_dict(state["optimizer"])
        if lr_changes:
            _ckpt.apply_lrs(opt, this_run)
        rule.load_state_dict(state["rule"])
        step, start_epoch, start_batch = state["step"], state["epoch"], state["batch"]
        history = state["history"]
        resumed = True

    recorder = None
    if record is not None:
        if resumed:
            recorder = Recorder(
                record,
                circuit,
                mode="a",
                truncate_after=step - 1,
                extra=rule.record_variables(circuit, record.samples),
            )
            _ckpt.note_resume(recorder, step, checkpoint.path, lr_changes)
        else:
            attrs = provenance(
                circuit,
                rule,
                task=data.name,
                loss=loss.name,
                optimizer=opt,
                seed=seed,
                epochs=epochs,
                batch_size=batch_size,
            )
            recorder = Recorder(
                record, circuit, attrs=attrs, extra=rule.record_variables(circuit, record.samples)
            )

    def save_checkpoint(epoch: int, batch: int) -> None:
        if checkpoint is None:
            return
        state = {
            "circuit": circuit.state_dict(),
            "optimizer": opt.state_dict(),
            "rule": rule.state_dict(),
            "step": step,
            "epoch": epoch,
            "batch": batch,
            "history": history,
        }
        _ckpt.save(checkpoint.path, state, this_run)

    total_steps = epochs * per_epoch
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    bar = tqdm(
        total=total_steps,
        initial=min(step, total_steps),
        disable=not progress,
        desc=f"{rule.name}",
        unit="step",
        leave=False,
    )
    t0 = time.perf_counter()
    x_all, y_all = data.x_train, data.y_train
    epoch = start_epoch
    running, count = 0.0, 0
    # plain SGD on a rule that allows it: the rule applies the update in one pass over W
    # (write_pathway_grads) on steps that are not recorded; recording steps keep .grad
    plastic = list(circuit.plastic_parameters())
    direct = rule.direct_updates and direct_updates and apply_sgd_directly(plastic, opt)
    # ... and when every parameter the optimizer holds is armed, an unrecorded step leaves
    # the optimizer nothing to do (every .grad None): skip its zero_grad and step
    optimizer_idle = direct and all(
        hasattr(p, DIRECT) for g in opt.param_groups for p in g["params"]
    )
    try:
        for epoch in range(start_epoch, epochs):
            order = epoch_order(seed, epoch, n).to(device)
            rule.on_epoch(epoch)
            first = start_batch if epoch == start_epoch else 0
            running, count = 0.0, 0
            for b in range(first, per_epoch):
                if max_steps is not None and step >= max_steps:
                    break
                idx = order[b * batch_size : (b + 1) * batch_size]
                # index_select: the same rows as x_all[idx], at well under half the per-call
                # cost of advanced indexing (which matters at small batches)
                x, y = x_all.index_select(0, idx), y_all.index_select(0, idx)
                recording = recorder is not None and record.due(step)
                ref = rule.reference(circuit, x, y, loss) if recording and record.shadow else None
                idle = optimizer_idle and not recording
                if not idle:
                    opt.zero_grad(set_to_none=True)
                rule.recording = recording
                if direct and recording:  # a recorded step writes .grad (weight_update)
                    apply_sgd_directly(plastic, None)
                signals = rule.step(circuit, x, y, loss)
                if direct and recording:
                    apply_sgd_directly(plastic, opt)
                lv = float(signals.loss)
                if recording:
                    ev = None
                    if record.evaluate:
                        ev = evaluate(
                            circuit,
                            data.x_test,
                            data.y_test,
                            loss,
                            classification=data.kind == "classification",
                        )
                    recorder.write(step, epoch, signals, ref, ev)
                if not math.isfinite(lv):
                    raise_diverged(circuit, rule, step, recorder, "the loss")
                if not idle:
                    opt.step()
                rule.after_step(circuit)
                if on_step is not None:
                    on_step(step, signals)
                running += lv
                count += 1
                step += 1
                bar.update(1)
                if checkpoint is not None and step % checkpoint.every == 0:
                    save_checkpoint(epoch, b + 1)
            else:
                history["train_loss"].append(running / max(count, 1))
                history["epoch_step"].append(step)
                if evaluate_every_epoch:
                    _log_eval(history, circuit, data, loss, rule, step, recorder)
                start_batch = 0
                if checkpoint is not None:
                    save_checkpoint(epoch + 1, 0)
                continue
            break  # max_steps reached inside the epoch
        else:
            epoch = epochs
        if not history["train_loss"] or history["epoch_step"][-1] != step:
            history["train_loss"].append(running / max(count, 1) if step else float("nan"))
            history["epoch_step"].append(step)
            _log_eval(history, circuit, data, loss, rule, step, recorder)
    finally:
        bar.close()
        if direct:
            apply_sgd_directly(plastic, None)
        if recorder is not None:
            recorder.close()
    path = record.path if record is not None else None
    return Run(circuit, rule, data, loss, history, step, epoch, time.perf_counter() - t0, path)


def _log_eval(history, circuit, data, loss, rule, step, recorder) -> None:
    ev = evaluate(
        circuit, data.x_test, data.y_test, loss, classification=data.kind == "classification"
    )
    for k, v in ev.items():
        history.setdefault(f"test_{k}", []).append(v)
    if "loss" in ev and not math.isfinite(ev["loss"]):
        raise_diverged(circuit, rule, step, recorder, "the test loss")


def raise_diverged(circuit, rule, step, recorder, what) -> None:
    name, part = _find_nonfinite(circuit)
    path = recorder.spec.path if recorder is not None else None
    where = f"in pathway {name!r} ({part})" if name else f"in {what}"
    kept = f"; the recording so far is kept in {path}" if path else ""
    raise DivergenceError(
        f"training diverged at step {step}: rule {rule.name!r} produced NaN/Inf {where}{kept}. "
        "Lower the learning rate or the initial weight scale.",
        step,
        name,
        rule.name,
        path,
    )
