"""Procedural sequence tasks (copy, repeat copy) and the length curriculum.

Both tasks follow Graves et al. 2014 (Neural Turing Machines) as used by Jaderberg et al.
2017, §3.2.  A *character* is an 8-bit binary vector with bits drawn Bernoulli(½).

**Copy** (input 9 channels: 8 bits + delimiter; output 8 bits; length 2N + 1)::

    t = 0 … N−1      x_t = (c_t, 0)        read the characters
    t = N            x_t = (0, 1)          delimiter
    t = N+1 … 2N     x_t = 0, target c_{t−N−1}   repeat them (the only steps with a loss)

**Repeat copy** (input 10 channels: 8 bits + delimiter + repeat count; output 9 channels:
8 bits + end marker; length N + 1 + R·N + 1)::

    t = 0 … N−1          x_t = (c_t, 0, 0)
    t = N                x_t = (0, 1, R / r_max)       delimiter carrying the count R
    t = N+1 … N+R·N      target (c_{(t−N−1) mod N}, 0)   the sequence R times
    t = N+R·N+1          target (0, 1)                    the end marker

R is drawn uniformly from {1, …, r_max} per sequence.  Sequences of one batch share N (and
hence their input length); in repeat copy they share R too, so that a batch is one tensor
— R is drawn per batch.

**Error.**  The output layer gives one logit per bit; the loss is the summed binary
cross-entropy and the error is reported in *bits per character*: the cross-entropy in bits
(nats / ln 2) summed over a target character's bits and averaged over target characters.
**Curriculum** (:class:`Curriculum`): N starts at ``n_start``; when the average error of the
last ``window`` batches falls below ``threshold`` (0.15 bits) N grows by one.  The metric
is the largest N that met the criterion.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

__all__ = [
    "Batch",
    "SequenceData",
    "SequenceTask",
    "CopyTask",
    "RepeatCopyTask",
    "Curriculum",
    "bits_per_character",
    "sequence_loss",
    "get_task",
    "TASKS",
]

BITS = 8
LN2 = math.log(2.0)


@dataclass
class Batch:
    """One batch of sequences, time first.

    Attributes
    ----------
    x
        Inputs (time, batch, n_in).
    y
        Targets: bits in {0, 1} (time, batch, n_out), or class indices (time, batch) of an
        integer dtype (a categorical target, e.g. the next character).
    mask
        1 on steps that carry a target, 0 elsewhere (time,).
    n, repeats
        The sequence length N and (repeat copy) the repeat count R.
    state
        The state the batch starts from (None: s_0 = 0).  A stream task's batch continues
        the previous batch's sequences; the loop puts the previous final state here.
    follows
        True when the batch continues the previous batch's sequences (its ``state`` is
        then the previous final state).
    continues
        True when the sequences go on after this batch (a stream): the end of the last
        window is then a boundary like the inner ones (a synthetic gradient enters there).
    """

    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor
    n: int
    repeats: int = 1
    state: tuple[torch.Tensor, ...] | None = None
    follows: bool = False
    continues: bool = False

    @property
    def length(self) -> int:
        return self.x.shape[0]

    def to(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> Batch:
        """A copy in ``dtype`` on ``device`` (either may be None: unchanged); class-index
        targets keep their integer dtype."""
        x, m = (t.to(device=device, dtype=dtype, copy=True) for t in (self.x, self.mask))
        y_dtype = dtype if self.y.is_floating_point() else None
        y = self.y.to(device=device, dtype=y_dtype, copy=True)
        state = (
            None
            if self.state is None
            else tuple(t.to(device=device, dtype=dtype, copy=True) for t in self.state)
        )
        return dataclasses.replace(self, x=x, y=y, mask=m, state=state)


def _check(n: int, batch: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"sequence length N must be a positive integer, got {n!r}")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch size must be a positive integer, got {batch!r}")


def _characters(n: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (n, batch, BITS), generator=generator).float()


class SequenceTask:
    """Base class: ``sample(n, batch, generator) -> Batch``; ``n_in``, ``n_out``."""

    name: str = ""
    n_in: int = 0
    n_out: int = 0

    def sample(self, n: int, batch: int, generator: torch.Generator) -> Batch:
        raise NotImplementedError


class CopyTask(SequenceTask):
    """Read N characters and a delimiter, then repeat the N characters."""

    name = "copy"
    n_in = BITS + 1
    n_out = BITS

    def sample(self, n: int, batch: int, generator: torch.Generator) -> Batch:
        _check(n, batch)
        c = _characters(n, batch, generator)
        length = 2 * n + 1
        x = torch.zeros(length, batch, self.n_in)
        y = torch.zeros(length, batch, self.n_out)
        mask = torch.zeros(length)
        x[:n, :, :BITS] = c
        x[n, :, BITS] = 1.0
        y[n + 1 :] = c
        mask[n + 1 :] = 1.0
        return Batch(x, y, mask, n)


class RepeatCopyTask(SequenceTask):
    """Read N characters and a repeat count R, output them R times, then an end marker."""

    name = "repeat-copy"
    n_in = BITS + 2
    n_out = BITS + 1

    def __init__(self, r_max: int = 3):
        if not isinstance(r_max, int) or isinstance(r_max, bool) or r_max < 1:
            raise ValueError(f"repeat copy: r_max must be a positive integer, got {r_max!r}")
        self.r_max = r_max

    def sample(
        self, n: int, batch: int, generator: torch.Generator, repeats: int | None = None
    ) -> Batch:
        _check(n, batch)
        if repeats is None:
            repeats = int(torch.randint(1, self.r_max + 1, (1,), generator=generator))
        if not 1 <= repeats <= self.r_max:
            raise ValueError(f"repeat copy: R must be in 1..{self.r_max}, got {repeats!r}")
        c = _characters(n, batch, generator)
        length = n + 1 + repeats * n + 1
        x = torch.zeros(length, batch, self.n_in)
        y = torch.zeros(length, batch, self.n_out)
        mask = torch.zeros(length)
        x[:n, :, :BITS] = c
        x[n, :, BITS] = 1.0
        x[n, :, BITS + 1] = repeats / self.r_max
        y[n + 1 : n + 1 + repeats * n, :, :BITS] = c.repeat(repeats, 1, 1)
        y[-1, :, BITS] = 1.0
        mask[n + 1 :] = 1.0
        return Batch(x, y, mask, n, repeats)


TASKS = {"copy": CopyTask, "repeat-copy": RepeatCopyTask}


def get_task(name: str, **options) -> SequenceTask:
    """A task by name (``copy``, ``repeat-copy``)."""
    if name not in TASKS:
        raise ValueError(f"unknown sequence task {name!r}; choose one of {list(TASKS)}")
    return TASKS[name](**options)


def _per_step(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (nats) per step and sequence, (time, batch): summed binary
    cross-entropy over the bits for bit targets, softmax cross-entropy for class indices."""
    if y.is_floating_point():
        return F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(dim=2)
    n_t, n_b, n_c = logits.shape
    return F.cross_entropy(logits.reshape(n_t * n_b, n_c), y.reshape(-1), reduction="none").view(
        n_t, n_b
    )


def sequence_loss(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L = (1/B) Σ_t m_t Σ_n ℓ(logit_{t,n}, y_{t,n}): summed over steps, mean over the batch
    (so a state's gradient is ∂ of the *future* loss of its own sequence, over B).

    ℓ is the binary cross-entropy summed over a character's bits for bit targets (copy,
    repeat copy) and the softmax cross-entropy −log p(y) for class-index targets (the next
    character of a language model)."""
    return (_per_step(logits, y) * mask[:, None]).sum() / logits.shape[1]


def bits_per_character(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    """Cross-entropy in bits per target character: Σ_t m_t Σ_n ℓ / (ln 2 · Σ m_t · B)."""
    with torch.no_grad():
        total = float((_per_step(logits, y) * mask[:, None]).sum())
        count = float(mask.sum()) * logits.shape[1]
    return total / (LN2 * max(count, 1.0))


@dataclass
class Curriculum:
    """N grows by one when the mean error of the last ``window`` batches is < ``threshold``.

    ``update(error)`` records one batch's error at the current N and returns True when N
    grew.  ``max_solved`` is the largest N that met the criterion (0 if none did);
    ``history`` lists (N, error) per batch.
    """

    n_start: int = 1
    threshold: float = 0.15
    window: int = 20
    n_max: int | None = None
    n: int = field(init=False)
    max_solved: int = field(init=False, default=0)
    history: list[tuple[int, float]] = field(init=False, default_factory=list)

    def __post_init__(self):
        if not isinstance(self.n_start, int) or self.n_start < 1:
            raise ValueError(
                f"Curriculum: n_start must be a positive integer, got {self.n_start!r}"
            )
        if not self.threshold > 0:
            raise ValueError(f"Curriculum: threshold must be > 0 bits, got {self.threshold!r}")
        if not isinstance(self.window, int) or self.window < 1:
            raise ValueError(f"Curriculum: window must be a positive integer, got {self.window!r}")
        self.n = self.n_start
        self._recent: deque[float] = deque(maxlen=self.window)

    def update(self, error: float) -> bool:
        self.history.append((self.n, float(error)))
        self._recent.append(float(error))
        if len(self._recent) == self.window and sum(self._recent) / self.window < self.threshold:
            self.max_solved = max(self.max_solved, self.n)
            if self.n_max is None or self.n < self.n_max:
                self.n += 1
            self._recent.clear()
            return True
        return False

    @property
    def mean_error(self) -> float:
        """Mean error over the batches since N last changed (NaN if none yet)."""
        return sum(self._recent) / len(self._recent) if self._recent else math.nan

    def fresh(self) -> Curriculum:
        """A new curriculum with the same settings, at N = ``n_start`` with no history."""
        return dataclasses.replace(self)

    def settings(self) -> dict:
        """``n_start``, ``threshold``, ``window``, ``n_max`` (for provenance)."""
        return {
            "n_start": self.n_start,
            "threshold": self.threshold,
            "window": self.window,
            "n_max": self.n_max,
        }


@dataclass
class SequenceData:
    """What :func:`bioprop.train` feeds a recurrent circuit: a sequence task and the length
    curriculum it is trained under (the loop starts a :meth:`Curriculum.fresh` copy, so one
    ``SequenceData`` serves every rule of a comparison).

    >>> data = SequenceData(CopyTask(), Curriculum(n_start=1, threshold=0.15, window=20))
    """

    task: SequenceTask
    curriculum: Curriculum = field(default_factory=Curriculum)

    def __post_init__(self):
        if not isinstance(self.task, SequenceTask):
            raise TypeError(
                f"SequenceData(task=...) must be a sequence task (CopyTask(), "
                f"RepeatCopyTask(), get_task(name)), got {type(self.task).__name__}"
            )
        if not isinstance(self.curriculum, Curriculum):
            raise TypeError(
                f"SequenceData(curriculum=...) must be a Curriculum, got "
                f"{type(self.curriculum).__name__}"
            )

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def n_inputs(self) -> int:
        return self.task.n_in

    @property
    def n_outputs(self) -> int:
        return self.task.n_out
