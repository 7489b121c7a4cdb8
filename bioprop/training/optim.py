"""The one optimizer builder: parameter groups for the circuit and for what a rule adds.

A spec names a ``torch.optim`` class and its options, e.g. ``("adam", {"lr": 1e-4,
"module_lr": 3e-3})``.  The circuit's forward parameters form the group ``circuit`` at
``lr``; every group a rule declares (:meth:`bioprop.rules.Rule.parameter_groups`: a
synthetic-gradient module, a learned inverse, …) runs at ``<group>_lr`` if the spec gives
one, else at the group's own default, else at ``lr``.  Every group, its name and learning
rate end up in the recording's provenance.
"""

from __future__ import annotations

from typing import Any

import torch

from bioprop.core.circuit import Circuit

__all__ = ["OPTIMIZERS", "make_optimizer", "groups_of"]

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "sgd": torch.optim.SGD,
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
}


def make_optimizer(spec: Any, circuit: Circuit, rule=None) -> torch.optim.Optimizer:
    """An optimizer over the circuit's plastic parameters and the rule's parameter groups.

    ``spec`` is ``("sgd", {"lr": 1e-3, "weight_decay": 1e-6})``, a name (``"adam"``), a
    ``torch.optim.Optimizer`` instance (used as is), or a callable
    ``circuit -> Optimizer`` (for per-layer learning rates).  ``<group>_lr`` entries set
    the learning rate of a group the rule declares (e.g. ``module_lr`` for DNI modules);
    ``<pathway>_lr`` (e.g. ``"input->hidden_lr": 0.2``) puts a pathway of the circuit in a
    group of its own at that rate (per-layer learning rates, as Scellier & Bengio's EP).
    """
    if isinstance(spec, torch.optim.Optimizer):
        return spec
    if callable(spec) and not isinstance(spec, str):
        return spec(circuit)
    if isinstance(spec, str):
        spec = (spec, {})
    try:
        name, kwargs = spec
        kwargs = dict(kwargs)
    except (TypeError, ValueError):
        raise TypeError(
            f"optimizer must be a name, (name, {{options}}), an Optimizer or a callable, "
            f"got {spec!r}"
        ) from None
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {list(OPTIMIZERS)}") from None
    if name == "sgd" and "lr" not in kwargs:
        raise ValueError("optimizer ('sgd', {...}) needs a learning rate: ('sgd', {'lr': 1e-3})")
    extra = list(rule.parameter_groups(circuit)) if rule is not None else []
    group_lrs = {k[: -len("_lr")]: kwargs.pop(k) for k in list(kwargs) if k.endswith("_lr")}
    known = {g.get("name", "rule") for g in extra}
    per_pathway = [n for n in group_lrs if n not in known and n in circuit.pathways]
    unknown = sorted(set(group_lrs) - known - set(per_pathway))
    if unknown:
        raise ValueError(
            f"optimizer option(s) {[u + '_lr' for u in unknown]} name no parameter group of "
            f"rule {getattr(rule, 'name', None)!r} and no pathway of the circuit; its groups: "
            f"{sorted(known) or 'none'}; pathways: {sorted(circuit.pathways)}"
        )
    extra = [
        {"name": n, "params": [p for p in circuit.pathways[n].own_parameters() if p.requires_grad]}
        for n in per_pathway
    ] + extra
    taken = {id(p) for g in extra for p in g["params"]}
    own = [p for p in circuit.plastic_parameters() if id(p) not in taken]
    lr = kwargs.get("lr", cls([torch.zeros(1, requires_grad=True)]).defaults["lr"])
    groups = [{"name": "circuit", "params": own, "lr": lr}] if own else []
    for g in extra:
        g = dict(g)
        gname = g.setdefault("name", "rule")
        g["lr"] = group_lrs.get(gname, g.get("lr", lr))
        if g["params"]:
            groups.append(g)
    if not groups:
        raise ValueError("the circuit has no plastic parameters to optimise")
    if _can_fuse(name, kwargs, groups):
        # one kernel per step for the whole update (weight decay, momentum, Adam's moments)
        # instead of a Python loop of separate passes over every weight matrix
        try:
            return cls(groups, **kwargs, fused=True)
        except (RuntimeError, TypeError, ValueError):
            pass
    return cls(groups, **kwargs)


#: optimizers whose torch implementation has a fused CPU and CUDA kernel
FUSABLE = ("sgd", "adam", "adamw")


def _can_fuse(name: str, kwargs: dict, groups: list[dict]) -> bool:
    """Fuse unless the spec chose an implementation or a parameter cannot take it.

    Every parameter must be dense, floating point and contiguous: torch's fused kernels
    walk a parameter and its gradient element by element in memory order, so a parameter
    stored transposed (e.g. ``W.t().clone()``) beside a contiguous gradient would be
    updated with the wrong entries (measured: 5e-3 off after two steps).
    """
    if name not in FUSABLE or {"fused", "foreach", "differentiable"} & set(kwargs):
        return False
    params = [p for g in groups for p in g["params"]]
    devices = {p.device.type for p in params}
    return (
        bool(params)
        and devices <= {"cpu", "cuda"}
        and len(devices) == 1
        and all(p.is_floating_point() and not p.is_sparse and p.is_contiguous() for p in params)
    )


def groups_of(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Every parameter group's name, size and scalar options (lr, betas, …), for provenance."""
    out = []
    for i, g in enumerate(optimizer.param_groups):
        row = {
            "name": g.get("name", f"group{i}"),
            "parameters": sum(p.numel() for p in g["params"]),
        }
        for k, v in g.items():
            if k in ("params", "name"):
                continue
            if isinstance(v, (int, float, bool, str)) or v is None:
                row[k] = v
            elif isinstance(v, tuple) and all(isinstance(e, (int, float)) for e in v):
                row[k] = list(v)
        out.append(row)
    return out
