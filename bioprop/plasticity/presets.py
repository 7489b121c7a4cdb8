"""The family's configurations for ``bioprop compare``: pattern memorisation and image
completion with the paper's networks and outer-loop settings.

Miconi et al. 2018 (code: ``simple/full.py``, ``images/images.py``): a plastic RNN whose
units receive the inputs one to one and are read out directly; w and α drawn N(0, 0.01²),
η = 0.01 learned; Adam, batches of one episode, lr 3e-4 (patterns) and 1e-4 (images), no
gradient clipping.  Images: Fashion-MNIST 2×2-pooled to 14×14 (the paper: 32×32 CIFAR-10
in grey) so a CPU runs them, one constant input unit (the paper's bias neuron), inputs
clamping the units.  :mod:`bioprop.experiments.tasks` registers the tasks
``pattern-memorisation`` and ``image-completion`` from these.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from bioprop.plasticity.circuit import PlasticRNN
from bioprop.plasticity.tasks import (
    ImageCompletion,
    PatternMemorisation,
    episode_data,
    prepare_images,
)
from bioprop.recurrent.circuit import RecurrentCircuit
from bioprop.recurrent.tasks import SequenceData

__all__ = [
    "RULES",
    "DESCRIPTIONS",
    "circuit",
    "load",
    "kind_options",
    "quick_kind_options",
    "models",
    "MODELS",
]

RULES = ("dp-bptt", "dp-fa")
IMAGE_SIDE, IMAGE_POOL = 28, 2
DESCRIPTIONS = {
    "pattern-memorisation": "store 5 random ±1 patterns of 1000 bits per episode, complete a "
    "half-zeroed one (Miconi et al. 2018 §4.1), plastic RNN of 1000 units",
    "image-completion": "store 3 Fashion-MNIST images (14x14) per episode, complete one with "
    "its top or bottom half erased (Miconi et al. 2018 §4.2), plastic RNN of 197 units",
}
LR = {"pattern-memorisation": 3e-4, "image-completion": 1e-4}


def circuit(task: str) -> Callable[[int], PlasticRNN]:
    """``seed -> PlasticRNN`` sized for ``task``."""

    def build(seed: int) -> PlasticRNN:
        if task == "pattern-memorisation":
            return PlasticRNN(1000, 1000, 1000, seed=seed)
        n = (IMAGE_SIDE // IMAGE_POOL) ** 2
        return PlasticRNN(n + 1, n + 1, n, drive="clamp", seed=seed)

    return build


def image_task(quick: bool, split: str = "train") -> ImageCompletion:
    """Image completion on Fashion-MNIST's ``split`` images (a synthetic stand-in for quick
    runs where the files are absent; :func:`bioprop.data.load_for_run`)."""
    from bioprop.data import load_for_run

    ds = load_for_run("fashion-mnist", quick=quick, quick_size=(500, 200))
    images = ds.x_train if split == "train" else ds.x_test
    return ImageCompletion(prepare_images(images, IMAGE_SIDE, IMAGE_POOL))


def load(task: str) -> Callable[[int, bool], SequenceData]:
    """``(seed, quick) -> SequenceData`` of the task (episodes drawn from the run's seed)."""

    def make(seed: int, quick: bool) -> SequenceData:
        if task == "pattern-memorisation":
            return episode_data(PatternMemorisation())
        return episode_data(image_task(quick))

    return make


def kind_options(task: str) -> dict[str, Any]:
    """``bioprop.train`` options of the full budget (one episode per batch, as the paper)."""
    return {
        "steps": 1000,
        "batch_size": 1,
        "clip": None,
        "record_boundaries": 0,
        "optimizer": ("adam", {"lr": LR[task]}),
    }


def quick_kind_options() -> dict[str, Any]:
    """Overrides under ``--quick``."""
    return {"steps": 4}


#: the experiments' three networks (Miconi et al. 2018 compare the same three)
MODELS = ("plastic", "rnn", "lstm")


def models(n_in: int, n_out: int, drive: str = "add") -> dict[str, Callable[[int], Any]]:
    """``{name: seed -> circuit}`` for a task of ``n_in`` inputs and ``n_out`` outputs:

    * ``plastic`` — PlasticRNN of n_in units (w, α per synapse, η): 2 n_in² + 1 parameters;
    * ``rnn`` — the same RNN with α fixed at 0 and ⌈√(2 n_in² + 1)⌉ units (the first n_in
      receive the inputs, the first n_out are read; the paper's "additional neurons"), so
      it has at least as many parameters;
    * ``lstm`` — an LSTM with a linear read-out, its width the largest whose parameter
      count 4H(n_in + H + 1) + n_out (H + 1) does not exceed the plastic network's.
    """
    target = 2 * n_in * n_in + 1
    n_rnn = math.isqrt(target - 1) + 1
    h = 1
    while 4 * (h + 1) * (n_in + h + 2) + n_out * (h + 2) <= target:
        h += 1

    def plastic(seed: int) -> PlasticRNN:
        return PlasticRNN(n_in, n_in, n_out, drive=drive, seed=seed)

    def rnn(seed: int) -> PlasticRNN:
        return PlasticRNN(
            n_in,
            n_rnn,
            n_out,
            drive=drive,
            alpha_init=0.0,
            learn_alpha=False,
            learn_eta=False,
            seed=seed,
        )

    def lstm(seed: int) -> RecurrentCircuit:
        return RecurrentCircuit(n_in, h, n_out, cell="lstm", seed=seed)

    return {"plastic": plastic, "rnn": rnn, "lstm": lstm}
