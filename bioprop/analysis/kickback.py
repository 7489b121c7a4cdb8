"""Coherence analysis of kickback recordings: xarray in, xarray out (``step`` kept).

On recording steps the ``kickback`` rule (:mod:`bioprop.rules.kickback`) records, in the
group ``kickback``, per hidden population (dim ``hidden``):

* ``coherent_fraction`` — the fraction of (sample, unit) pairs whose influence on the layer
  above is positive, τ_j = Σ_k W_kj f'(u_k) > 0 (coherent units, our reading of the paper);
* ``sign_agreement`` — the fraction of active (sample, unit) pairs whose teaching signal
  δ_j has the sign of bp's for the same batch and weights;
* ``delta_angle`` — ∠(δ_kickback, δ_bp) over the batch, degrees;

and for the whole circuit ``coherent_fraction_all`` and ``angle_to_bp`` = ∠(Δθ_kickback,
Δθ_bp) over every plastic forward parameter, degrees (:func:`bioprop.analysis.angle`).
The functions here read them with the population names as the ``hidden`` coordinate.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from bioprop.analysis.alignment import Rec, _tree

__all__ = [
    "kickback_signals",
    "coherence",
    "angle_to_bp",
    "sign_agreement",
    "delta_angle",
    "summary",
]


def kickback_signals(rec: Rec) -> xr.Dataset:
    """The ``kickback`` group as a Dataset, with ``hidden`` labelled by population name."""
    tree = _tree(rec)
    if "kickback" not in tree.children:
        rule = tree.attrs.get("rule", "?")
        raise KeyError(
            f"the recording has no 'kickback' group (rule {rule!r}); record a run of the "
            "'kickback' rule with bioprop.Record"
        )
    ds = tree["kickback"].to_dataset()
    if "hidden" in ds.dims and "coherent_fraction" in ds:
        names = ds["coherent_fraction"].attrs.get("hidden_populations")
        if isinstance(names, str):
            names = json.loads(names)
        if names is not None and len(names) == ds.sizes["hidden"]:
            ds = ds.assign_coords(hidden=list(names))
    return ds


def coherence(rec: Rec, overall: bool = False) -> xr.DataArray:
    """Fraction of coherent units over ``step``: per hidden population (``step, hidden``),
    or over every hidden unit with ``overall=True`` (``step``)."""
    ds = kickback_signals(rec)
    return ds["coherent_fraction_all" if overall else "coherent_fraction"]


def angle_to_bp(rec: Rec) -> xr.DataArray:
    """∠(kickback's whole update, bp's gradient) in degrees over ``step`` (NaN on records
    taken without the shadow reference)."""
    return kickback_signals(rec)["angle_to_bp"]


def sign_agreement(rec: Rec) -> xr.DataArray:
    """Fraction of active units whose δ has bp's sign, over ``(step, hidden)``."""
    return kickback_signals(rec)["sign_agreement"]


def delta_angle(rec: Rec) -> xr.DataArray:
    """∠(δ_kickback, δ_bp) per hidden population over ``(step, hidden)``, degrees."""
    return kickback_signals(rec)["delta_angle"]


def summary(rec: Rec, last: int = 5) -> dict[str, float]:
    """Means over the last ``last`` records (NaN skipped) of the overall coherent fraction,
    the angle to bp, and per hidden population the coherent fraction and sign agreement."""
    ds = kickback_signals(rec)
    tail = ds.isel(step=slice(-last, None))
    out = {
        "coherent_fraction": float(tail["coherent_fraction_all"].mean(skipna=True)),
        "angle_to_bp": float(tail["angle_to_bp"].mean(skipna=True)),
    }
    for name in np.atleast_1d(ds["hidden"].values) if "hidden" in ds.coords else []:
        sel = tail.sel(hidden=name)
        out[f"coherent_fraction[{name}]"] = float(sel["coherent_fraction"].mean(skipna=True))
        out[f"sign_agreement[{name}]"] = float(sel["sign_agreement"].mean(skipna=True))
    return out
