"""Analyses of recordings: pure functions from xarray to xarray, ``step`` kept.

Every function takes a recording (an ``xarray.DataTree`` from
:func:`bioprop.load`, or a path) and a pathway or population name, and
returns a ``DataArray`` over ``step`` (plus any dimension not reduced).

Angles are in degrees, ∠(a, b) = arccos(⟨a, b⟩ / (‖a‖ ‖b‖)) ∈ [0°, 180°]:
0° for parallel, 90° for orthogonal, 180° for antiparallel (a *signed*
cosine, so "anti-aligned" is not folded onto "aligned").  NaN where either
vector is zero.  NaN entries (unfilled samples) are skipped.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Sequence

import numpy as np
import torch
import xarray as xr

__all__ = [
    "angle",
    "cosine",
    "update_angle",
    "reference_angle",
    "delta_angle",
    "weight_alignment",
    "pseudoinverse_update",
    "pseudoinverse_angle",
    "norm_ratio",
    "update_norm_ratio",
    "sign_concordance",
    "feedback_of",
]

Rec = xr.DataTree | str | os.PathLike


def _tree(rec: Rec) -> xr.DataTree:
    if isinstance(rec, xr.DataTree):
        return rec
    from bioprop.recording.load import load

    return load(rec)


def _node(rec: Rec, name: str, kind: str | None = None) -> xr.Dataset:
    tree = _tree(rec)
    kinds = [kind] if kind else ["pathways", "populations"]
    for k in kinds:
        if k in tree.children and name in tree[k].children:
            return tree[k][name].to_dataset()
    avail = {k: list(tree[k].children) for k in ("pathways", "populations") if k in tree.children}
    what = {"pathways": "pathway", "populations": "population"}.get(kind, "pathway or population")
    raise KeyError(f"the recording has no {what} {name!r}; it has {avail}")


def _var(ds: xr.Dataset, var: str, name: str) -> xr.DataArray:
    if var not in ds:
        raise KeyError(
            f"{name!r} has no variable {var!r} in this recording (it has {list(ds.data_vars)}); "
            "record it with Record(variables=...)"
        )
    return ds[var]


def cosine(a: xr.DataArray, b: xr.DataArray, dims: Sequence[Hashable]) -> xr.DataArray:
    """Signed cosine ⟨a, b⟩ / (‖a‖ ‖b‖) over ``dims`` (NaN entries skipped)."""
    dims = list(dims)
    a, b = xr.align(a, b, join="inner")
    mask = a.notnull() & b.notnull()
    a0 = a.where(mask, 0.0).astype("float64")
    b0 = b.where(mask, 0.0).astype("float64")
    dot = (a0 * b0).sum(dims)
    na = np.sqrt((a0 * a0).sum(dims))
    nb = np.sqrt((b0 * b0).sum(dims))
    denom = na * nb
    return (dot / denom.where(denom > 0)).clip(-1.0, 1.0)


def angle(a, b, dims: Sequence[Hashable] | None = None):
    """∠(a, b) in degrees: arccos of the signed cosine ⟨a, b⟩ / (‖a‖ ‖b‖).

    The one angle of the toolkit.  On ``xarray.DataArray`` inputs it is taken over
    ``dims`` (NaN entries skipped; other dims, e.g. ``step``, are kept).  On torch tensors
    or numpy arrays it is taken over all entries and returned as a float (NaN when either
    is zero), for code that compares live gradients (settling, recurrent, two networks).
    """
    if not isinstance(a, xr.DataArray):
        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().double().numpy()
        if isinstance(b, torch.Tensor):
            b = b.detach().cpu().double().numpy()
        a = np.asarray(a, dtype=np.float64).ravel()
        b = np.asarray(b, dtype=np.float64).ravel()
        denom = float(np.linalg.norm(a) * np.linalg.norm(b))
        if denom == 0.0:
            return math.nan
        return math.degrees(math.acos(max(-1.0, min(1.0, float(a @ b) / denom))))
    if dims is None:
        raise TypeError("angle of DataArrays needs dims=, e.g. ('post', 'pre')")
    out = np.degrees(np.arccos(cosine(a, b, dims)))
    out.attrs["units"] = "degree"
    return out


def update_angle(rec: Rec, name: str, per_sample: bool = False) -> xr.DataArray:
    """Angle between the rule's update and backprop's.

    For a pathway: ∠(ΔW_rule, ΔW_BP) over ``(post, pre)``.  For a population:
    the teaching signals, ∠(δ_rule, δ_BP) — Lillicrap et al.'s ∠(Δh_FA, Δh_BP)
    — over ``(sample, neuron)``, or per sample with ``per_sample=True``.
    """
    tree = _tree(rec)
    if "pathways" in tree.children and name in tree["pathways"].children:
        ds = _node(tree, name, "pathways")
        out = angle(
            _var(ds, "weight_update", name), _var(ds, "weight_update_bp", name), ["post", "pre"]
        )
    else:
        _node(tree, name)  # a clear error when it is neither
        return delta_angle(tree, name, per_sample=per_sample)
    out.name = f"angle({name}: update, bp)"
    return out


def reference_angle(rec: Rec, population: str | None = None) -> xr.DataArray:
    """∠ of the rule's learning to its family's exact reference, over ``step``.

    With ``population`` (and ``delta``, ``delta_bp`` recorded there): ∠(δ_rule, δ_ref) of
    that population's teaching signals.  Otherwise: the angle between the rule's whole
    update and the reference's, Δθ = ⊕_p ΔW_p concatenated over every pathway that
    carries both ``weight_update`` and ``weight_update_bp`` — whatever the circuit kind
    (bp for layered rules, BPTT for settling and recurrent ones, the rate twin's bp for
    spiking ones).  NaN where nothing comparable was recorded.
    """
    tree = _tree(rec)
    if population is not None and "populations" in tree.children:
        pops = tree["populations"].children
        if population in pops and {"delta", "delta_bp"} <= set(pops[population].data_vars):
            return delta_angle(tree, population)
    dot = na = nb = None
    for node in tree["pathways"].children.values() if "pathways" in tree.children else ():
        ds = node.to_dataset()
        if not {"weight_update", "weight_update_bp"} <= set(ds.data_vars):
            continue
        a, b = xr.align(ds["weight_update"], ds["weight_update_bp"], join="inner")
        mask = a.notnull() & b.notnull()
        a, b = a.where(mask, 0.0).astype("float64"), b.where(mask, 0.0).astype("float64")
        dims = [d for d in a.dims if d != "step"]
        terms = ((a * b).sum(dims), (a * a).sum(dims), (b * b).sum(dims))
        if dot is None:
            dot, na, nb = terms
        else:
            dot, na, nb = (x + t for x, t in zip((dot, na, nb), terms, strict=True))
    if dot is None:
        return xr.DataArray([], dims="step", name="reference_angle")
    denom = np.sqrt(na * nb)
    out = np.degrees(np.arccos((dot / denom.where(denom > 0)).clip(-1.0, 1.0)))
    out.attrs["units"] = "degree"
    out.name = "angle(update, reference update)"
    return out


def delta_angle(rec: Rec, population: str, per_sample: bool = False) -> xr.DataArray:
    """∠(δ_rule, δ_BP) for a population, over ``(sample, neuron)`` (or ``neuron`` only)."""
    ds = _node(rec, population, "populations")
    dims = ["neuron"] if per_sample else ["sample", "neuron"]
    out = angle(_var(ds, "delta", population), _var(ds, "delta_bp", population), dims)
    out.name = f"angle({population}: delta, bp)"
    return out


def feedback_of(rec: Rec, pathway: str) -> str:
    """Name of the feedback pathway that mirrors forward ``pathway``."""
    tree = _tree(rec)
    for name, node in tree["pathways"].children.items():
        if node.attrs.get("mirrors") == pathway and node.attrs.get("role") == "feedback":
            return name
    raise KeyError(
        f"no feedback pathway in this recording mirrors {pathway!r} (rules like fa, "
        "sign-symmetry and dfa install one)"
    )


def _wt_and_b(rec: Rec, pathway: str) -> tuple[xr.DataArray, xr.DataArray]:
    tree = _tree(rec)
    w = _var(_node(tree, pathway, "pathways"), "weight", pathway)
    fb = feedback_of(tree, pathway)
    b = _var(_node(tree, fb, "pathways"), "weight", fb)
    # Wᵀ has dims (pre of W) x (post of W); B's post is W's pre.
    wt = w.rename({"post": "pre", "pre": "post"}).transpose("step", "post", "pre")
    return wt, b


def weight_alignment(rec: Rec, pathway: str) -> xr.DataArray:
    """∠(Wᵀ, B) between a forward pathway's transpose and the feedback that mirrors it."""
    wt, b = _wt_and_b(rec, pathway)
    out = angle(wt, b, ["post", "pre"])
    out.name = f"angle({pathway}: W^T, B)"
    return out


def norm_ratio(rec: Rec, pathway: str) -> xr.DataArray:
    """‖B‖_F / ‖W‖_F for a forward pathway and its feedback."""
    wt, b = _wt_and_b(rec, pathway)
    out = np.sqrt((b.astype("float64") ** 2).sum(["post", "pre"])) / np.sqrt(
        (wt.astype("float64") ** 2).sum(["post", "pre"])
    )
    out.name = f"norm ratio({pathway}: |B|/|W|)"
    return out


def sign_concordance(rec: Rec, pathway: str) -> xr.DataArray:
    """Fraction of entries where sign(B) = sign(Wᵀ)."""
    wt, b = _wt_and_b(rec, pathway)
    wt, b = xr.align(wt, b, join="inner")
    out = (np.sign(wt) == np.sign(b)).mean(["post", "pre"])
    out.name = f"sign concordance({pathway})"
    return out


def update_norm_ratio(rec: Rec, name: str) -> xr.DataArray:
    """‖update_rule‖ / ‖update_BP‖ (pathway) or ‖δ_rule‖ / ‖δ_BP‖ (population)."""
    tree = _tree(rec)
    if "pathways" in tree.children and name in tree["pathways"].children:
        ds = _node(tree, name, "pathways")
        a, b, dims = ds["weight_update"], ds["weight_update_bp"], ["post", "pre"]
    else:
        ds = _node(tree, name, "populations")
        a, b, dims = ds["delta"], ds["delta_bp"], ["sample", "neuron"]
    a, b = xr.align(a, b, join="inner")
    out = np.sqrt((a.astype("float64") ** 2).sum(dims)) / np.sqrt(
        (b.astype("float64") ** 2).sum(dims)
    )
    out.name = f"norm ratio({name}: rule/bp)"
    return out


def pseudoinverse_update(rec: Rec, pathway: str) -> xr.DataArray:
    """Δh_PBP = W⁺ e per sample: the output error ``e`` (the target population's δ)
    sent back through the Moore-Penrose pseudoinverse of the forward weight W
    (Lillicrap et al. 2016, Fig. 4).  Dims ``(step, sample, neuron)`` of the source."""
    tree = _tree(rec)
    pw = _node(tree, pathway, "pathways")
    w = _var(pw, "weight", pathway)
    target = tree["pathways"][pathway].attrs["target"]
    e = _var(_node(tree, target, "populations"), "delta", target)
    # singular values below the stored precision (float32) are treated as zero
    rcond = float(np.finfo(w.dtype).eps) * max(w.sizes["post"], w.sizes["pre"]) * 10
    w_pinv = xr.apply_ufunc(
        lambda a: np.linalg.pinv(a, rcond=rcond),
        w.astype("float64").load(),
        input_core_dims=[["post", "pre"]],
        output_core_dims=[["pre", "post"]],
    )
    w_pinv, e = xr.align(w_pinv, e.rename({"neuron": "post"}), join="inner")
    out = (
        xr.dot(w_pinv, e, dim="post")
        .rename({"pre": "neuron"})
        .transpose("step", "sample", "neuron")
    )
    out.name = "delta_pbp"
    return out


def pseudoinverse_angle(rec: Rec, pathway: str) -> xr.DataArray:
    """∠(Δh_rule, Δh_PBP): the rule's teaching signal at ``pathway``'s source population
    against the pseudoinverse update W⁺ e (for linear hidden units Δh = δ)."""
    tree = _tree(rec)
    source = tree["pathways"][pathway].attrs["source"]
    d = _var(_node(tree, source, "populations"), "delta", source)
    out = angle(d, pseudoinverse_update(tree, pathway), ["sample", "neuron"])
    out.name = f"angle({source}: delta, W+ e)"
    return out
