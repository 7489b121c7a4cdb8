"""One training loop for every rule.

``train(circuit, rule, data, ...)`` runs epochs over ``data`` in a seeded
order (the same order for every rule with the same seed), lets the rule
write ``.grad``, applies a ``torch.optim`` optimizer, records on schedule
(with the shadow backprop reference), guards against divergence, and can
checkpoint and resume.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from bioprop.core import losses as _losses
from bioprop.core.circuit import Circuit
from bioprop.data.base import Dataset
from bioprop.recording.writer import Record, Recorder
from bioprop.rules.contract import Rule

__all__ = ["train", "Run", "Checkpoint", "DivergenceError", "evaluate", "make_optimizer"]


class DivergenceError(RuntimeError):
    """Training produced NaN or Inf.  ``step``, ``pathway``, ``rule`` and ``record_path``
    say where; the recording up to that point is kept."""

    def __init__(self, message: str, step: int, pathway: str | None, rule: str, record_path=None):
        super().__init__(message)
        self.step = step
        self.pathway = pathway
        self.rule = rule
        self.record_path = record_path


@dataclass
class Checkpoint:
    """Save training state to ``path`` every ``every`` steps (and at the end)."""

    path: str | os.PathLike
    every: int = 1000

    def __post_init__(self):
        if not isinstance(self.every, int) or self.every < 1:
            raise ValueError(
                f"Checkpoint(every=...) must be a positive integer, got {self.every!r}"
            )
        self.path = Path(self.path)


@dataclass
class Run:
    """What :func:`train` returns."""

    circuit: Circuit
    rule: Rule
    data: Dataset
    loss: _losses.Loss
    history: dict[str, list[float]] = field(default_factory=dict)
    steps: int = 0
    epochs: int = 0
    wall_time: float = 0.0
    record_path: Path | None = None

    @property
    def final(self) -> dict[str, float]:
        return {k: v[-1] for k, v in self.history.items() if v}

    def summary(self) -> str:
        f = self.final
        parts = [f"rule={self.rule.name}", f"steps={self.steps}", f"epochs={self.epochs}"]
        for k in ("train_loss", "test_loss", "test_error", "test_nse"):
            if k in f and not math.isnan(f[k]):
                parts.append(f"{k}={f[k]:.4g}")
        parts.append(f"wall={self.wall_time:.1f}s")
        if self.record_path:
            parts.append(f"record={self.record_path}")
        return "  ".join(parts)


_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
}


def make_optimizer(spec, circuit: Circuit) -> torch.optim.Optimizer:
    """An optimizer over the circuit's plastic parameters from a spec:
    ``("sgd", {"lr": 1e-3})``, a name (``"adam"``), a ``torch.optim.Optimizer``
    instance, or a callable ``circuit -> Optimizer`` (for per-layer learning rates)."""
    if isinstance(spec, torch.optim.Optimizer):
        return spec
    if callable(spec) and not isinstance(spec, str):
        return spec(circuit)
    if isinstance(spec, str):
        spec = (spec, {})
    name, kwargs = spec
    try:
        cls = _OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {list(_OPTIMIZERS)}") from None
    params = circuit.plastic_parameters()
    if not params:
        raise ValueError("the circuit has no plastic parameters to optimise")
    if name == "sgd" and "lr" not in kwargs:
        raise ValueError("optimizer ('sgd', {...}) needs a learning rate: ('sgd', {'lr': 1e-3})")
    return cls(params, **kwargs)


@torch.no_grad()
def evaluate(
    circuit: Circuit,
    x: torch.Tensor,
    y: torch.Tensor,
    loss: _losses.Loss | str,
    chunk: int = 4096,
    classification: bool | None = None,
) -> dict[str, float]:
    """Mean loss, and the error rate (classification) or the normalized squared error
    Σ‖ŷ − y‖² / Σ‖y − ȳ‖² (regression) on ``(x, y)``.

    ``classification`` defaults to: integer labels, or a cross-entropy loss.  Pass it
    for one-hot targets under a squared-error loss."""
    loss = _losses.get(loss)
    total, errors, sq, n = 0.0, 0, 0.0, x.shape[0]
    if n == 0:
        return {}
    if classification is None:
        classification = y.dim() == 1 or loss.name == "cross-entropy"
    for i in range(0, n, chunk):
        out = circuit(x[i : i + chunk])
        yy = y[i : i + chunk]
        total += float(loss.per_sample(out, yy).sum())
        if y.dim() == 1:
            errors += int((out.argmax(1) != yy).sum())
        elif classification:
            errors += int((out.argmax(1) != yy.argmax(1)).sum())
        else:
            sq += float(((out - yy) ** 2).sum())
    res = {"loss": total / n}
    if y.dim() == 1 or classification:
        res["error"] = errors / n
    else:
        var = float(((y - y.mean(0)) ** 2).sum())
        res["nse"] = sq / var if var > 0 else float("nan")
    return res


def _looks_one_hot(data: Dataset) -> bool:
    return data.kind == "classification" and data.y_train.dim() == 2


def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of one epoch: a permutation drawn from (seed, epoch) alone,
    so every rule with the same seed sees the same order and a resumed run too."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g)


def _provenance(circuit, rule, data, loss, optimizer, seed, epochs, batch_size) -> dict[str, Any]:
    import h5netcdf
    import numpy
    import xarray

    import bioprop

    return {
        "rule": rule.name,
        "rule_hyperparameters": rule.hyperparameters(),
        "task": data.name,
        "loss": loss.name,
        "optimizer": type(optimizer).__name__,
        "optimizer_hyperparameters": {
            k: v for k, v in optimizer.defaults.items() if isinstance(v, (int, float, bool, str))
        },
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "circuit": circuit.describe(),
        "populations": list(circuit.order()),
        "input_population": circuit.input,
        "output_population": circuit.output,
        "hidden_populations": circuit.hidden(),
        "bioprop_version": bioprop.__version__,
        "torch_version": torch.__version__,
        "numpy_version": numpy.__version__,
        "xarray_version": xarray.__version__,
        "h5netcdf_version": h5netcdf.__version__,
        "python_version": platform.python_version(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _find_nonfinite(circuit: Circuit) -> tuple[str | None, str]:
    for pw in circuit.pathways.values():
        for what, t in (("weight", pw.effective_weight()), ("bias", pw.bias)):
            if t is not None and not torch.isfinite(t).all():
                return pw.name, what
        for what, p in (("weight update", pw.weight), ("bias update", pw.bias)):
            if p is not None and p.grad is not None and not torch.isfinite(p.grad).all():
                return pw.name, what
    return None, "loss"


def train(
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
    resume: bool = False,
    progress: bool = True,
    device: str | torch.device = "cpu",
    max_steps: int | None = None,
    evaluate_every_epoch: bool = True,
    on_step: Callable[[int, Any], None] | None = None,
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
        Passes over the training set; samples per step.
    seed
        Seeds the data order (the same for every rule) and the rule's feedback
        pathways.
    record
        A :class:`Record` schedule, or None for no recording.
    checkpoint, resume
        Save state every ``checkpoint.every`` steps; with ``resume=True`` start
        from ``checkpoint.path`` if it exists (the recording is continued).
    max_steps
        Stop after this many steps in total (for quick runs).

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
    if data.kind == "classification" and loss.name == "mse" and not _looks_one_hot(data):
        data = data.with_one_hot(True)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was asked for but torch sees no CUDA device")
    rule.attach(circuit, torch.Generator().manual_seed(int(seed) * 7919 + 1))
    circuit.to(device)
    data = data.to(device)
    opt = make_optimizer(optimizer, circuit)

    n = data.x_train.shape[0]
    if n == 0:
        raise ValueError(f"data {data.name!r} has no training samples")
    per_epoch = math.ceil(n / batch_size)
    start_epoch, start_batch, step = 0, 0, 0
    history: dict[str, list[float]] = {"train_loss": [], "epoch_step": []}
    if checkpoint is not None and resume and Path(checkpoint.path).exists():
        state = torch.load(checkpoint.path, map_location=device, weights_only=False)
        circuit.load_state_dict(state["circuit"])
        opt.load_state_dict(state["optimizer"])
        rule.load_state_dict(state["rule"])
        step, start_epoch, start_batch = state["step"], state["epoch"], state["batch"]
        history = state["history"]
        resumed = True
    else:
        resumed = False

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
        else:
            attrs = _provenance(circuit, rule, data, loss, opt, seed, epochs, batch_size)
            recorder = Recorder(
                record, circuit, attrs=attrs, extra=rule.record_variables(circuit, record.samples)
            )

    def save_checkpoint(epoch: int, batch: int) -> None:
        if checkpoint is None:
            return
        tmp = Path(str(checkpoint.path) + ".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "circuit": circuit.state_dict(),
                "optimizer": opt.state_dict(),
                "rule": rule.state_dict(),
                "step": step,
                "epoch": epoch,
                "batch": batch,
                "history": history,
            },
            tmp,
        )
        os.replace(tmp, checkpoint.path)

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
    try:
        for epoch in range(start_epoch, epochs):
            order = _epoch_order(seed, epoch, n).to(device)
            first = start_batch if epoch == start_epoch else 0
            running, count = 0.0, 0
            for b in range(first, per_epoch):
                if max_steps is not None and step >= max_steps:
                    break
                idx = order[b * batch_size : (b + 1) * batch_size]
                x, y = x_all[idx], y_all[idx]
                recording = recorder is not None and record.due(step)
                ref = rule.reference(circuit, x, y, loss) if recording and record.shadow else None
                opt.zero_grad(set_to_none=True)
                rule.recording = recording
                signals = rule.step(circuit, x, y, loss)
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
                    _diverged(circuit, rule, step, recorder, "the loss")
                opt.step()
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
        if recorder is not None:
            recorder.close()
    return Run(
        circuit,
        rule,
        data,
        loss,
        history,
        step,
        epoch,
        time.perf_counter() - t0,
        record.path if record is not None else None,
    )


def _log_eval(history, circuit, data, loss, rule, step, recorder) -> None:
    ev = evaluate(
        circuit, data.x_test, data.y_test, loss, classification=data.kind == "classification"
    )
    for k, v in ev.items():
        history.setdefault(f"test_{k}", []).append(v)
    if "loss" in ev and not math.isfinite(ev["loss"]):
        _diverged(circuit, rule, step, recorder, "the test loss")


def _diverged(circuit, rule, step, recorder, what) -> None:
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
