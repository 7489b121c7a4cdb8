"""Analyses of synthetic-gradient recordings (dni, cdni, vfbn): xarray in, xarray out.

The synthetic-gradient rules record, per interface population l, the group
``interfaces/<l>`` with (see
:meth:`bioprop.rules.synthetic_gradients.InterfaceRule.record_variables`)

* ``synthetic`` — ĝ_l = M_l(h_l), the module's prediction of ∂ℓ_n/∂h_l,
* ``true``      — backprop's ∂ℓ_n/∂h_l for the same samples and weights,
* ``target``    — δ̃_l, the bootstrapped target the module regresses on (NaN on steps on
  which the module did not learn),

all ``(step, sample, neuron)``, plus scalars ``module_loss`` and ``updated``.  The functions
here compare them per interface and keep the ``step`` dim:

* ∠(ĝ, g) = arccos(⟨ĝ, g⟩ / (‖ĝ‖ ‖g‖)) in degrees (:func:`synthetic_angle`),
* ‖ĝ − g‖ / ‖g‖ (:func:`synthetic_relative_error`),
* ‖ĝ‖ / ‖g‖ (:func:`synthetic_norm_ratio`),

over ``(sample, neuron)``, or per sample.  NaN entries (unfilled samples, steps without a
synthetic gradient) are skipped; a step with nothing to compare is NaN.  The same
comparisons with ``"target"`` in place of ``"synthetic"`` measure how far the bootstrapped
targets are from the true gradient.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from bioprop.analysis.alignment import Rec, _tree, angle

__all__ = [
    "interfaces",
    "interface_signals",
    "synthetic_angle",
    "synthetic_relative_error",
    "synthetic_norm_ratio",
    "interface_summary",
]

_SIGNALS = ("synthetic", "target", "true")


def interfaces(rec: Rec) -> list[str]:
    """Interface populations recorded in ``rec`` (in the order they were recorded)."""
    tree = _tree(rec)
    if "interfaces" not in tree.children:
        return []
    return list(tree["interfaces"].children)


def interface_signals(rec: Rec, population: str) -> xr.Dataset:
    """The ``interfaces/<population>`` group as a Dataset (synthetic, true, target, ...)."""
    tree = _tree(rec)
    names = interfaces(tree)
    if population not in names:
        raise KeyError(
            f"the recording has no synthetic-gradient interface {population!r}; it has "
            f"{names or 'none (record a dni, cdni or vfbn run)'}"
        )
    return tree["interfaces"][population].to_dataset()


def _pair(rec: Rec, population: str, which: str) -> tuple[xr.DataArray, xr.DataArray]:
    if which not in ("synthetic", "target"):
        raise ValueError(f"which must be 'synthetic' or 'target', got {which!r}")
    ds = interface_signals(rec, population)
    for v in (which, "true"):
        if v not in ds:
            raise KeyError(
                f"interface {population!r} has no variable {v!r} (record with Record(samples>0))"
            )
    return ds[which], ds["true"]


def _dims(per_sample: bool) -> list[str]:
    return ["neuron"] if per_sample else ["sample", "neuron"]


def synthetic_angle(
    rec: Rec, population: str, per_sample: bool = False, which: str = "synthetic"
) -> xr.DataArray:
    """∠(ĝ_l, ∂ℓ/∂h_l) in degrees over ``(sample, neuron)`` (or per sample).

    ``which="target"`` compares the bootstrapped target δ̃_l instead of ĝ_l.
    """
    a, b = _pair(rec, population, which)
    out = angle(a, b, _dims(per_sample))
    out.name = f"angle({population}: {which}, true)"
    return out


def _norm(a: xr.DataArray, dims: list[str]) -> xr.DataArray:
    return np.sqrt((a.astype("float64") ** 2).sum(dims))


def _masked_pair(rec: Rec, population: str, which: str, per_sample: bool):
    """The synthetic and true gradients aligned, zeroed where either is missing; the reduced
    dims; and ‖g‖ over them, NaN where it is 0 or nothing was recorded."""
    a, b = xr.align(*_pair(rec, population, which), join="inner")
    mask = a.notnull() & b.notnull()
    a0, b0 = a.where(mask, 0.0), b.where(mask, 0.0)
    dims = _dims(per_sample)
    nb = _norm(b0, dims)
    return a0, b0, dims, nb.where((nb > 0) & mask.any(dims))


def synthetic_relative_error(
    rec: Rec, population: str, per_sample: bool = False, which: str = "synthetic"
) -> xr.DataArray:
    """‖ĝ_l − g_l‖ / ‖g_l‖ over ``(sample, neuron)`` (or per sample); g = backprop's ∂ℓ/∂h_l."""
    a0, b0, dims, nb = _masked_pair(rec, population, which, per_sample)
    out = _norm(a0 - b0, dims) / nb
    out.name = f"relative error({population}: {which} vs true)"
    return out


def synthetic_norm_ratio(
    rec: Rec, population: str, per_sample: bool = False, which: str = "synthetic"
) -> xr.DataArray:
    """‖ĝ_l‖ / ‖g_l‖ over ``(sample, neuron)`` (or per sample)."""
    a0, b0, dims, nb = _masked_pair(rec, population, which, per_sample)
    out = _norm(a0, dims) / nb
    out.name = f"norm ratio({population}: {which}/true)"
    return out


def interface_summary(rec: Rec, which: str = "synthetic") -> xr.Dataset:
    """Angle, relative error and norm ratio for every interface: a Dataset over
    ``(interface, step)`` (interfaces recorded on different steps are aligned by an outer
    join, NaN where missing)."""
    tree = _tree(rec)
    names = interfaces(tree)
    if not names:
        raise KeyError("the recording has no synthetic-gradient interfaces (a dni/cdni/vfbn run)")
    parts = []
    for pop in names:
        parts.append(
            xr.Dataset(
                {
                    "angle": synthetic_angle(tree, pop, which=which),
                    "relative_error": synthetic_relative_error(tree, pop, which=which),
                    "norm_ratio": synthetic_norm_ratio(tree, pop, which=which),
                }
            ).expand_dims(interface=[pop])
        )
    out = xr.concat(parts, dim="interface", join="outer")
    out["angle"].attrs["units"] = "degree"
    out.attrs["compared"] = f"{which} vs true (backprop) dl/dh"
    return out
