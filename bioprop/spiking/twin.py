"""Rate twins of a spiking circuit, and backprop's update on the rate description.

:func:`rate_twin` builds the layered torch rate circuit with a spiking chain's population
sizes (and names), which ``circuits/spiking_feedback_alignment.py`` trains with ``fa`` —
its B replaced by the spiking circuit's B — and with ``bp`` on the very samples, in the very
order, that the spiking schedule presented.

:func:`bp_update_at_rates` is the backprop update of the rate description of a spiking
circuit at its measured rates (the reference of the sign-agreement test)::

    e_k = y_k − r_k / ν_y,   δ_o = e ⊙ 1[r_o > 0],   δ_h = 1[r_h > 0] ⊙ W_outᵀ δ_o
    ΔW_out = δ_o r_hᵀ,       ΔW_in = δ_h xᵀ
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bioprop.core.circuit import Circuit

__all__ = ["rate_twin", "bp_update_at_rates"]


def rate_twin(
    spiking: Circuit | Sequence[int], activation: str = "logistic", seed: int = 0
) -> Circuit:
    """A layered rate circuit (biases, default init) with the sizes of a spiking chain
    (a circuit, or its sizes input first)."""
    if isinstance(spiking, Circuit):
        sizes = [spiking.populations[n].size for n in spiking.order()]
    else:
        sizes = list(spiking)
    return Circuit.layered(sizes, activation=activation, seed=seed)


def bp_update_at_rates(
    w_out: np.ndarray,
    x: np.ndarray,
    r_hidden: np.ndarray,
    r_out: np.ndarray,
    y: np.ndarray,
    target_rate: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(ΔW_in, ΔW_out) of backprop on the rate description at measured rates (module
    docstring); ``x`` are the input values, rates in Hz, ``target_rate`` ν_y in Hz."""
    e = np.asarray(y) - np.asarray(r_out) / target_rate
    d_out = e * (np.asarray(r_out) > 0)
    d_hid = (np.asarray(r_hidden) > 0) * (np.asarray(w_out).T @ d_out)
    return np.outer(d_hid, x), np.outer(d_out, r_hidden)
