"""The recurrent family's configurations for ``bioprop compare``: copy and repeat copy.

Jaderberg et al. 2017, §3.2 (Table 2) as ``circuits/dni_copy.py`` runs it: an LSTM of 64
units, batches of 32 sequences, Adam at lr 1e-2 for the core and the module, gradient-norm
clip 10, the curriculum from N = 1 (0.15 bits per character over 20 batches), T = 3.
:mod:`bioprop.experiments.tasks` registers the tasks ``copy`` and ``repeat-copy`` from these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bioprop.recurrent.circuit import RecurrentCircuit
from bioprop.recurrent.tasks import Curriculum, SequenceData, get_task

__all__ = ["RULES", "HIDDEN", "T", "circuit", "load", "kind_options", "quick_kind_options"]

RULES = ("bptt", "dni", "dni-aux")
HIDDEN = 64
T = 3
DESCRIPTIONS = {
    "copy": "copy N random 8-bit characters after a delimiter (Jaderberg et al. 2017 §3.2), "
    "LSTM 64, curriculum on N",
    "repeat-copy": "repeat N characters R ~ U{1..3} times, then an end marker (Jaderberg et "
    "al. 2017 §3.2), LSTM 64, curriculum on N",
}


def circuit(task: str) -> Callable[[int], RecurrentCircuit]:
    """``seed -> RecurrentCircuit`` sized for ``task`` (LSTM of :data:`HIDDEN` units)."""
    t = get_task(task)

    def build(seed: int) -> RecurrentCircuit:
        return RecurrentCircuit(t.n_in, HIDDEN, t.n_out, cell="lstm", seed=seed)

    return build


def load(task: str) -> Callable[[int, bool], SequenceData]:
    """``(seed, quick) -> SequenceData``: the task and the paper's curriculum (procedural:
    the batches are drawn from the run's seed)."""

    def make(seed: int, quick: bool) -> SequenceData:
        return SequenceData(get_task(task), Curriculum(n_start=1, threshold=0.15, window=20))

    return make


def kind_options() -> dict[str, Any]:
    """``bioprop.train`` options of the full budget."""
    return {
        "steps": 3000,
        "batch_size": 32,
        "clip": 10.0,
        "optimizer": ("adam", {"lr": 1e-2, "module_lr": 1e-2}),
    }


def quick_kind_options() -> dict[str, Any]:
    """Overrides under ``--quick`` (seconds per rule)."""
    return {"steps": 40}


def rule_options() -> dict[str, dict[str, Any]]:
    """The truncation length of every rule of the family."""
    return {r: {"T": T} for r in RULES}
