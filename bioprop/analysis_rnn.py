"""Analyses of recurrent (truncated BPTT / DNI-through-time) recordings: xarray in, xarray out.

They read the groups written by :class:`bioprop.recurrent.recording.SequenceRecorder`
(``docs/rnn_dni.md``): ``interfaces/hidden`` (synthetic vs true boundary gradients, per
boundary) and ``curriculum`` (N over training).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

__all__ = ["boundary_gradients", "boundary_summary", "curriculum", "boundary_angle_from_vectors"]


def _group(rec: xr.DataTree, path: str) -> xr.Dataset:
    try:
        node = rec[path]
    except KeyError:
        raise KeyError(
            f"the recording has no {path!r} group; it was not written by a recurrent rule "
            "(bioprop.recurrent.train.train_curriculum with a Record)"
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
    a, b = g[which], g["true"]
    dot = (a * b).sum(("sample", "unit"), skipna=True)
    na = np.sqrt((a**2).sum(("sample", "unit"), skipna=True))
    nb = np.sqrt((b**2).sum(("sample", "unit"), skipna=True))
    with np.errstate(all="ignore"):
        cos = (dot / (na * nb)).clip(-1, 1)
        out = np.degrees(np.arccos(cos)).where((na > 0) & (nb > 0))
    return out.rename(f"angle_{which}")


def curriculum(rec: xr.DataTree) -> xr.Dataset:
    """The ``curriculum`` group: ``n``, ``error_bits`` and ``max_solved`` over ``step``."""
    return _group(rec, "curriculum")
