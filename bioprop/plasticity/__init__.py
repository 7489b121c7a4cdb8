"""Differentiable plasticity (Miconi, Clune & Stanley, ICML 2018): Hebbian plastic pathways
whose strength is learned by an outer loop.

Each plastic connection has a fixed part and a plastic part, w + α ⊙ Hebb(t); the trace
Hebb follows a local Hebbian rule within an episode (:mod:`~bioprop.plasticity.trace`) and
restarts at every episode; w, α and η are trained across episodes by BPTT through the
episode (``dp-bptt``) or by a local rule without backprop through time (``dp-fa``), both in
:mod:`bioprop.rules.plasticity`.

Modules (one concept each): :mod:`~bioprop.plasticity.trace` (the two update forms),
:mod:`~bioprop.plasticity.pathway` (:class:`HebbianPathway`, :class:`OneToOnePathway`),
:mod:`~bioprop.plasticity.circuit` (:class:`PlasticRNN`, the base :class:`EpisodeCircuit`),
:mod:`~bioprop.plasticity.feedforward` (:class:`PlasticFeedforward`, a plastic output
layer), :mod:`~bioprop.plasticity.tasks` (pattern memorisation, image completion),
:mod:`~bioprop.plasticity.reference` (BPTT through the episode),
:mod:`~bioprop.plasticity.recording` (α, η and trace snapshots in recordings) and
:mod:`~bioprop.plasticity.presets` (the task registry's configurations).  See
``docs/plasticity.md``.
"""

from bioprop.plasticity.circuit import EpisodeCircuit, PlasticRNN, Step
from bioprop.plasticity.feedforward import PlasticFeedforward
from bioprop.plasticity.pathway import HebbianPathway, OneToOnePathway
from bioprop.plasticity.reference import episode_bptt
from bioprop.plasticity.tasks import (
    EpisodeBatch,
    EpisodeTask,
    ImageCompletion,
    PatternMemorisation,
    episode_data,
    episode_error,
    episode_loss,
    prepare_images,
)
from bioprop.plasticity.trace import FORMS

__all__ = [
    "EpisodeCircuit",
    "PlasticRNN",
    "PlasticFeedforward",
    "Step",
    "HebbianPathway",
    "OneToOnePathway",
    "episode_bptt",
    "EpisodeBatch",
    "EpisodeTask",
    "PatternMemorisation",
    "ImageCompletion",
    "episode_data",
    "episode_error",
    "episode_loss",
    "prepare_images",
    "FORMS",
]
