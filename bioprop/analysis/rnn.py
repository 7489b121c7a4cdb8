"""Analyses of recurrent (truncated BPTT / DNI-through-time) recordings: xarray in, xarray out.

They read the groups that :func:`bioprop.train` writes for recurrent circuits
(:mod:`bioprop.recurrent.recording`, ``docs/rnn_dni.md``): ``interfaces/hidden`` (synthetic
vs true boundary gradients, per boundary) and ``curriculum`` (N over training).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from bioprop.analysis.alignment import angle

__all__ = [
    "boundary_gradients",
    "boundary_summary",
    "curriculum",
    "boundary_angle_from_vectors",
    "core_update_angle",
    "core_update_angle_by_n",
]


def _group(rec: xr.DataTree, path: str) -> xr.Dataset:
    try:
        node = rec[path]
    except KeyError:
        raise KeyError(
            f"the recording has no {path!r} group; it was not written by a recurrent rule "
            "(bioprop.train on a RecurrentCircuit with record=bioprop.Record(...))"
        ) from None
    return node.to_dataset()


def boundary_gradients(rec: xr.DataTree) -> xr.Dataset:
    """The ``interfaces/hidden`` group: ``synthetic``, ``true``, ``target``
    ``(step, boundary, sample, unit)``, ``angle`` and ``relative_error`` ``(step, boundary)``."""
    return _group(rec, "interfaces/hidden")


def boundary_summary(rec: xr.DataTree) -> xr.Dataset:
    """Per record: ∠(δ̂_b, g*_b) and ‖δ̂_b − g*_b‖/‖g*_b‖ averaged over the sequence's
    boundaries (NaN boundaries skipped), and the number of boundaries; dims ``step``."""
    g = boundary_gradients(rec)
    valid = np.isfinite(g["relative_error"])
    with np.errstate(all="ignore"):
        return xr.Dataset(
            {
                "angle": g["angle"].mean("boundary", skipna=True),
                "relative_error": g["relative_error"].mean("boundary", skipna=True),
                "boundaries": valid.sum("boundary"),
            }
        )


def boundary_angle_from_vectors(rec: xr.DataTree, which: str = "synthetic") -> xr.DataArray:
    """∠(``which``, true) in degrees from the stored per-sample vectors (the recorded samples
    only), per ``(step, boundary)``; ``which="target"`` compares M's bootstrapped target."""
    g = boundary_gradients(rec)
    out = angle(g[which], g["true"], ["sample", "unit"])
    return out.rename(f"angle_{which}")


def curriculum(rec: xr.DataTree) -> xr.Dataset:
    """The ``curriculum`` group: ``n``, ``error_bits`` and ``max_solved`` over ``step``."""
    return _group(rec, "curriculum")


def _reference_pathways(rec: xr.DataTree, pathways: list[str] | None) -> list[str]:
    try:
        node = rec["pathways"]
    except KeyError:
        raise KeyError("the recording has no 'pathways' group") from None
    have = [
        n
        for n, child in node.children.items()
        if {"weight_update", "weight_update_bp"} <= set(child.to_dataset().data_vars)
    ]
    if pathways is None:
        # the read-out's gradient is exact under every truncation: compare the core only
        have = [n for n in have if node[n].attrs.get("target") != "output"]
        if not have:
            raise ValueError(
                "no pathway of this recording has both weight_update and weight_update_bp; "
                "record with the full-BPTT reference (bioprop.train(..., record=Record(...)))"
            )
        return have
    missing = [n for n in pathways if n not in have]
    if missing:
        raise ValueError(
            f"pathways {missing} have no weight_update and weight_update_bp in this recording; "
            f"these do: {have}"
        )
    return list(pathways)


def core_update_angle(rec: xr.DataTree, pathways: list[str] | None = None) -> xr.DataArray:
    """∠(Δθ_rule, Δθ_BPTT) per record, in degrees: the rule's summed window update of the
    core against full (untruncated) BPTT's for the same batch and weights,

        cos = ⟨−ĝ, −∂L/∂θ⟩ / (‖ĝ‖ ‖∂L/∂θ‖),   θ = weights and biases of ``pathways``

    (default: every pathway into the recurrent population with both ``weight_update`` and
    ``weight_update_bp`` — the read-out's gradient is exact under any truncation; recordings
    made before the recurrent pathways carried the reference have the input pathways only).
    0° means the truncated rule moved the weights as full BPTT would; bptt's own angle
    shows how much of the gradient the truncation loses.  NaN where either update is zero.
    """
    names = _reference_pathways(rec, pathways)
    rule_parts, bp_parts = [], []
    for n in names:
        ds = rec["pathways"][n].to_dataset()
        pairs = [("weight_update", "weight_update_bp", ("post", "pre"))]
        if {"bias_update", "bias_update_bp"} <= set(ds.data_vars):
            pairs.append(("bias_update", "bias_update_bp", ("post",)))
        for rule_var, bp_var, dims in pairs:
            rule_parts.append(ds[rule_var].stack(entry=dims, create_index=False))
            bp_parts.append(ds[bp_var].stack(entry=dims, create_index=False))
    # one vector θ per record: every pathway's weights and biases, end to end
    out = angle(xr.concat(rule_parts, "entry"), xr.concat(bp_parts, "entry"), ["entry"])
    out.attrs["pathways"] = ", ".join(names)
    return out.rename("core_update_angle")


def core_update_angle_by_n(rec: xr.DataTree, pathways: list[str] | None = None) -> xr.DataArray:
    """Median of :func:`core_update_angle` over the records taken at each curriculum N
    (dim ``n``), so that rules compare on equally long sequences."""
    ang = core_update_angle(rec, pathways)
    n = curriculum(rec)["n"]
    ang = ang.assign_coords(n=("step", n.values.astype(int)))
    return ang.groupby("n").median(skipna=True).rename("core_update_angle")
