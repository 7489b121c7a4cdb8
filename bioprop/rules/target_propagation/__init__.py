"""Target propagation on layered circuits: ``tp``, ``dtp`` (Lee et al. 2015), ``dtp-drl`` and
``ddtp-linear`` (Meulemans et al. 2020).

One concept per module:

* :mod:`.inverse` — the feedback pathways that carry targets: a learned inverse
  g(h) = σ(V h + c) (:class:`InversePathway`), the exact inverse of an invertible layer
  (:class:`ExactInversePathway`);
* :mod:`.base` — what the family shares: the first target, the layers' local losses, the
  schedules (parallel, alternating), the ``"inverse"`` optimizer group, the ``targets/<p>``
  recordings;
* :mod:`.tp` — ``tp`` and ``dtp`` with Lee et al.'s inverse loss;
* :mod:`.drl` — the difference reconstruction loss: ``dtp-drl`` and ``ddtp-linear``.

Equations ↔ code: ``docs/tp.md`` and ``docs/rules.md``; analyses of the recordings
(Gauss–Newton targets, angles, reconstruction errors): :mod:`bioprop.analysis.target_propagation`.
"""

from bioprop.rules.target_propagation.base import (
    FIRST_TARGETS,
    SCHEDULES,
    TargetPropagationRule,
    rate_gradient,
)
from bioprop.rules.target_propagation.drl import DTPDRL, DDTPLinear, fit_difference
from bioprop.rules.target_propagation.inverse import (
    INVERTIBLE,
    ExactInversePathway,
    InversePathway,
    inverse_activation,
)
from bioprop.rules.target_propagation.tp import (
    INVERSES,
    DifferenceTargetPropagation,
    LayerwiseTargetPropagation,
    TargetPropagation,
)

__all__ = [
    "FIRST_TARGETS",
    "INVERSES",
    "INVERTIBLE",
    "SCHEDULES",
    "DDTPLinear",
    "DTPDRL",
    "DifferenceTargetPropagation",
    "ExactInversePathway",
    "InversePathway",
    "LayerwiseTargetPropagation",
    "TargetPropagation",
    "TargetPropagationRule",
    "fit_difference",
    "inverse_activation",
    "rate_gradient",
]
