"""Learning rules, found by name: ``bioprop.rules.get("fa")``.

Every module of this package is imported here, so a rule registers itself
with ``@register`` just by living in ``bioprop/rules/``.  See
``docs/rules.md`` for the glossary from each paper's equations to the code.
"""

import importlib
import pkgutil

from bioprop.rules import backprop, baselines, feedback_alignment  # noqa: F401  (order)
from bioprop.rules.backprop import Backprop
from bioprop.rules.baselines import NodePerturbation, Shallow
from bioprop.rules.contract import (
    KINDS,
    Rule,
    Signals,
    UnsupportedCircuitError,
    write_pathway_grads,
)
from bioprop.rules.feedback_alignment import (
    DirectFeedbackAlignment,
    FeedbackAlignment,
    SignSymmetry,
)
from bioprop.rules.reference import Reference
from bioprop.rules.reference import backprop as bp_reference
from bioprop.rules.registry import describe, entries, get, kinds_of, names, register

for _m in pkgutil.iter_modules(__path__):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")

__all__ = [
    "Rule",
    "Signals",
    "write_pathway_grads",
    "Reference",
    "bp_reference",
    "KINDS",
    "UnsupportedCircuitError",
    "get",
    "names",
    "describe",
    "entries",
    "kinds_of",
    "register",
    "Backprop",
    "FeedbackAlignment",
    "DirectFeedbackAlignment",
    "SignSymmetry",
    "Shallow",
    "NodePerturbation",
]
