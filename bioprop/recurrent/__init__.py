"""Recurrent circuits unrolled in time, truncated BPTT and synthetic gradients through time.

Jaderberg et al. 2017, §3.2–3.3: an LSTM (or tanh RNN) trained with truncated BPTT over
windows of T steps, with a synthetic gradient at each window boundary standing in for all
future error (``dni``), plus an auxiliary prediction further ahead (``dni-aux``).

Modules (one concept each): :mod:`~bioprop.recurrent.circuit` (the recurrent circuit),
:mod:`~bioprop.recurrent.unroll` (truncation windows), :mod:`~bioprop.recurrent.rules`
(``bptt``, ``dni``, ``dni-aux``, their registry and the full-BPTT reference),
:mod:`~bioprop.recurrent.tasks` (copy, repeat copy, curriculum),
:mod:`~bioprop.recurrent.recording` (HDF5 recordings with boundary gradients),
:mod:`~bioprop.recurrent.train` (the curriculum training loop) and
:mod:`~bioprop.recurrent.two_networks` (two RNNs joined by a DNI).  See ``docs/rnn_dni.md``.
"""

from bioprop.recurrent.circuit import CELLS, RecurrentCircuit
from bioprop.recurrent.rules import (
    BPTT,
    DNI,
    BoundarySyntheticGradient,
    DNIAux,
    RecurrentRule,
    SequenceSignals,
    full_bptt,
    get,
    names,
)
from bioprop.recurrent.tasks import (
    Batch,
    CopyTask,
    Curriculum,
    RepeatCopyTask,
    bits_per_character,
    get_task,
    sequence_loss,
)
from bioprop.recurrent.train import CurriculumRun, train_curriculum
from bioprop.recurrent.unroll import check_truncation, windows

__all__ = [
    "CELLS",
    "RecurrentCircuit",
    "RecurrentRule",
    "BPTT",
    "DNI",
    "DNIAux",
    "BoundarySyntheticGradient",
    "SequenceSignals",
    "full_bptt",
    "get",
    "names",
    "Batch",
    "CopyTask",
    "RepeatCopyTask",
    "Curriculum",
    "bits_per_character",
    "get_task",
    "sequence_loss",
    "check_truncation",
    "windows",
    "CurriculumRun",
    "train_curriculum",
]
