"""Analyses of recordings: pure functions from xarray to xarray (the ``step`` dim is kept).

``alignment`` holds the angles every rule family shares (∠ of a rule's update or teaching
signal to its exact reference, Wᵀ vs B, pseudoinverse alignment, norm ratios, sign
concordance); ``ep``, ``dni`` and ``rnn`` hold family-specific views built on the same
:func:`angle`.
"""

from bioprop.analysis import (
    dni,
    ep,
    rnn,
    target_propagation,  # noqa: E402,F401  (tp/dtp recordings)
)
from bioprop.analysis.alignment import (
    angle,
    cosine,
    delta_angle,
    feedback_of,
    norm_ratio,
    pseudoinverse_angle,
    pseudoinverse_update,
    reference_angle,
    sign_concordance,
    update_angle,
    update_norm_ratio,
    weight_alignment,
)

__all__ = [
    "angle",
    "cosine",
    "update_angle",
    "reference_angle",
    "delta_angle",
    "weight_alignment",
    "pseudoinverse_update",
    "pseudoinverse_angle",
    "norm_ratio",
    "update_norm_ratio",
    "sign_concordance",
    "feedback_of",
    "dni",
    "ep",
    "rnn",
    "target_propagation",
]
