"""Analyses of differentiable plasticity: learned α and η over training, and what the
Hebbian trace stores.

* :func:`alpha_histogram`, :func:`alpha_quantiles` — the distribution of the plasticity
  coefficients α of a pathway at every record (``plasticity/<pathway>/alpha`` of a
  recording, dims ``step, post, pre``);
* :func:`eta` — the trace's rate η over training;
* :func:`pattern_angle` — ∠(Hebb, Σ_k p_k p_kᵀ) per episode: how closely the trace
  matches the sum of the stored patterns' outer products (the Hopfield matrix of the
  episode; 0° = exactly it, 90° = unrelated), and per pattern ∠(Hebb, p_k p_kᵀ), with
  :func:`bioprop.analysis.angle` (the one angle of the toolkit);
* :func:`recorded_pattern_angle` — the same angle as the rules record it on recording steps.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from bioprop.analysis.alignment import angle

__all__ = [
    "alpha_histogram",
    "alpha_quantiles",
    "eta",
    "pattern_angle",
    "recorded_pattern_angle",
]


def _group(rec, pathway: str) -> xr.Dataset:
    path = f"plasticity/{pathway}"
    try:
        return rec[path].to_dataset()
    except KeyError:
        have = list(rec["plasticity"].children) if "plasticity" in rec.children else []
        raise KeyError(
            f"the recording has no group {path!r} (a differentiable-plasticity run records "
            f"one per Hebbian pathway); it has {have or 'none'}"
        ) from None


def alpha_histogram(rec, pathway: str, bins: int | np.ndarray = 41) -> xr.DataArray:
    """Density of α over the synapses of ``pathway`` at every record, dims
    ``(step, alpha)`` (``alpha`` the bin centres; edges from the overall range when
    ``bins`` is a count)."""
    a = _group(rec, pathway)["alpha"].load()
    flat = a.values.reshape(a.sizes["step"], -1)
    if np.isscalar(bins) or np.ndim(bins) == 0:
        lo, hi = np.nanmin(flat), np.nanmax(flat)
        pad = 1e-12 if hi == lo else 0.0
        edges = np.linspace(lo - pad, hi + pad, int(bins) + 1)
    else:
        edges = np.asarray(bins, dtype=float)
    dens = np.stack([np.histogram(r[np.isfinite(r)], edges, density=True)[0] for r in flat])
    centres = 0.5 * (edges[1:] + edges[:-1])
    return xr.DataArray(
        dens,
        dims=("step", "alpha"),
        coords={"step": a["step"].values, "alpha": centres},
        name=f"density of alpha ({pathway})",
    )


def alpha_quantiles(
    rec, pathway: str, q: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
) -> xr.DataArray:
    """Quantiles of α over the synapses of ``pathway`` at every record, dims
    ``(step, quantile)``."""
    a = _group(rec, pathway)["alpha"].load()
    flat = a.values.reshape(a.sizes["step"], -1)
    vals = np.nanquantile(flat, q, axis=1).T
    return xr.DataArray(
        vals,
        dims=("step", "quantile"),
        coords={"step": a["step"].values, "quantile": list(q)},
        name=f"quantiles of alpha ({pathway})",
    )


def eta(rec, pathway: str) -> xr.DataArray:
    """η of ``pathway`` at every record (dim ``step``)."""
    return _group(rec, pathway)["eta"].load()


def recorded_pattern_angle(rec, pathway: str) -> xr.DataArray:
    """∠(Hebb, Σ_k p_k p_kᵀ) in degrees as recorded (dims ``step, sample``; NaN where
    the trace does not map the patterns onto themselves)."""
    return _group(rec, pathway)["pattern_angle"].load()


def pattern_angle(
    hebb: torch.Tensor, patterns: torch.Tensor, per_pattern: bool = False
) -> np.ndarray:
    """∠(Hebb_b, Σ_k p_{b,k} p_{b,k}ᵀ) in degrees per episode b (``per_pattern``:
    ∠(Hebb_b, p_{b,k} p_{b,k}ᵀ) per episode and pattern, shape (batch, K)).

    ``hebb`` (batch, post, pre) is a recurrent trace whose first n units are the pattern
    units (n the patterns' length, ``patterns`` (batch, K, n)); the angle is taken over the
    n × n block of those units."""
    if hebb.dim() != 3 or patterns.dim() != 3 or hebb.shape[0] != patterns.shape[0]:
        raise ValueError(
            f"hebb must be (batch, post, pre) and patterns (batch, K, n) with the same "
            f"batch, got {tuple(hebb.shape)} and {tuple(patterns.shape)}"
        )
    n = patterns.shape[2]
    if hebb.shape[1] < n or hebb.shape[2] < n:
        raise ValueError(
            f"patterns of {n} units do not fit a trace of shape {tuple(hebb.shape[1:])}"
        )
    block = hebb[:, :n, :n].detach().double().cpu()
    p = patterns.detach().double().cpu()
    outer = p[:, :, :, None] * p[:, :, None, :]  # (batch, K, n, n)
    if per_pattern:
        return np.array(
            [[angle(block[b], outer[b, k]) for k in range(p.shape[1])] for b in range(p.shape[0])]
        )
    return np.array([angle(block[b], outer[b].sum(0)) for b in range(p.shape[0])])
