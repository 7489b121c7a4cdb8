"""What a settling rule records besides the usual groups: the settling itself.

On recording steps a two- or three-phase settling rule (``ep``) keeps, for the first k
samples of the batch, the states over settling time and the energies along the way.  Its
``time`` axis runs over one record's whole settling: index 0 is the start, 1…S the free
phase (S = ``Settling.steps``; NaN after an early stop on the tolerance), then the nudged
steps, then the −β steps (attribute ``time_axis`` says so).  Layout (``docs/ep.md``):

==========================  =============================================================
``populations/<q>``         ``trajectory (time, sample, neuron)``: states u over time
``settling``                ``energy, cost, total_energy (time, sample)``; ``phase (time)``;
                            ``beta``, ``free_steps``, ``free_residual``, ``free_converged``
==========================  =============================================================

:func:`variables` declares it (for :meth:`bioprop.rules.Rule.record_variables`),
:func:`values` fills it from the phases' :class:`~bioprop.settling.settle.Settled` records.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from bioprop.core.circuit import Circuit
from bioprop.settling.circuit import Settling, free_populations
from bioprop.settling.energy import cost, energy
from bioprop.settling.settle import Settled

__all__ = ["variables", "values", "time_length"]


def time_length(s: Settling, nudged_steps: int, symmetric: bool) -> int:
    """Length of the recorded ``time`` axis: start + free steps + nudged phase(s)."""
    return 1 + s.steps + nudged_steps * (2 if symmetric else 1)


def _time_axis(s: Settling, nudged_steps: int, symmetric: bool) -> str:
    T = time_length(s, nudged_steps, symmetric)
    text = (
        f"time 0: start; 1..{s.steps}: free phase (beta = 0, NaN after an early stop); "
        f"{s.steps + 1}..{s.steps + nudged_steps}: nudged phase (beta)"
    )
    if symmetric:
        text += f"; {s.steps + nudged_steps + 1}..{T - 1}: third phase (-beta), from the free state"
    return text


def variables(
    circuit: Circuit, s: Settling, nudged_steps: int, symmetric: bool, samples: int
) -> dict[str, dict[str, Any]]:
    """The declared layout: ``{group path: {name: ExtraVariable}}``."""
    from bioprop.recording.writer import ExtraVariable

    T = time_length(s, nudged_steps, symmetric)
    k = int(samples)
    phases = _time_axis(s, nudged_steps, symmetric)
    tattrs = {
        "epsilon": s.epsilon,
        "free_steps": s.steps,
        "nudged_steps": nudged_steps,
        "time_axis": phases,
    }
    out: dict[str, dict[str, Any]] = {}
    if k > 0:
        for name in free_populations(circuit):
            n = circuit.populations[name].size
            out[f"populations/{name}"] = {
                "trajectory": ExtraVariable(
                    ("time", "sample", "neuron"),
                    (T, k, n),
                    "state u over settling time (first samples of the batch)",
                    attrs=tattrs,
                )
            }
    sg: dict[str, Any] = {
        "beta": ExtraVariable((), (), "signed beta of this step's nudged phase", "f8"),
        "free_steps": ExtraVariable((), (), "Euler steps taken by the free phase", "f8"),
        "free_residual": ExtraVariable((), (), "max |du/dt| at the last free step", "f8"),
        "free_converged": ExtraVariable(
            (), (), "1 if the free phase stopped on the tolerance, 0 on the step budget", "f8"
        ),
        "phase": ExtraVariable(
            ("time",),
            (T,),
            "0 start/free, 1 nudged (+beta), 2 third phase (-beta)",
            attrs={"time_axis": phases},
        ),
    }
    if k > 0:
        for v, long in (
            ("energy", "E(u) over settling time, per sample"),
            ("cost", "C(u) = 1/2 |u_out - y|^2 over settling time, per sample"),
            ("total_energy", "F = E + beta C over settling time (beta of the phase)"),
        ):
            sg[v] = ExtraVariable(("time", "sample"), (T, k), long, attrs={"time_axis": phases})
    out["settling"] = sg
    return out


def values(
    circuit: Circuit,
    s: Settling,
    x: torch.Tensor,
    y: torch.Tensor,
    beta: float,
    free: Settled,
    nudged: Settled,
    minus: Settled | None,
    nudged_steps: int,
    samples: int,
) -> dict[str, dict[str, Any]]:
    """The values of one record, matching :func:`variables` (the phases must have been
    traced with ``trace=samples``).  E, C and F = E + β_phase C are evaluated on the
    recorded states, β_phase = 0, β, −β in the free, nudged and third phase."""
    k = int(samples)
    T = time_length(s, nudged_steps, minus is not None)
    phase = torch.zeros(T)
    phase[1 + s.steps : 1 + s.steps + nudged_steps] = 1
    if minus is not None:
        phase[1 + s.steps + nudged_steps :] = 2
    bvec = torch.zeros(T, dtype=torch.float64)
    bvec[phase == 1] = beta
    bvec[phase == 2] = -beta
    rec: dict[str, dict[str, Any]] = {
        "settling": {
            "beta": beta,
            "free_steps": float(free.steps),
            "free_residual": free.residual,
            "free_converged": float(free.converged),
            "phase": phase,
        }
    }
    if k == 0:
        return rec
    traj: dict[str, torch.Tensor] = {}
    for name in free_populations(circuit):
        parts = [_pad_time(free.trajectory[name], s.steps + 1), nudged.trajectory[name][1:]]
        if minus is not None:
            parts.append(minus.trajectory[name][1:])
        traj[name] = _pad_samples(torch.cat(parts), k)
        rec[f"populations/{name}"] = {"trajectory": traj[name]}
    m = min(k, x.shape[0])
    flat = {nm: t[:, :m].reshape(T * m, -1) for nm, t in traj.items()}
    xs = x[:m].repeat(T, 1)
    ys = y[:m].repeat(T, 1)
    with torch.no_grad():
        e = energy(circuit, xs, flat).reshape(T, m)
        c = cost(circuit, flat, ys).reshape(T, m)
    f = e + bvec.to(e.dtype).view(T, 1) * c
    for v, val in (("energy", e), ("cost", c), ("total_energy", f)):
        rec["settling"][v] = _pad_samples(val, k, dim=1)
    return rec


def _pad_time(t: torch.Tensor, length: int) -> torch.Tensor:
    """Pad ``(time, k, n)`` with NaN frames to ``length`` (a free phase that stopped early)."""
    if t.shape[0] >= length:
        return t[:length]
    pad = t.new_full((length - t.shape[0], *t.shape[1:]), math.nan)
    return torch.cat([t, pad])


def _pad_samples(t: torch.Tensor, k: int, dim: int | None = None) -> torch.Tensor:
    """Keep the first k samples along ``dim`` (default: 1 for 3-D, 0 for 2-D), NaN-padded."""
    if dim is None:
        dim = 1 if t.dim() == 3 else 0
    t = t.detach().narrow(dim, 0, min(k, t.shape[dim]))
    if t.shape[dim] < k:
        shape = list(t.shape)
        shape[dim] = k - t.shape[dim]
        t = torch.cat([t, t.new_full(shape, math.nan)], dim=dim)
    return t
