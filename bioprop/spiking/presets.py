"""The circuit and data of the spiking Fashion-MNIST task ``spiking-fashion-mnist``
(registered in :mod:`bioprop.experiments.tasks` with its budget and rule options, without
importing brian2; ``circuits/spiking_feedback_alignment.py`` and ``bioprop compare`` run
it): 196 Poisson inputs (Fashion-MNIST 2×2 average-pooled to 14×14, 100 Hz × pixel) →
100 LIF → 10 LIF, trained online by ``spiking-fa``.  Its layered rate twin (196-100-10
logistic, squared error, SGD lr 0.5, batch 1) takes ``fa`` — whose B is drawn like the
spiking rule's, from the same seed and purpose, so it is the same B — and ``bp`` on the same
samples in the same order (the first ``n_train`` of the seeded epoch order).
"""

from __future__ import annotations

from brian2 import Hz

from bioprop import data as _data
from bioprop.core import init as _init
from bioprop.core import seeding
from bioprop.core.circuit import Circuit
from bioprop.data.base import Dataset
from bioprop.spiking.encoding import PoissonEncoder, downsample
from bioprop.spiking.neurons import LIF

__all__ = ["SIZES", "circuit", "load"]

SIZES = (196, 100, 10)


def circuit(seed: int) -> Circuit:
    """The spiking circuit; weights in mV per spike W ~ U[−1, 1] + 0.2 (hidden neurons
    fire at ~40 Hz at the start), drawn from ``seeding.generator(seed, "spiking weights")``."""
    g = seeding.generator(seed, "spiking weights")
    c = Circuit(seed=seed)
    c.add_population("input", SIZES[0], model=PoissonEncoder(100 * Hz))
    c.add_population("hidden", SIZES[1], model=LIF())
    c.add_population("output", SIZES[2], model=LIF())
    for (a, b), (n_pre, n_post) in zip(
        (("input", "hidden"), ("hidden", "output")),
        zip(SIZES[:-1], SIZES[1:], strict=True),
        strict=True,
    ):
        w = _init.uniform(1.0)((n_post, n_pre), g) + 0.2
        c.connect(a, b, weight=w, bias=False)
    return c


N_TEST, QUICK_SIZE = 500, (200, 20)


def load(seed: int, quick: bool) -> Dataset:
    """Fashion-MNIST 14×14 (values in [0, 1]) with the first 500 test images (every kind
    is tested on the same ones); ``quick``: the first 200 training and 20 test images, or
    the synthetic stand-in where the files are missing (:func:`bioprop.data.load_for_run`)."""
    full = _data.load_for_run("fashion-mnist", quick=quick, quick_size=QUICK_SIZE)
    return downsample(full).subset(n_test=N_TEST)
