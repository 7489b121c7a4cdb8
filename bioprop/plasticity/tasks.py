"""Episode tasks of differentiable plasticity: pattern memorisation and image completion.

Miconi et al. 2018, §4.1–4.2.  An *episode* shows K patterns, each several times, then a
degraded copy of one of them, which the network must complete; the loss is the squared
error at the last step (summed over units, mean over the episodes of a batch), and the
weights that solve one episode solve any other — what is learned across episodes is how
to store and recall within one (``docs/plasticity.md``).

**Pattern memorisation** (the paper's defaults, ``simple/full.py`` of its code)::

    K = 5 random ±1 patterns of n = 1000 bits;  2 cycles, each showing the K patterns in a
    new random order, 6 steps each with 4 blank steps after each;  then one of them, with
    50 % of its bits set to 0, for 6 steps;  inputs × 20;  106 steps in all.

Metric: the fraction of the zeroed bits whose output sign is wrong at the last step.

**Image completion** (the paper: CIFAR-10 in grey, 32×32; here Fashion-MNIST, 28×28 or
2×2-pooled to 14×14)::

    3 images, each grey image centred and scaled (p − mean(p)) / max|p − mean(p)|;
    3 cycles of the 3 images in a new order, 20 steps each with 2 blank steps after each;
    then one of them with its top or bottom half (p = ½ each) set to 0, for 3 steps.

The network reconstructs it; the metric is the mean squared error per erased pixel.  An
optional constant input channel (``bias_unit``, the paper's "bias neuron") is appended.

Tasks are seeded (every draw comes from the generator the loop passes) and are
:class:`~bioprop.recurrent.SequenceTask` s, so :func:`bioprop.train` runs them through the
recurrent loop; ``N`` of the curriculum is not used (:func:`episode_data`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch

from bioprop.recurrent.tasks import Batch, Curriculum, SequenceData, SequenceTask

__all__ = [
    "EpisodeBatch",
    "EpisodeTask",
    "PatternMemorisation",
    "ImageCompletion",
    "episode_loss",
    "episode_error",
    "episode_data",
    "prepare_images",
    "LOSS_NAME",
]

LOSS_NAME = "squared error at the last step (summed over units, mean over episodes)"
METRICS = ("sign", "squared")


@dataclass
class EpisodeBatch(Batch):
    """A :class:`~bioprop.recurrent.Batch` of episodes, plus what the metric and the
    analyses need: ``probe`` (batch, n_out), 1 on the units the metric scores (the zeroed
    bits, the erased pixels); ``patterns`` (batch, K, n) the episode's stored patterns;
    ``metric`` ``"sign"`` or ``"squared"``."""

    probe: torch.Tensor | None = None
    patterns: torch.Tensor | None = None
    metric: str = "sign"

    def to(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> EpisodeBatch:
        moved = [
            t.to(device=device, dtype=dtype, copy=True) if t is not None else None
            for t in (self.x, self.y, self.mask, self.probe, self.patterns)
        ]
        x, y, m, probe, patterns = moved
        return dataclasses.replace(self, x=x, y=y, mask=m, probe=probe, patterns=patterns)


def episode_loss(out: torch.Tensor, batch: Batch) -> torch.Tensor:
    """L = (1/B) Σ_t m_t Σ_i (o_{t,i} − y_{t,i})², out and y (time, batch, n_out)."""
    d = (out - batch.y) ** 2
    return (d.sum(dim=2) * batch.mask[:, None]).sum() / out.shape[1]


def output_error(out: torch.Tensor, batch: Batch) -> torch.Tensor:
    """∂ℓ_n/∂o = 2 m_t (o − y) per sample (time, batch, n_out): the output error of
    :func:`episode_loss` (ℓ_n the loss of episode n, L = (1/B) Σ_n ℓ_n)."""
    return 2.0 * (out - batch.y) * batch.mask[:, None, None]


def episode_error(out: torch.Tensor, batch: EpisodeBatch) -> float:
    """The task's metric at the last step that carries a target: ``"sign"``, the fraction
    of probe units whose output has the wrong sign (sign 0 counts as wrong, as in the
    paper's code); ``"squared"``, the mean squared error per probe unit."""
    steps = torch.nonzero(batch.mask).flatten()
    if steps.numel() == 0:
        raise ValueError("the episode has no step with a target (mask is all zero)")
    t = int(steps[-1])
    with torch.no_grad():
        o, y = out[t], batch.y[t]
        probe = batch.probe if batch.probe is not None else torch.ones_like(y)
        if batch.metric == "sign":
            wrong = (torch.sign(o) != torch.sign(y)).to(o.dtype)
        else:
            wrong = (o - y) ** 2
        return float((wrong * probe).sum() / probe.sum().clamp_min(1))


def episode_data(
    task: EpisodeTask, solved_below: float | None = None, window: int = 50
) -> SequenceData:
    """What :func:`bioprop.train` takes for an episode task: the task and a one-level
    curriculum (``n_max = 1``) whose ``max_solved`` turns 1 once the mean metric over
    ``window`` consecutive batches falls below ``solved_below`` (default: the task's own
    threshold — 5 % wrong signs for pattern memorisation)."""
    if not isinstance(task, EpisodeTask):
        raise TypeError(f"episode_data needs an episode task, got {type(task).__name__}")
    level = task.solved_below if solved_below is None else solved_below
    return SequenceData(task, Curriculum(n_start=1, threshold=level, window=window, n_max=1))


def _positive(what: str, v, zero_ok: bool = False) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < (0 if zero_ok else 1):
        need = "a non-negative" if zero_ok else "a positive"
        raise ValueError(f"{what} must be {need} integer (a number of steps), got {v!r}")
    return v


class EpisodeTask(SequenceTask):
    """Base of episode tasks: K patterns shown ``presentations`` times in random order,
    ``present_steps`` each followed by ``blank_steps`` of zero input, then a degraded
    pattern for ``test_steps``; ``sample(n, batch, generator)`` (``n`` is not used)."""

    loss_name = LOSS_NAME
    metric = "sign"
    solved_below = 0.05

    def __init__(
        self, n_patterns, size, presentations, present_steps, blank_steps, test_steps, bias_unit
    ):
        self.n_patterns = _positive("number of patterns per episode", n_patterns)
        self.size = _positive("pattern size", size)
        self.presentations = _positive("presentations of each pattern", presentations)
        self.present_steps = _positive("presentation length", present_steps)
        self.blank_steps = _positive("blank steps between presentations", blank_steps, True)
        self.test_steps = _positive("test length", test_steps)
        self.bias_unit = bool(bias_unit)
        self.n_in = size + int(self.bias_unit)
        self.n_out = size

    @property
    def steps(self) -> int:
        """Episode length: presentations · K · (present + blank) + test."""
        per = self.present_steps + self.blank_steps
        return self.presentations * self.n_patterns * per + self.test_steps

    #: True for the control task whose test pattern is a fresh one, not one of the K shown
    novel_test = False

    def novel(self) -> EpisodeTask:
        """This task with a *novel* test pattern (drawn like the others but never shown): a
        network that completes from memory does worse on it than on a stored one; one that
        completes from a prior learned across episodes does as well."""
        other = copy.copy(self)
        other.novel_test = True
        return other

    def patterns(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def degrade(self, p: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(kept, 0/1 per unit) for test patterns ``p`` (batch, size)."""
        raise NotImplementedError

    gain: float = 1.0

    def sample(self, n: int, batch: int, generator: torch.Generator) -> EpisodeBatch:
        _positive("batch size", batch)
        _positive("N (unused by episode tasks)", n)
        k, size, per = self.n_patterns, self.size, self.present_steps + self.blank_steps
        pats = self.patterns(batch, generator)  # (batch, K, size)
        x = torch.zeros(self.steps, batch, self.n_in)
        rows = torch.arange(batch)[:, None]
        for c in range(self.presentations):
            order = torch.argsort(torch.rand(batch, k, generator=generator), dim=1)
            shown = pats[rows, order]  # (batch, K, size), this cycle's order
            for i in range(k):
                a = (c * k + i) * per
                x[a : a + self.present_steps, :, :size] = shown[:, i]
        which = torch.randint(0, k, (batch,), generator=generator)
        target = pats[torch.arange(batch), which]  # (batch, size)
        if self.novel_test:  # the control: a test pattern the episode never showed
            target = self.patterns(batch, generator)[:, 0]
        keep = self.degrade(target, generator)
        x[-self.test_steps :, :, :size] = target * keep
        if self.bias_unit:
            x[:, :, size] = 1.0
        x = x * self.gain
        y = torch.zeros(self.steps, batch, size)
        y[-1] = target
        mask = torch.zeros(self.steps)
        mask[-1] = 1.0
        return EpisodeBatch(x, y, mask, n, probe=1.0 - keep, patterns=pats, metric=self.metric)


class PatternMemorisation(EpisodeTask):
    """Store K random ±1 patterns in one episode, complete a half-zeroed one (module doc).

    Parameters (defaults: Miconi et al. 2018's binary-pattern task)
    ----------
    n_bits, n_patterns, presentations, present_steps, blank_steps, test_steps
        1000, 5, 2, 6, 4, 6.
    degrade
        Fraction of the test pattern's bits set to 0 (exactly ⌊degrade · n_bits⌋).
    gain
        Input scale (20).
    bias_unit
        Append a constant input channel (default False).
    """

    name = "pattern-memorisation"

    def __init__(
        self,
        n_bits: int = 1000,
        n_patterns: int = 5,
        presentations: int = 2,
        present_steps: int = 6,
        blank_steps: int = 4,
        test_steps: int = 6,
        degrade: float = 0.5,
        gain: float = 20.0,
        bias_unit: bool = False,
    ):
        super().__init__(
            n_patterns, n_bits, presentations, present_steps, blank_steps, test_steps, bias_unit
        )
        if not 0.0 <= degrade <= 1.0:
            raise ValueError(f"degrade must be a fraction in [0, 1], got {degrade!r}")
        if not gain > 0:
            raise ValueError(f"gain must be > 0, got {gain!r}")
        self.degrade_fraction, self.gain = float(degrade), float(gain)

    def patterns(self, batch, generator):
        bits = torch.randint(0, 2, (batch, self.n_patterns, self.size), generator=generator)
        return bits.float() * 2.0 - 1.0

    def degrade(self, p, generator):
        n_zero = int(self.degrade_fraction * self.size)
        scores = torch.rand(p.shape, generator=generator)
        zeroed = torch.argsort(scores, dim=1)[:, :n_zero]
        keep = torch.ones_like(p)
        keep.scatter_(1, zeroed, 0.0)
        return keep


def prepare_images(images: torch.Tensor, side: int, pool: int = 1) -> torch.Tensor:
    """Images (M, side²) in grey → 2×2…-pooled (``pool``) and centred/scaled as the
    paper's code does: p ← (p − mean p) / max|p − mean p|, (M, (side/pool)²)."""
    if images.dim() != 2 or images.shape[1] != side * side:
        raise ValueError(
            f"images must be (M, {side * side}) for side {side}, got {tuple(images.shape)}"
        )
    if side % pool:
        raise ValueError(f"pool {pool} does not divide the image side {side}")
    p = images.float().reshape(-1, 1, side, side)
    if pool > 1:
        p = torch.nn.functional.avg_pool2d(p, pool)
    p = p.flatten(1)
    p = p - p.mean(dim=1, keepdim=True)
    return p / (p.abs().amax(dim=1, keepdim=True) + 1e-8)


class ImageCompletion(EpisodeTask):
    """Store 3 images in one episode, complete one whose top or bottom half is erased.

    Parameters
    ----------
    images
        Prepared images (M, side²) (:func:`prepare_images`), sampled with replacement.
    n_images, presentations, present_steps, blank_steps, test_steps
        3, 3, 20, 2, 3 (the paper's code).
    bias_unit
        Append a constant input channel of 1 (default True, the paper's bias neuron).
    """

    name = "image-completion"
    metric = "squared"
    solved_below = 0.05

    def __init__(
        self,
        images: torch.Tensor,
        n_images: int = 3,
        presentations: int = 3,
        present_steps: int = 20,
        blank_steps: int = 2,
        test_steps: int = 3,
        bias_unit: bool = True,
    ):
        if images.dim() != 2 or images.shape[0] < 1:
            raise ValueError(
                f"images must be a non-empty (M, pixels) tensor, got {tuple(images.shape)}"
            )
        side = int(round(images.shape[1] ** 0.5))
        if side * side != images.shape[1] or side % 2:
            raise ValueError(
                f"images must be square with an even side, got {images.shape[1]} pixels"
            )
        super().__init__(
            n_images,
            images.shape[1],
            presentations,
            present_steps,
            blank_steps,
            test_steps,
            bias_unit,
        )
        self.images, self.side = images, side

    def patterns(self, batch, generator):
        idx = torch.randint(0, self.images.shape[0], (batch, self.n_patterns), generator=generator)
        return self.images[idx]

    def degrade(self, p, generator):
        half = self.size // 2
        keep = torch.ones_like(p)
        top = torch.rand(p.shape[0], generator=generator) < 0.5
        keep[top, :half] = 0.0  # rows of the top half erased
        keep[~top, half:] = 0.0  # rows of the bottom half erased
        return keep
