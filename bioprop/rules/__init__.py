"""Learning rules, found by name: ``bioprop.rules.get("fa")``.

See ``docs/rules.md`` for the glossary from each paper's equations to the
code that computes them.
"""

from bioprop.rules import backprop, baselines, feedback_alignment  # noqa: F401  (register)
from bioprop.rules.backprop import Backprop, reference
from bioprop.rules.base import Rule, Signals, write_pathway_grads
from bioprop.rules.baselines import NodePerturbation, Shallow
from bioprop.rules.feedback_alignment import (
    DirectFeedbackAlignment,
    FeedbackAlignment,
    SignSymmetry,
)
from bioprop.rules.registry import describe, get, names, register

__all__ = [
    "Rule",
    "Signals",
    "write_pathway_grads",
    "reference",
    "get",
    "names",
    "describe",
    "register",
    "Backprop",
    "FeedbackAlignment",
    "DirectFeedbackAlignment",
    "SignSymmetry",
    "Shallow",
    "NodePerturbation",
]
