"""What recurrent recordings add to the standard groups: boundary gradients and the curriculum.

The one writer (:class:`bioprop.recording.writer.Recorder`) writes them as declared extra
variables; :func:`bioprop.recurrent.loop.fit` declares them (:func:`extra_variables`) and
fills them on recording steps (:func:`boundary_records`).  Layout (``docs/rnn_dni.md``):

* ``/pathways/<name>``: ``weight``, ``bias``, ``weight_update`` (−ĝ, the rule's summed
  window gradient) and ``weight_update_bp`` (−∂L/∂θ of *full*, untruncated BPTT for the same
  batch and weights, the recurrent ``hidden->hidden:*`` pathways included);
* ``/populations/<name>/rate``: rates at the last step of the batch's sequences;
* ``/interfaces/hidden`` (dims ``step, boundary, sample, unit``; ``unit`` indexes the state
  s = h or h ⊕ c): ``synthetic`` δ̂_b, ``true`` g*_b = B·∂L_{≥b}/∂s_b (full BPTT),
  ``target`` g_b (the bootstrapped target M learned from), and per boundary ``angle``
  ∠(δ̂_b, g*_b) in degrees over (sample, unit) and ``relative_error`` ‖δ̂_b − g*_b‖/‖g*_b‖;
  ``module_loss`` L_M; boundaries beyond the sequence's are NaN;
* ``/curriculum`` (dim ``step``): ``n`` (N of the batch), ``error_bits`` (bits per character of
  the batch) and ``max_solved`` (the largest N that met the criterion so far).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from bioprop.analysis.alignment import angle
from bioprop.recording.writer import PATHWAY_VARIABLES, ExtraVariable
from bioprop.rules.contract import Signals
from bioprop.rules.reference import Reference

__all__ = ["extra_variables", "boundary_records", "relative_error", "RECURRENT_VARIABLES"]

#: the variables a recurrent recording holds by default (no per-sample δ: the teaching
#: signals live at the window boundaries, in ``interfaces/hidden``)
RECURRENT_VARIABLES = (*PATHWAY_VARIABLES, "rate")


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ (NaN when b = 0)."""
    nb = float(b.norm())
    return float((a - b).norm()) / nb if nb > 0 else math.nan


def extra_variables(
    state_size: int, samples: int, boundaries: int
) -> dict[str, dict[str, ExtraVariable]]:
    """The ``interfaces/hidden`` and ``curriculum`` layouts for ``samples`` recorded sequences
    and up to ``boundaries`` window boundaries."""
    dims = ("boundary", "sample", "unit")
    shape = (boundaries, samples, state_size)
    per_boundary = (("boundary",), (boundaries,))
    return {
        "interfaces/hidden": {
            "synthetic": ExtraVariable(dims, shape, "synthetic gradient M(s_b) per sample"),
            "true": ExtraVariable(dims, shape, "true future gradient B dL_{>=b}/ds_b"),
            "target": ExtraVariable(dims, shape, "bootstrapped target g_b of M"),
            "angle": ExtraVariable(*per_boundary, "angle(synthetic, true) in degrees"),
            "relative_error": ExtraVariable(*per_boundary, "|synthetic - true| / |true|"),
            "module_loss": ExtraVariable((), (), "L_M summed over boundaries"),
        },
        "curriculum": {
            "n": ExtraVariable((), (), "sequence length N of the batch"),
            "error_bits": ExtraVariable((), (), "error of the batch, bits per character"),
            "max_solved": ExtraVariable((), (), "largest N solved so far"),
        },
    }


def boundary_records(
    signals: Signals, reference: Reference | None, samples: int, boundaries: int, state_size: int
) -> dict[str, Any]:
    """Values of ``interfaces/hidden`` for one record: the rule's δ̂_b and targets (from
    ``signals.extra``) beside the reference's true g*_b, with their angle
    (:func:`bioprop.analysis.angle`) and relative error over the whole batch."""
    true = list(getattr(reference, "boundaries", None) or [])
    synthetic, target = signals.extra.get("synthetic", []), signals.extra.get("target", [])
    out: dict[str, Any] = {
        v: np.full((boundaries, samples, state_size), np.nan, np.float32)
        for v in ("synthetic", "true", "target")
    }
    out["angle"] = np.full(boundaries, np.nan, np.float32)
    out["relative_error"] = np.full(boundaries, np.nan, np.float32)
    out["module_loss"] = signals.extra.get("module_loss", math.nan)

    def put(var: str, b: int, t: torch.Tensor) -> None:
        out[var][b, : min(samples, len(t))] = t[:samples].detach().cpu().float().numpy()

    for b in range(min(boundaries, max(len(true), len(synthetic)))):
        if b < len(synthetic):
            put("synthetic", b, synthetic[b])
            put("target", b, target[b])
        if b < len(true):
            put("true", b, true[b])
            if b < len(synthetic):
                out["angle"][b] = angle(synthetic[b], true[b])
                out["relative_error"][b] = relative_error(synthetic[b], true[b])
    return out
