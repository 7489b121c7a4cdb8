"""Analyses of equilibrium-propagation recordings: xarray in, xarray out, ``step`` kept.

The ``ep`` rule records, on recording steps, the gradient it approximates — backprop
through time over the free-phase settling (``weight_update_bptt``, ``bias_update_bptt``
in each pathway group, ``delta_bptt`` in each population group) — and the settling
itself (``trajectory`` per population, ``energy``/``cost``/``total_energy`` in
``/settling``).  See ``docs/ep.md``.

Angles are in degrees (signed cosine, 0° parallel, 90° orthogonal), as in
:mod:`bioprop.analysis.alignment`.  (``weight_update_bp`` in an EP recording is the *feedforward
twin's* backprop gradient, from the trainer's shadow reference; ``update_angle`` there
compares EP with that, these functions with BPTT on the settling circuit itself.)
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from bioprop.analysis.alignment import Rec, _node, _tree, _var, angle

__all__ = [
    "bptt_angle",
    "bptt_angles",
    "bptt_relative_error",
    "bptt_delta_angle",
    "trajectory",
    "settling_energy",
]


def _ep_pathways(rec: Rec) -> list[str]:
    tree = _tree(rec)
    return [
        name
        for name, node in tree["pathways"].children.items()
        if "weight_update_bptt" in node.to_dataset()
    ]


def bptt_angle(rec: Rec, pathway: str, bias: bool = False) -> xr.DataArray:
    """∠(ΔW_EP, −∂L/∂W_BPTT) over ``(post, pre)`` per recorded step (``bias=True``: the
    bias updates over ``post``)."""
    ds = _node(rec, pathway, "pathways")
    if bias:
        out = angle(
            _var(ds, "bias_update", pathway), _var(ds, "bias_update_bptt", pathway), ["post"]
        )
    else:
        out = angle(
            _var(ds, "weight_update", pathway),
            _var(ds, "weight_update_bptt", pathway),
            ["post", "pre"],
        )
    out.name = f"angle({pathway}: ep, bptt)"
    return out


def bptt_angles(rec: Rec) -> xr.Dataset:
    """:func:`bptt_angle` of every pathway that has a BPTT reference, one variable per
    layer (pathway name), over ``step``."""
    tree = _tree(rec)
    names = _ep_pathways(tree)
    if not names:
        raise KeyError(
            "this recording has no weight_update_bptt: record an 'ep' run with "
            "record_bptt=True (the default)"
        )
    return xr.Dataset({n: bptt_angle(tree, n) for n in names})


def bptt_relative_error(rec: Rec, pathway: str) -> xr.DataArray:
    """‖ΔW_EP − ΔW_BPTT‖ / ‖ΔW_BPTT‖ per recorded step (NaN where the reference is 0)."""
    ds = _node(rec, pathway, "pathways")
    a = _var(ds, "weight_update", pathway).astype("float64")
    b = _var(ds, "weight_update_bptt", pathway).astype("float64")
    a, b = xr.align(a, b, join="inner")
    num = np.sqrt(((a - b) ** 2).sum(["post", "pre"]))
    den = np.sqrt((b**2).sum(["post", "pre"]))
    out = num / den.where(den > 0)
    out.name = f"relative error({pathway}: ep vs bptt)"
    return out


def bptt_delta_angle(rec: Rec, population: str, per_sample: bool = False) -> xr.DataArray:
    """∠(δ_EP, δ_BPTT) of a population's teaching signals, δ_EP = (ρ⁰ − ρ^β)/β and
    δ_BPTT = ∂ℓ_n/∂b through the settling, over ``(sample, neuron)`` (or per sample)."""
    ds = _node(rec, population, "populations")
    dims = ["neuron"] if per_sample else ["sample", "neuron"]
    out = angle(_var(ds, "delta", population), _var(ds, "delta_bptt", population), dims)
    out.name = f"angle({population}: delta ep, bptt)"
    return out


def _with_phase(a: xr.DataArray, tree: xr.DataTree) -> xr.DataArray:
    if "settling" in tree.children and "phase" in tree["settling"].to_dataset():
        phase = tree["settling"]["phase"]
        a = a.assign_coords(phase=phase.isel(step=-1, drop=True).astype(int))
    return a.assign_coords(time=np.arange(a.sizes["time"]))


def trajectory(rec: Rec, population: str, sample: int | None = 0) -> xr.DataArray:
    """The recorded state trajectory u(t) of a population: ``(step, time, neuron)`` for one
    sample (``sample=None``: all recorded samples, ``(step, time, sample, neuron)``).
    ``time`` gets a ``phase`` coordinate (0 start/free, 1 nudged, 2 −β phase)."""
    tree = _tree(rec)
    ds = _node(tree, population, "populations")
    a = _var(ds, "trajectory", population)
    if sample is not None:
        a = a.isel(sample=sample)
    return _with_phase(a, tree)


def settling_energy(rec: Rec, which: str = "energy", sample: int | None = None) -> xr.DataArray:
    """E (``which="energy"``), C (``"cost"``) or F = E + βC (``"total_energy"``) over
    settling time: ``(step, time, sample)``, or ``(step, time)`` for one ``sample``."""
    tree = _tree(rec)
    if "settling" not in tree.children:
        raise KeyError("this recording has no /settling group: record an 'ep' run")
    ds = tree["settling"].to_dataset()
    a = _var(ds, which, "settling")
    if sample is not None:
        a = a.isel(sample=sample)
    return _with_phase(a, tree)
