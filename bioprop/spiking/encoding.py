"""Rate-coded inputs and the presentation schedule of a run.

A run presents samples one after another, each for ``present`` (simulated time).  The
input values x ∈ [0, 1] of sample n become Poisson rates of the input neurons::

    ν_i(t) = ν_max · x_{n(t), i},      n(t) = ⌊t / present⌋

held in a brian2 ``TimedArray`` (one row per presentation), so a single ``run()`` covers
every sample — no Python loop over samples.  The input neurons spike with probability
ν_i dt per step (a Poisson process).  The target rates of the output population and the
learning gate g(t) (1 while the rule may learn, 0 during the first ``settle`` of every
presentation and during test presentations) are ``TimedArray`` s on the same grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from brian2 import Hz, Quantity, TimedArray, ms, second

from bioprop.data.base import Dataset
from bioprop.spiking.units import check_quantity, to_str

__all__ = ["PoissonEncoder", "Schedule", "downsample"]


@dataclass
class PoissonEncoder:
    """Input population whose neurons fire Poisson spikes at ν_max · x (x ∈ [0, 1]).

    Parameters
    ----------
    max_rate
        ν_max, the rate of an input of value 1 (rate).
    """

    max_rate: Quantity = field(default_factory=lambda: 100 * Hz)
    name = "Poisson"
    is_encoder = True

    def __post_init__(self):
        self.max_rate = check_quantity(
            self.max_rate, "rate", "PoissonEncoder", "max_rate", nonnegative=True
        )

    def equations(self) -> str:
        return "rate = max_rate * stimulus(t, i) : Hz"

    def threshold(self) -> str:
        return "rand() < rate*dt"

    def namespace(self) -> dict[str, Any]:
        return {"max_rate": self.max_rate}

    def describe(self) -> dict[str, str]:
        return {"model": self.name, "max_rate": to_str(self.max_rate)}


@dataclass
class Schedule:
    """What is presented when: inputs, targets, labels and whether the rule learns.

    Parameters
    ----------
    x
        ``(presentations, inputs)`` input values in [0, 1].
    y
        ``(presentations, outputs)`` target values in [0, 1] (target rate / the rule's
        ``target_rate``), or None (no learning, no target).
    labels
        ``(presentations,)`` class labels (−1: none), for accuracy.
    learn
        ``(presentations,)`` bool: the rule learns during this presentation (after
        ``settle``); False for test presentations.
    present
        Duration of one presentation (time).
    settle
        Start of each presentation during which the rule does not learn (time, < present).
    """

    x: np.ndarray
    y: np.ndarray | None
    labels: np.ndarray
    learn: np.ndarray
    present: Quantity = field(default_factory=lambda: 50 * ms)
    settle: Quantity = field(default_factory=lambda: 20 * ms)

    def __post_init__(self):
        self.present = check_quantity(self.present, "time", "Schedule", "present", positive=True)
        self.settle = check_quantity(self.settle, "time", "Schedule", "settle", nonnegative=True)
        if not self.settle < self.present:
            raise ValueError(
                f"Schedule: settle ({self.settle}) must be shorter than present ({self.present})"
            )
        self.x = np.asarray(self.x, dtype=np.float64)
        if self.x.ndim != 2 or self.x.shape[0] == 0:
            raise ValueError(
                f"Schedule: x must be 2-D (presentations, inputs) and non-empty, got shape "
                f"{self.x.shape}"
            )
        if not (np.isfinite(self.x).all() and self.x.min() >= 0 and self.x.max() <= 1):
            raise ValueError(
                "Schedule: input values must lie in [0, 1] (they scale the Poisson rate "
                f"max_rate); got range [{self.x.min():.3g}, {self.x.max():.3g}]"
            )
        n = self.x.shape[0]
        if self.y is not None:
            self.y = np.asarray(self.y, dtype=np.float64)
            if self.y.ndim != 2 or self.y.shape[0] != n:
                raise ValueError(f"Schedule: y must have shape ({n}, outputs), got {self.y.shape}")
            if not (np.isfinite(self.y).all() and self.y.min() >= 0 and self.y.max() <= 1):
                raise ValueError("Schedule: target values must lie in [0, 1]")
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.learn = np.asarray(self.learn, dtype=bool).reshape(-1)
        if self.labels.shape[0] != n or self.learn.shape[0] != n:
            raise ValueError(
                f"Schedule: labels and learn need {n} entries, got {self.labels.shape[0]} "
                f"and {self.learn.shape[0]}"
            )
        if self.learn.any() and self.y is None:
            raise ValueError("Schedule: learning presentations need targets y")

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def interleaved(
        cls,
        x_train: np.ndarray,
        labels_train: np.ndarray,
        x_test: np.ndarray,
        labels_test: np.ndarray,
        n_classes: int,
        test_every: int,
        present: Quantity = 50 * ms,
        settle: Quantity = 20 * ms,
    ) -> Schedule:
        """Train presentations (learning on, one-hot targets) with the whole test set
        presented (learning off) before the first and after every ``test_every`` train
        presentations and at the end."""
        x_train, x_test = np.asarray(x_train), np.asarray(x_test)
        lt, ls = np.asarray(labels_train, np.int64), np.asarray(labels_test, np.int64)
        if test_every < 1:
            raise ValueError(f"Schedule.interleaved: test_every must be >= 1, got {test_every}")
        blocks_x, blocks_l, blocks_learn = [x_test], [ls], [np.zeros(len(ls), bool)]
        for i in range(0, len(lt), test_every):
            j = min(i + test_every, len(lt))
            blocks_x += [x_train[i:j], x_test]
            blocks_l += [lt[i:j], ls]
            blocks_learn += [np.ones(j - i, bool), np.zeros(len(ls), bool)]
        labels = np.concatenate(blocks_l)
        y = np.zeros((len(labels), n_classes))
        y[np.arange(len(labels)), labels] = 1.0
        return cls(
            np.concatenate(blocks_x), y, labels, np.concatenate(blocks_learn), present, settle
        )

    # -- views -----------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return self.x.shape[0]

    @property
    def duration(self) -> Quantity:
        return self.n * self.present

    def grid(self, dt: Quantity) -> tuple[int, int]:
        """(steps per presentation, steps of the settle period) on the time step ``dt``;
        both must be whole numbers of steps."""
        steps = float(self.present / dt)
        settle = float(self.settle / dt)
        if abs(steps - round(steps)) > 1e-6 or abs(settle - round(settle)) > 1e-6:
            raise ValueError(
                f"Schedule: present ({self.present}) and settle ({self.settle}) must be whole "
                f"multiples of dt ({dt})"
            )
        return round(steps), round(settle)

    def stimulus(self) -> TimedArray:
        """x as a TimedArray ``stimulus(t, i)`` (one row per presentation)."""
        return TimedArray(self.x, dt=self.present)

    def target(self) -> TimedArray:
        """y as a TimedArray ``target(t, i)`` (zeros without targets)."""
        y = self.y if self.y is not None else np.zeros((self.n, 1))
        return TimedArray(y, dt=self.present)

    def gate(self, dt: Quantity) -> TimedArray:
        """The learning gate g(t) ∈ {0, 1}: 0 during ``settle`` and on test presentations."""
        steps, settle = self.grid(dt)
        g = math.gcd(steps, settle) if settle else steps
        sub = steps // g
        row = np.ones(sub)
        row[: settle // g] = 0.0
        values = (self.learn[:, None] * row[None, :]).reshape(-1)
        return TimedArray(values, dt=self.present / sub)

    def window(self, n: int) -> tuple[float, float]:
        """(start, end) in seconds of the scored window of presentation n (after settle)."""
        p, s = float(self.present / second), float(self.settle / second)
        return n * p + s, (n + 1) * p


def downsample(data: Dataset, factor: int = 2, shape: tuple[int, int] = (28, 28)) -> Dataset:
    """Images average-pooled ``factor`` × ``factor`` (Fashion-MNIST 28×28 → 14×14 = 196
    inputs for ``factor=2``), clamped to [0, 1] (the Poisson rate scale), integer labels."""
    h, w = shape
    if data.n_inputs != h * w or h % factor or w % factor:
        raise ValueError(
            f"downsample: data {data.name!r} has {data.n_inputs} features; expected "
            f"{shape[0]}x{shape[1]} images with sides divisible by {factor}"
        )

    def pool(x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.avg_pool2d(x.float().view(-1, 1, h, w), factor)
        return x.reshape(x.shape[0], -1).clamp(0, 1)

    def labels(y: torch.Tensor) -> torch.Tensor:
        return y if y.dim() == 1 else y.argmax(1)

    return Dataset(
        f"{data.name} {h // factor}x{w // factor}",
        pool(data.x_train),
        labels(data.y_train),
        pool(data.x_test),
        labels(data.y_test),
        "classification",
        n_classes=data.n_classes,
        meta={**data.meta, "downsampled": f"{factor}x{factor} average pooling"},
    )
