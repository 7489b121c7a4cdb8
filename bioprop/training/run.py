"""What a training run leaves, for every circuit kind: :class:`Run`, :class:`Checkpoint`,
:class:`DivergenceError`, and :func:`evaluate` (test loss and error of a circuit)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bioprop.core import losses as _losses
from bioprop.core.circuit import Circuit

__all__ = ["Run", "Checkpoint", "DivergenceError", "evaluate"]


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
    """What :func:`bioprop.train` returns, whatever the circuit kind."""

    circuit: Circuit
    rule: Any
    data: Any
    loss: Any
    history: dict[str, list[float]] = field(default_factory=dict)
    steps: int = 0
    epochs: int = 0
    wall_time: float = 0.0
    record_path: Path | None = None
    #: the family loop's own result (e.g. a curriculum's history, a spiking schedule)
    details: Any = None

    @property
    def final(self) -> dict[str, float]:
        """The last value of every history entry."""
        return {k: v[-1] for k, v in self.history.items() if v}

    @property
    def final_loss(self) -> float:
        """Test normalized squared error (regression) or test loss (classification) at
        the end — the ``final_loss`` of ``bioprop compare``'s summary."""
        f = self.final
        return float(f.get("test_nse", f.get("test_loss", math.nan)))

    @property
    def test_error(self) -> float:
        """Test error rate at the end (NaN where the task has none)."""
        return float(self.final.get("test_error", math.nan))

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
