"""The Hebbian trace of a plastic synapse and its two update forms (Miconi et al. 2018).

A plastic pathway ``pre -> post`` keeps, per sample of the batch, a fast synaptic state
Hebb (batch, post, pre) — the *trace* — that starts at zero at the beginning of every episode
and follows one of two local rules, each synapse reading only its own pre- and
post-synaptic rates x_j (pre, the rate the pathway multiplied at this step) and y_i (post,
the rate it produced) and its own trace:

* ``"decay"`` (Miconi et al. 2018, eq. 2)::

      Hebb_ij ← (1 − η) Hebb_ij + η · y_i x_j

* ``"oja"`` (Oja's rule, Miconi et al. 2018, eq. 3)::

      Hebb_ij ← Hebb_ij + η · y_i (x_j − y_i Hebb_ij)

η ∈ [0, 1] is the trace's rate.  :func:`eligibility` gives ∂Hebb/∂η with the rates held
fixed — the forward sensitivity a rule without backprop through time uses to train η
(``dp-fa``, :mod:`bioprop.rules.plasticity`).
"""

from __future__ import annotations

import math

import torch

__all__ = ["FORMS", "check_form", "check_eta", "update", "eligibility"]

#: the update forms of the Hebbian trace
FORMS = ("decay", "oja")


def check_form(form: str) -> str:
    """``form`` if it is one of :data:`FORMS`; a ``ValueError`` naming them otherwise."""
    if form not in FORMS:
        raise ValueError(
            f"unknown Hebbian trace form {form!r}; choose 'decay' "
            "(Hebb ← (1 − η) Hebb + η y xᵀ) or 'oja' (Hebb ← Hebb + η y (x − y Hebb))"
        )
    return form


def check_eta(eta: float) -> float:
    """η as a float, refused unless it is a finite number in [0, 1] (a rate of a trace that
    decays as (1 − η)^t: outside [0, 1] the trace oscillates or grows without bound)."""
    try:
        value = float(eta)
    except (TypeError, ValueError):
        raise ValueError(f"η (eta) must be a number in [0, 1], got {eta!r}") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"η (eta) must be in [0, 1] (the trace's rate: Hebb ← (1 − η) Hebb + η y xᵀ), "
            f"got {value!r}"
        )
    return value


def update(
    hebb: torch.Tensor, pre: torch.Tensor, post: torch.Tensor, eta: torch.Tensor, form: str
) -> torch.Tensor:
    """One step of the trace: ``hebb`` (batch, post, pre), ``pre`` (batch, pre), ``post``
    (batch, post), ``eta`` a scalar tensor (differentiable: BPTT trains it).

    decay: Hebb ← (1 − η) Hebb + η y xᵀ;   oja: Hebb ← Hebb ⊙ (1 − η y²) + η y xᵀ
    (the Oja form rearranged: Hebb + η y (x − y Hebb) = Hebb (1 − η y²) + η y x).
    The outer product y xᵀ is never formed on its own: ``addcmul`` broadcasts (η y) ⊗ x
    into the sum in one pass.
    """
    y = post.unsqueeze(2)  # (batch, post, 1)
    x = pre.unsqueeze(1)  # (batch, 1, pre)
    if form == "decay":
        return torch.addcmul(hebb * (1.0 - eta), eta * y, x)
    return torch.addcmul(hebb * (1.0 - eta * y * y), eta * y, x)


def eligibility(
    e: torch.Tensor,
    hebb: torch.Tensor,
    pre: torch.Tensor,
    post: torch.Tensor,
    eta: torch.Tensor,
    form: str,
) -> torch.Tensor:
    """The next ∂Hebb/∂η with the rates held fixed, from the current one ``e`` and the trace
    ``hebb`` *before* this step's update (every argument as in :func:`update`)::

        decay:  E ← (1 − η) E + (y xᵀ − Hebb)
        oja:    E ← (1 − η y²) E + y (x − y Hebb)

    (the derivative of :func:`update` with respect to η, through its explicit η and through
    Hebb; E = 0 at the start of an episode)."""
    y = post.unsqueeze(2)
    x = pre.unsqueeze(1)
    if form == "decay":
        return torch.addcmul(e * (1.0 - eta) - hebb, y, x)
    y2 = y * y
    return torch.addcmul(e * (1.0 - eta * y2) - y2 * hebb, y, x)
