"""Spiking circuits simulated by brian2, trained with a local three-factor rule.

A circuit holds spiking populations like rate ones (``Circuit.add_population(name, size,
model=LIF())``).  ``bioprop.train(circuit, "spiking-fa", data, ...)`` trains it
(:func:`bioprop.spiking.loop.fit`): a brian2 ``Network`` is built from it (populations →
``NeuronGroup``, pathways → ``Synapses``), a :class:`Schedule` of samples is presented as
Poisson rates in one ``run()`` (:func:`run`), the circuit learns with
:class:`ThreeFactorFA` (the registered rule ``spiking-fa``, :mod:`bioprop.rules.spiking_fa`:
presynaptic trace × postsynaptic factor × a third factor carried by the feedback pathway
B), and spikes, rates, states, weights and updates are recorded through bioprop's one
writer.  See ``docs/spiking.md``.

Modules: :mod:`~bioprop.spiking.units` (unit checks), :mod:`~bioprop.spiking.neurons`
(LIF, AdaptiveLIF, SpikingPopulation), :mod:`~bioprop.spiking.encoding` (PoissonEncoder,
Schedule, downsample), :mod:`~bioprop.spiking.network` (the builder),
:mod:`~bioprop.spiking.recording` (SpikeRecord, draining monitors),
:mod:`~bioprop.spiking.runner` (run), :mod:`~bioprop.spiking.loop` (fit),
:mod:`~bioprop.spiking.twin` (rate twins, the reference).
"""

from bioprop.rules.spiking_fa import ThreeFactorFA
from bioprop.spiking import twin
from bioprop.spiking.encoding import PoissonEncoder, Schedule, downsample
from bioprop.spiking.loop import fit
from bioprop.spiking.network import SpikingNetwork, build
from bioprop.spiking.neurons import LIF, AdaptiveLIF, NeuronModel, SpikingPopulation, lif_rate
from bioprop.spiking.recording import SpikeRecord
from bioprop.spiking.runner import TARGETS, SpikingRun, run
from bioprop.spiking.units import SpikingUnitError

__all__ = [
    "LIF",
    "AdaptiveLIF",
    "NeuronModel",
    "SpikingPopulation",
    "lif_rate",
    "PoissonEncoder",
    "Schedule",
    "downsample",
    "ThreeFactorFA",
    "SpikingNetwork",
    "build",
    "SpikeRecord",
    "fit",
    "run",
    "SpikingRun",
    "TARGETS",
    "SpikingUnitError",
    "layered",
    "twin",
]


def layered(
    sizes,
    model=None,
    encoder=None,
    init=None,
    seed: int = 0,
):
    """A chain ``input -> hidden(s) -> output`` of spiking populations, no biases.

    ``model`` (default ``LIF()``) is used for every non-input population, ``encoder``
    (default ``PoissonEncoder()``) for the input; ``init`` draws the weights (in units of
    the model's ``w_unit``).
    """
    from bioprop.core.circuit import Circuit, layer_names

    sizes = list(sizes)
    names = layer_names(sizes)
    c = Circuit(seed=seed)
    for i, (name, n) in enumerate(zip(names, sizes, strict=True)):
        c.add_population(
            name, n, model=(encoder or PoissonEncoder()) if i == 0 else (model or LIF())
        )
    inits = init if isinstance(init, (list, tuple)) else [init] * (len(sizes) - 1)
    for a, b, ini in zip(names[:-1], names[1:], inits, strict=True):
        c.connect(a, b, init=ini, bias=False)
    return c
