"""Recurrent circuits unrolled in time, truncated BPTT and synthetic gradients through time.

Jaderberg et al. 2017, §3.2–3.3: an LSTM (or tanh RNN) trained with truncated BPTT over
windows of T steps, with a synthetic gradient at each window boundary standing in for all
future error (``dni``), plus an auxiliary prediction further ahead (``dni-aux``).  The
rules live with every other rule (:mod:`bioprop.rules.recurrent`, kind ``"recurrent"``:
``bioprop.rules.get("dni", kind="recurrent", T=4)``) and train through the one entry point,
``bioprop.train(RecurrentCircuit(...), rule, SequenceData(task, curriculum), steps=...)``.

Modules (one concept each): :mod:`~bioprop.recurrent.circuit` (the recurrent circuit),
:mod:`~bioprop.recurrent.unroll` (truncation windows), :mod:`~bioprop.recurrent.module`
(the boundary synthetic-gradient module), :mod:`~bioprop.recurrent.reference` (full BPTT,
the family's reference), :mod:`~bioprop.recurrent.tasks` (copy, repeat copy, curriculum,
:class:`SequenceData`), :mod:`~bioprop.recurrent.language` (character-level language
modelling on text streams, state carried across batches),
:mod:`~bioprop.recurrent.recording` (boundary-gradient and curriculum groups of
recordings), :mod:`~bioprop.recurrent.loop` (the curriculum loop behind ``bioprop.train``)
and :mod:`~bioprop.recurrent.two_networks` (two RNNs joined by a DNI).
See ``docs/rnn_dni.md``.
"""

from bioprop.recurrent.circuit import CELLS, RecurrentCircuit
from bioprop.recurrent.module import BoundarySyntheticGradient
from bioprop.recurrent.reference import SequenceReference, full_bptt
from bioprop.recurrent.tasks import (
    Batch,
    CopyTask,
    Curriculum,
    RepeatCopyTask,
    SequenceData,
    bits_per_character,
    get_task,
    sequence_loss,
)
from bioprop.recurrent.unroll import check_truncation, windows

__all__ = [
    "CELLS",
    "RecurrentCircuit",
    "BoundarySyntheticGradient",
    "SequenceReference",
    "full_bptt",
    "Batch",
    "CopyTask",
    "RepeatCopyTask",
    "Curriculum",
    "SequenceData",
    "bits_per_character",
    "get_task",
    "sequence_loss",
    "check_truncation",
    "windows",
]
