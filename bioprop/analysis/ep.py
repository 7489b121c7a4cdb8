"""Analyses of equilibrium-propagation recordings: xarray in, xarray out, ``step`` kept.

On recording steps the trainer stores, beside the ``ep`` rule's update, the settling
family's exact reference for the same batch and weights: backprop through time over the
free-phase settling (``weight_update_bp``, ``bias_update_bp`` in each pathway group,
``delta_bp`` in each population group; ``Reference.method`` "bptt through the settling").
The rule adds the settling itself (``trajectory`` per population, ``energy``/``cost``/
``total_energy`` in ``/settling``).  See ``docs/ep.md``.

Recordings made before the reference moved into the trainer's shadow kept the BPTT update
as ``weight_update_bptt``, ``bias_update_bptt`` and ``delta_bptt`` (their ``*_bp`` was the
feedforward twin's bp); these functions read those when they are there.

Angles are in degrees (signed cosine, 0° parallel, 90° orthogonal), as in
:mod:`bioprop.analysis.alignment`.
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


def _is_settling(tree: xr.DataTree) -> bool:
    return tree.attrs.get("rule_kind") == "settling"


def _ref(ds: xr.Dataset, var: str, name: str, tree: xr.DataTree) -> xr.DataArray:
    """The BPTT reference ``var`` ("weight_update", "bias_update" or "delta"): ``<var>_bptt``
    of an older recording, else ``<var>_bp`` of a settling rule's recording."""
    if f"{var}_bptt" in ds:
        return ds[f"{var}_bptt"]
    if not _is_settling(tree):
        raise KeyError(
            f"{name!r} has no BPTT reference in this recording: it is not a recording of a "
            f"settling rule (rule_kind={tree.attrs.get('rule_kind')!r}); record an 'ep' run"
        )
    return _var(ds, f"{var}_bp", name)


def _ep_pathways(tree: xr.DataTree) -> list[str]:
    settling = _is_settling(tree)
    out = []
    for name, node in tree["pathways"].children.items():
        have = set(node.to_dataset().data_vars)
        if "weight_update_bptt" in have or (
            settling and {"weight_update", "weight_update_bp"} <= have
        ):
            out.append(name)
    return out


def bptt_angle(rec: Rec, pathway: str, bias: bool = False) -> xr.DataArray:
    """∠(ΔW_EP, −∂L/∂W_BPTT) over ``(post, pre)`` per recorded step (``bias=True``: the
    bias updates over ``post``)."""
    tree = _tree(rec)
    ds = _node(tree, pathway, "pathways")
    if bias:
        out = angle(
            _var(ds, "bias_update", pathway), _ref(ds, "bias_update", pathway, tree), ["post"]
        )
    else:
        out = angle(
            _var(ds, "weight_update", pathway),
            _ref(ds, "weight_update", pathway, tree),
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
            "this recording has no BPTT reference: record an 'ep' run with "
            "bioprop.Record(..., shadow=True) (the default)"
        )
    return xr.Dataset({n: bptt_angle(tree, n) for n in names})


def bptt_relative_error(rec: Rec, pathway: str) -> xr.DataArray:
    """‖ΔW_EP − ΔW_BPTT‖ / ‖ΔW_BPTT‖ per recorded step (NaN where the reference is 0)."""
    tree = _tree(rec)
    ds = _node(tree, pathway, "pathways")
    a = _var(ds, "weight_update", pathway).astype("float64")
    b = _ref(ds, "weight_update", pathway, tree).astype("float64")
    a, b = xr.align(a, b, join="inner")
    num = np.sqrt(((a - b) ** 2).sum(["post", "pre"]))
    den = np.sqrt((b**2).sum(["post", "pre"]))
    out = num / den.where(den > 0)
    out.name = f"relative error({pathway}: ep vs bptt)"
    return out


def bptt_delta_angle(rec: Rec, population: str, per_sample: bool = False) -> xr.DataArray:
    """∠(δ_EP, δ_BPTT) of a population's teaching signals, δ_EP = (ρ⁰ − ρ^β)/β and
    δ_BPTT = ∂ℓ_n/∂b through the settling, over ``(sample, neuron)`` (or per sample)."""
    tree = _tree(rec)
    ds = _node(tree, population, "populations")
    dims = ["neuron"] if per_sample else ["sample", "neuron"]
    out = angle(_var(ds, "delta", population), _ref(ds, "delta", population, tree), dims)
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
