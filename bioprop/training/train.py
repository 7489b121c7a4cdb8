"""The one entry point: ``bioprop.train(circuit, rule, data, ...)`` for every circuit kind.

The user's script is the same whatever the family; the circuit's kind picks the loop:

=========== ============================================== =====================================
kind        loop                                           data
=========== ============================================== =====================================
layered     :func:`bioprop.training.loop.fit` (batches)    :class:`bioprop.data.Dataset`
settling    the same batch loop (the rule settles)         :class:`bioprop.data.Dataset`
recurrent   :func:`bioprop.recurrent.loop.fit` (windows    :class:`bioprop.recurrent.SequenceData`
            of T over sequences, curricula)                (a sequence task + curriculum)
spiking     :func:`bioprop.spiking.loop.fit` (one brian2   :class:`bioprop.data.Dataset`
            run over a presentation schedule)
=========== ============================================== =====================================

A rule given by name is looked up for the circuit's kind (``"dni"`` is a different rule on
a layered and on a recurrent circuit); a rule that cannot train the circuit is refused
before anything runs, with the rule's own words for what it needs.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from bioprop.core.circuit import Circuit
from bioprop.rules.contract import Rule, UnsupportedCircuitError
from bioprop.rules.registry import get as get_rule
from bioprop.rules.registry import kinds_of
from bioprop.training.run import Run

__all__ = ["train", "LOOPS", "resolve_rule", "check_device"]

#: circuit kind → "module:function" of the loop that trains it
LOOPS = {
    "layered": "bioprop.training.loop:fit",
    "settling": "bioprop.training.loop:fit",
    "recurrent": "bioprop.recurrent.loop:fit",
    "spiking": "bioprop.spiking.loop:fit",
}


def check_device(device) -> torch.device:
    """``device`` as a ``torch.device``, refused with a clear message when torch cannot
    parse it or cannot use it here (no CUDA, or a CUDA index past the last GPU)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device {device!r} is not a torch device; use 'cpu' or 'cuda[:N]'"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} was asked for but torch sees no CUDA device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
    elif dev.type != "cpu":
        raise ValueError(f"device {device!r}: bioprop runs on 'cpu' or 'cuda[:N]'")
    return dev


def resolve_rule(rule: Rule | str, circuit: Circuit) -> Rule:
    """A rule instance for ``circuit``: a name is looked up for the circuit's kind; the
    rule is checked against the circuit (:meth:`Rule.check`)."""
    if not isinstance(circuit, Circuit):
        raise TypeError(f"circuit must be a bioprop.Circuit, got {type(circuit).__name__}")
    if isinstance(rule, str):
        kinds = kinds_of(rule)
        if kinds and circuit.kind not in kinds:
            raise UnsupportedCircuitError(
                f"rule {rule!r} trains {' or '.join(kinds)} circuits, but this circuit is "
                f"{circuit.kind}; build a {kinds[0]} circuit for it (see `bioprop rules`)"
            )
        rule = get_rule(rule, kind=circuit.kind)
    if not isinstance(rule, Rule):
        raise TypeError(f"rule must be a bioprop rule or a rule name, got {type(rule).__name__}")
    rule.check(circuit)
    return rule


def train(circuit: Circuit, rule: Rule | str, data: Any, **options: Any) -> Run:
    """Train ``circuit`` with ``rule`` on ``data`` and return a :class:`Run`.

    Parameters
    ----------
    circuit
        A circuit of any kind (modified in place).
    rule
        A rule instance or registry name (looked up for ``circuit.kind``).
    data
        What the circuit's loop consumes (see the module docstring).
    **options
        The loop's options; shared by every loop: ``loss``, ``optimizer``, ``seed``,
        ``record`` (a :class:`bioprop.Record`), ``device``, ``max_steps``, ``progress``;
        batch loops add ``epochs``, ``batch_size``, ``checkpoint``, ``resume``; the
        recurrent loop ``steps``, ``batch_size``, ``clip``; the spiking loop its schedule
        options.  See each loop's docstring.
    """
    rule = resolve_rule(rule, circuit)
    if "device" in options:
        check_device(options["device"])
    module, func = LOOPS[circuit.kind].split(":")
    loop = getattr(importlib.import_module(module), func)
    return loop(circuit, rule, data, **options)
