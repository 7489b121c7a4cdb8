"""Held-out evaluation of an episode-trained circuit: fresh episodes, no learning.

The outer loop's training metric is measured on the episodes it learns from; the
experiments report instead the metric on ``episodes`` fresh episodes drawn from their own
seeded stream (``seeding.generator(seed, "test episodes")``, never used for training), with
the parameters frozen — the traces still learn within each episode, which is the point.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from bioprop.core import seeding
from bioprop.plasticity.tasks import EpisodeBatch, EpisodeTask, episode_error, episode_loss

__all__ = ["Evaluation", "evaluate", "held_out", "parameter_count"]


@dataclass
class Evaluation:
    """``metric`` (the task's: wrong signs on the zeroed bits, squared error per erased
    pixel) and ``loss`` (the training loss), means over the episodes; ``example`` the
    last batch and the circuit's outputs on it (for figures)."""

    metric: float
    loss: float
    episodes: int
    example: tuple[EpisodeBatch, torch.Tensor] | None = None


def held_out(
    task: EpisodeTask, episodes: int, seed: int = 0, batch: int = 10
) -> Iterator[EpisodeBatch]:
    """The held-out episodes of ``seed``, in batches of ``batch`` (the same ones for every
    network evaluated with the same seed)."""
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    gen = seeding.generator(seed, "test episodes")
    done = 0
    while done < episodes:
        n = min(batch, episodes - done)
        yield task.sample(1, n, gen)
        done += n


def evaluate(
    circuit, task: EpisodeTask, episodes: int = 100, seed: int = 0, batch: int = 10
) -> Evaluation:
    """Mean metric and loss of ``circuit`` over ``episodes`` fresh episodes of ``task``."""
    ref = next(p for p in circuit.parameters())
    metric = loss = 0.0
    done, example = 0, None
    with torch.no_grad():
        for b in held_out(task, episodes, seed, batch):
            b = b.to(ref.dtype, ref.device)
            n = b.x.shape[1]
            out = circuit(b.x)
            metric += episode_error(out, b) * n
            loss += float(episode_loss(out, b)) * n
            done += n
            example = (b, out)
    return Evaluation(metric / done, loss / done, done, example)


def parameter_count(circuit) -> int:
    """Trained parameters (w, b, α, η; an LSTM's weights and biases), each counted once."""
    from bioprop.plasticity.reference import trained_parameters

    unique = {id(p): p for p in trained_parameters(circuit).values()}
    return sum(p.numel() for p in unique.values())
