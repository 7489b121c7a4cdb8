"""Analyses of target-propagation recordings (tp, dtp, dtp-drl, ddtp-linear): xarray in, xarray
out, the ``step`` dim kept.

The rules record, per population l that gets a target, ``targets/<l>/target`` = ĥ_l
(step, sample, neuron; the top one, where the first target sits, has the attribute
``first_target = 1``) beside the usual rates h_l, teaching signals δ_BP = ∂ℓ/∂u and weights.
From these alone (Meulemans et al. 2020's metrics):

* the target difference Δh_l = ĥ_l − h_l (:func:`target_difference`);
* backprop's rate gradient ∂ℓ/∂h_l = Σ_q W_qlᵀ δ_BP,q (:func:`loss_gradient`);
* the Gauss–Newton target Δh_l^GN = J_l⁺ (ĥ_top − h_top) per sample, with
  J_l = ∂h_top/∂h_l = D_top W_top ⋯ D_{l+1} W_{l+1} and D_k = diag f′_k
  (:func:`gauss_newton_target`);
* ∠(Δh_l, −∂ℓ/∂h_l) and ∠(Δh_l, Δh_l^GN) (:func:`target_angle`);
* the weight updates ΔW_l = ⟨2 f′_l ⊙ Δ h_{l−1}ᵀ⟩ with Δ = Δh_l (the rule), Δh_l^GN (the
  Gauss–Newton target update, "GNT"), and bp's −⟨δ_BP,l h_{l−1}ᵀ⟩; the angles of the
  rule's to bp's and to GNT's (:func:`update_angles`);
* the inverse's reconstruction error ‖g_l(h_l) − h_{l−1}‖² / ‖h_{l−1}‖²
  (:func:`reconstruction_error`).

All are computed on the recorded samples (``Record(samples=...)``; with samples ≥ batch size
they are the whole batch's).  f′ is evaluated from the rates (exact for linear, tanh, logistic,
relu and hard-sigmoid units).
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

from bioprop.analysis.alignment import Rec, _tree, angle
from bioprop.core import activations

__all__ = [
    "target_populations",
    "top_population",
    "target_difference",
    "loss_gradient",
    "gauss_newton_target",
    "gauss_newton_targets",
    "gauss_newton_all",
    "all_update_angles",
    "target_angle",
    "layer_updates",
    "update_angles",
    "reconstruction_error",
]


def target_populations(rec: Rec) -> list[str]:
    """Populations with recorded targets, in sweep order (input side first)."""
    tree = _tree(rec)
    if "targets" not in tree.children:
        return []
    names = [n for n, g in tree["targets"].children.items() if "target" in g.ds]
    order = list(tree["populations"].children)
    return sorted(names, key=order.index)


def top_population(rec: Rec) -> str:
    """The population that received the first target."""
    tree = _tree(rec)
    for name in target_populations(tree):
        if tree["targets"][name].ds["target"].attrs.get("first_target"):
            return name
    raise KeyError(
        "the recording has no targets/<population>/target with first_target = 1; record a "
        "tp, dtp, dtp-drl or ddtp-linear run with Record(samples > 0)"
    )


def _forward(tree: xr.DataTree) -> dict[str, xr.Dataset]:
    """Forward pathways keyed by their target population."""
    out = {}
    for node in tree["pathways"].children.values():
        if node.attrs.get("role") == "feedforward":
            out[node.attrs["target"]] = node.to_dataset()
    return out


def _rate(tree, pop) -> xr.DataArray:
    return tree["populations"][pop].ds["rate"]


def _fprime(tree, pop, r: torch.Tensor) -> torch.Tensor:
    act = activations.get(tree["populations"][pop].attrs["activation"])
    return act.fprime(r, r)  # exact from r for the activations named in the module docstring


def target_difference(rec: Rec, population: str) -> xr.DataArray:
    """Δh = ĥ − h per sample, dims (step, sample, neuron)."""
    tree = _tree(rec)
    if population not in target_populations(tree):
        raise KeyError(
            f"no targets recorded for {population!r}; populations with targets: "
            f"{target_populations(tree)}"
        )
    t = tree["targets"][population].ds["target"]
    h = _rate(tree, population)
    t, h = xr.align(t, h, join="inner")
    out = (t - h).astype("float64")
    out.name = f"target difference ({population})"
    return out


def loss_gradient(rec: Rec, population: str) -> xr.DataArray:
    """∂ℓ_n/∂h_l = Σ_{l→q} W_qlᵀ δ_BP,q per sample (from the recorded weights and backprop's
    teaching signals of the populations l projects to)."""
    tree = _tree(rec)
    total = None
    for node in tree["pathways"].children.values():
        a = node.attrs
        if a.get("role") != "feedforward" or a.get("source") != population:
            continue
        w = node.ds["weight"].astype("float64")
        d = tree["populations"][a["target"]].ds["delta_bp"].astype("float64")
        w, d = xr.align(w, d, join="inner")
        term = xr.dot(d.rename(neuron="post"), w, dim="post").rename(pre="neuron")
        total = term if total is None else total + term
    if total is None:
        raise KeyError(f"population {population!r} sends no forward pathway in this recording")
    total = total.transpose("step", "sample", "neuron")
    total.name = f"dl/dh ({population})"
    return total


def gauss_newton_targets(
    weights: list[torch.Tensor],
    fprimes: list[torch.Tensor],
    top_step: torch.Tensor,
    damping: float = 0.0,
) -> list[torch.Tensor]:
    """Δh_l^GN = J_l⁺ Δh_top per sample for every layer below the top (with ``damping``
    λ > 0: Jᵀ(J Jᵀ + λI)⁻¹ Δh_top = (JᵀJ + λI)⁻¹ Jᵀ Δh_top, Meulemans et al.'s damped
    Gauss–Newton target; λ → ∞ turns it toward Jᵀ Δh_top, backprop's direction).

    ``weights`` = [W_{l+1}, …, W_top] (post × pre) from the lowest layer up, ``fprimes`` the
    matching f′ of each layer's post population (sample × post), ``top_step`` = Δh_top
    (sample × n_top).  Returns [Δh_l, Δh_{l+1}, …] for the pre population of every weight
    (J_l = D_top W_top ⋯ D_{l+1} W_{l+1}, built from the top down; J⁺ the pseudo-inverse)."""
    jac = None  # J_top = I
    out = []
    for w, fp in zip(reversed(weights), reversed(fprimes), strict=True):
        if jac is None:
            jac = fp[:, :, None] * w  # D_top W_top
        else:
            jac = (jac * fp[:, None, :]) @ w  # J_l = J_{l+1} D_{l+1} W_{l+1}
        out.append(_pinv_apply(jac, top_step, damping))
    return out[::-1]


def _pinv_apply(jac: torch.Tensor, rhs: torch.Tensor, damping: float = 0.0) -> torch.Tensor:
    """J⁺ b per sample: Jᵀ (J Jᵀ)⁻¹ b for a wide J, J⁻¹ b for a square one (full rank, as
    the forward Jacobians of the layered nets here are), the SVD pseudo-inverse otherwise;
    with damping λ > 0, Jᵀ (J Jᵀ + λI)⁻¹ b."""
    b = rhs[:, :, None]
    m, n = jac.shape[-2:]
    if damping > 0:
        eye = torch.eye(m, dtype=jac.dtype)
        return (
            jac.transpose(1, 2) @ torch.linalg.solve(jac @ jac.transpose(1, 2) + damping * eye, b)
        )[:, :, 0]
    try:
        if m < n:
            x = jac.transpose(1, 2) @ torch.linalg.solve(jac @ jac.transpose(1, 2), b)
        elif m == n:
            x = torch.linalg.solve(jac, b)
        else:
            x = torch.linalg.pinv(jac) @ b
    except RuntimeError:  # singular: fall back on the pseudo-inverse
        x = torch.linalg.pinv(jac) @ b
    return x[:, :, 0]


def _gauss_newton(tree, population: str, damping: float) -> dict[str, xr.DataArray]:
    """Δh^GN of ``population`` and of every population between it and the top, in one
    top-down pass per step."""
    top = top_population(tree)
    forward = _forward(tree)
    chain = [top]
    while chain[-1] != population:
        below = forward[chain[-1]].attrs["source"] if chain[-1] in forward else None
        if below is None or below not in tree["populations"].children:
            raise KeyError(f"{population!r} is not below the top population {top!r}")
        chain.append(below)
    chain = chain[::-1]  # population, …, top
    step_top = target_difference(tree, top)
    steps = step_top.step.values
    top_values = step_top.values  # read every array once, not once per step
    rates = {p: _rate(tree, p).sel(step=steps).values.astype(np.float64) for p in chain}
    weights = {p: forward[p]["weight"].sel(step=steps).values.astype(np.float64) for p in chain[1:]}
    values: dict[str, list[np.ndarray]] = {p: [] for p in chain[:-1]}
    for i in range(len(steps)):
        ok = np.isfinite(top_values[i]).all(axis=1)
        d_top = torch.from_numpy(top_values[i][ok])
        w = [torch.from_numpy(weights[p][i]) for p in chain[1:]]
        fp = [_fprime(tree, p, torch.from_numpy(rates[p][i][ok])) for p in chain[1:]]
        found = gauss_newton_targets(w, fp, d_top, damping) if ok.any() else None
        for j, p in enumerate(chain[:-1]):
            full = np.full((ok.size, rates[p].shape[-1]), np.nan)
            if found is not None:
                full[ok] = found[j].numpy()
            values[p].append(full)
    out = {}
    for p, v in values.items():
        da = xr.DataArray(np.stack(v), dims=("step", "sample", "neuron"), coords={"step": steps})
        da.name = f"Gauss-Newton target ({p})"
        da.attrs["damping"] = damping
        out[p] = da
    return out


def gauss_newton_target(rec: Rec, population: str, damping: float = 0.0) -> xr.DataArray:
    """Δh_l^GN = J_l⁺ (ĥ_top − h_top) per sample (dims step, sample, neuron), J_l = ∂h_top/∂h_l
    at the recorded weights and rates (Meulemans et al. 2020's Gauss–Newton target; damped
    by λ = ``damping`` as in their figures, see :func:`gauss_newton_targets`)."""
    return _gauss_newton(_tree(rec), population, damping)[population]


def gauss_newton_all(rec: Rec, damping: float = 0.0) -> dict[str, xr.DataArray]:
    """:func:`gauss_newton_target` of every population with a target below the top, computed
    in one pass (``{population: DataArray}``)."""
    tree = _tree(rec)
    top = top_population(tree)
    below = [p for p in target_populations(tree) if p != top]
    return _gauss_newton(tree, below[0], damping) if below else {}


def target_angle(
    rec: Rec, population: str, reference: str = "bp", damping: float = 0.0
) -> xr.DataArray:
    """∠(ĥ_l − h_l, −∂ℓ/∂h_l) (``reference="bp"``) or ∠(ĥ_l − h_l, Δh_l^GN)
    (``"gauss-newton"``, damped by ``damping``) over (sample, neuron), per step."""
    tree = _tree(rec)
    diff = target_difference(tree, population)
    if reference == "bp":
        ref = -loss_gradient(tree, population)
    elif reference == "gauss-newton":
        ref = gauss_newton_target(tree, population, damping)
    else:
        raise ValueError(f"reference must be 'bp' or 'gauss-newton', got {reference!r}")
    out = angle(diff, ref, ["sample", "neuron"])
    out.name = f"angle({population}: target difference, {reference})"
    return out


def _outer(tree, pathway: str, signal: xr.DataArray) -> xr.DataArray:
    """⟨signal h_preᵀ⟩ over the finite samples: (step, post, pre)."""
    node = tree["pathways"][pathway]
    pre = _rate(tree, node.attrs["source"]).astype("float64").rename(neuron="pre")
    signal, pre = xr.align(signal.rename(neuron="post"), pre, join="inner")
    ok = signal.notnull().all("post") & pre.notnull().all("pre")
    s, p = signal.where(ok, 0.0), pre.where(ok, 0.0)
    return xr.dot(s, p, dim="sample") / ok.sum("sample")


def layer_updates(
    rec: Rec, pathway: str, damping: float = 0.0, gn: xr.DataArray | None = None
) -> xr.Dataset:
    """The forward pathway's update on the recorded samples, three ways (step, post, pre):
    ``rule`` ⟨2 f′ ⊙ (ĥ − h) h_preᵀ⟩, ``gauss_newton`` ⟨2 f′ ⊙ Δh^GN h_preᵀ⟩ (GNT; ``gn``
    the target population's Δh^GN if already computed) and ``bp`` −⟨δ_BP h_preᵀ⟩."""
    tree = _tree(rec)
    post = tree["pathways"][pathway].attrs["target"]
    r = _rate(tree, post).astype("float64")
    act = activations.get(tree["populations"][post].attrs["activation"])
    fp = xr.apply_ufunc(lambda a: act.fprime(torch.from_numpy(a), torch.from_numpy(a)).numpy(), r)
    diff = target_difference(tree, post)
    if gn is None:
        gn = gauss_newton_target(tree, post, damping) if post != top_population(tree) else diff
    d_bp = tree["populations"][post].ds["delta_bp"].astype("float64")
    return xr.Dataset(
        {
            "rule": _outer(tree, pathway, 2.0 * fp * diff),
            "gauss_newton": _outer(tree, pathway, 2.0 * fp * gn),
            "bp": _outer(tree, pathway, -d_bp),
        }
    )


def update_angles(
    rec: Rec, pathway: str, damping: float = 0.0, gn: xr.DataArray | None = None
) -> xr.Dataset:
    """Meulemans et al.'s alignment of a layer's update: ``bp`` = ∠(ΔW_rule, ΔW_BP) and
    ``gauss_newton`` = ∠(ΔW_rule, ΔW_GNT) (GN target damped by ``damping``), in degrees over
    steps (recorded samples)."""
    u = layer_updates(rec, pathway, damping, gn)
    out = xr.Dataset(
        {
            "bp": angle(u["rule"], u["bp"], ["post", "pre"]),
            "gauss_newton": angle(u["rule"], u["gauss_newton"], ["post", "pre"]),
        }
    )
    out.attrs.update(pathway=pathway, damping=damping)
    return out


def all_update_angles(rec: Rec, damping: float = 0.0) -> dict[str, xr.Dataset]:
    """:func:`update_angles` of every forward pathway into a population with a target below
    the top, the Gauss–Newton targets computed once (``{pathway: Dataset}``)."""
    tree = _tree(rec)
    gn = gauss_newton_all(tree, damping)
    into = {
        n.attrs["target"]: name
        for name, n in tree["pathways"].children.items()
        if n.attrs.get("role") == "feedforward"
    }
    return {into[p]: update_angles(tree, into[p], damping, g) for p, g in gn.items()}


def reconstruction_error(rec: Rec, pathway: str) -> xr.DataArray:
    """‖g(h_l) − h_{l−1}‖² / ‖h_{l−1}‖² over the recorded samples, for the learned inverse g
    that mirrors forward ``pathway`` (h_{l−1} → h_l)."""
    tree = _tree(rec)
    g = None
    for node in tree["pathways"].children.values():
        a = node.attrs
        if a.get("role") == "feedback" and a.get("mirrors") == pathway and "inverse" in a:
            g = node
    if g is None:
        raise KeyError(f"no inverse mirrors {pathway!r} in this recording")
    a = g.attrs
    v = g.ds["weight"].astype("float64")
    h_l = _rate(tree, a["source"]).astype("float64")
    h_below = _rate(tree, a["target"]).astype("float64")
    drive = xr.dot(h_l.rename(neuron="pre"), v, dim="pre")
    if "bias" in g.ds:
        drive = drive + g.ds["bias"].astype("float64")
    act = activations.get(a["activation"])
    rebuilt = xr.apply_ufunc(lambda x: act.f(torch.from_numpy(x)).numpy(), drive)
    rebuilt = rebuilt.rename(post="neuron").transpose("step", "sample", "neuron")
    rebuilt, h_below = xr.align(rebuilt, h_below, join="inner")
    err = ((rebuilt - h_below) ** 2).sum(["sample", "neuron"], skipna=True)
    out = err / (h_below**2).sum(["sample", "neuron"], skipna=True)
    out.name = f"reconstruction error ({a['target']} from {a['source']})"
    return out
