"""What differentiable-plasticity recordings add: α, η and snapshots of the Hebbian trace.

Every Hebbian pathway is recorded like any pathway (``/pathways/<name>``: w as ``weight``,
its update beside the reference's), and in ``/plasticity/<name>`` (dims ``step`` first):

* ``alpha`` (post, pre; or a scalar for a shared α), ``alpha_update`` (−ĝ_α of the rule),
  ``alpha_update_bp`` (−∂L/∂α of BPTT through the episode, on steps where the trainer
  computed the reference);
* ``eta``, ``eta_update``, ``eta_update_bp`` (scalars);
* ``hebb`` (sample, post, pre): the trace at the end of the episode for the first
  ``hebb_samples`` episodes of the batch;
* ``pattern_angle`` (sample): ∠(Hebb, Σ_k p_k p_kᵀ) in degrees
  (:func:`bioprop.analysis.plasticity.pattern_angle`; NaN when the pathway does not map
  the pattern units onto themselves or the batch has no patterns).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bioprop.plasticity.pathway import HebbianPathway
from bioprop.recording.writer import ExtraVariable
from bioprop.rules.reference import Reference

__all__ = ["plasticity_variables", "plasticity_records"]


def _maps_patterns(circuit, pw: HebbianPathway) -> bool:
    """Whether the trace's first units are the pattern units both ways (the recurrent
    pathway of a network whose inputs reach its units one to one)."""
    from bioprop.plasticity.pathway import OneToOnePathway

    inp = circuit.pathways["input->hidden"] if "input->hidden" in circuit.pathways else None
    return pw.source == pw.target and isinstance(inp, OneToOnePathway)


def plasticity_variables(
    circuit, samples: int, hebb_samples: int
) -> dict[str, dict[str, ExtraVariable]]:
    """The ``plasticity/<pathway>`` layout of every Hebbian pathway of ``circuit``."""
    k = max(0, min(samples, hebb_samples))
    out = {}
    for pw in circuit.hebbian_pathways():
        n_post, n_pre = pw.weight.shape
        a_dims, a_shape = ((), ()) if pw.shared_alpha else (("post", "pre"), (n_post, n_pre))
        g = {
            "alpha": ExtraVariable(a_dims, a_shape, "plasticity coefficients alpha"),
            "alpha_update": ExtraVariable(a_dims, a_shape, "rule's update of alpha, -g_alpha"),
            "alpha_update_bp": ExtraVariable(
                a_dims, a_shape, "BPTT-through-the-episode update of alpha, -dL/dalpha"
            ),
            "eta": ExtraVariable((), (), "rate eta of the Hebbian trace"),
            "eta_update": ExtraVariable((), (), "rule's update of eta, -g_eta"),
            "eta_update_bp": ExtraVariable((), (), "BPTT update of eta, -dL/deta"),
        }
        if k:
            g["hebb"] = ExtraVariable(
                ("sample", "post", "pre"), (k, n_post, n_pre), "Hebbian trace at episode end"
            )
            g["pattern_angle"] = ExtraVariable(
                ("sample",), (k,), "angle(Hebb, sum_k p_k p_k^T) in degrees"
            )
        out[f"plasticity/{pw.name}"] = g
    return out


def _neg(t: torch.Tensor | None, like: torch.Tensor) -> Any:
    return -t.detach() if t is not None else torch.full_like(like, float("nan")).detach()


def plasticity_records(
    circuit,
    reference: Reference | None,
    traces: dict[str, torch.Tensor],
    patterns: torch.Tensor | None,
    samples: int,
    hebb_samples: int,
) -> dict[str, dict[str, Any]]:
    """Values of ``plasticity/<pathway>`` for one record, read after the rule's step
    (``.grad`` holds ĝ) with the episode's final ``traces``."""
    from bioprop.analysis.plasticity import pattern_angle

    k = max(0, min(samples, hebb_samples))
    grads = reference.grads if reference is not None else {}
    out = {}
    for pw in circuit.hebbian_pathways():
        a, e = pw.alpha, pw.eta
        rec: dict[str, Any] = {
            "alpha": a.detach(),
            "alpha_update": _neg(a.grad, a),
            "alpha_update_bp": _neg(grads.get(f"{pw.name}.alpha"), a),
            "eta": e.detach(),
            "eta_update": _neg(e.grad, e),
            "eta_update_bp": _neg(grads.get(f"{pw.name}.eta"), e),
        }
        if k:
            n_post, n_pre = pw.weight.shape
            snap = np.full((k, n_post, n_pre), np.nan, np.float32)
            ang = np.full(k, np.nan, np.float32)
            hebb = traces.get(pw.name)
            if hebb is not None:
                m = min(k, hebb.shape[0])
                snap[:m] = hebb[:m].detach().cpu().float().numpy()
                if patterns is not None and _maps_patterns(circuit, pw):
                    ang[:m] = pattern_angle(hebb[:m], patterns[:m])
            rec["hebb"], rec["pattern_angle"] = snap, ang
        out[f"plasticity/{pw.name}"] = rec
    return out
