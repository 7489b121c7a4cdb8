"""Analyses of recordings: pure functions from xarray to xarray (the ``step`` dim is kept).

``alignment`` holds the angles every rule family shares (∠ of a rule's update or teaching
signal to its exact reference, Wᵀ vs B, pseudoinverse alignment, norm ratios, sign
concordance), re-exported here; ``dni``, ``ep``, ``rnn``, ``kickback``, ``plasticity`` and
``target_propagation`` hold family-specific views built on the same :func:`angle`.
"""

from bioprop.analysis import alignment, dni, ep, rnn, target_propagation
from bioprop.analysis.alignment import *  # noqa: F403  (the shared angles, listed once there)

__all__ = [*alignment.__all__, "dni", "ep", "rnn", "target_propagation"]
