"""Recordings of recurrent training: the standard groups plus boundary gradients and curriculum.

Built on :class:`bioprop.recording.writer.Recorder` (same file format, opened by ``bioprop.load``):

* ``/pathways/<name>``: ``weight``, ``bias``, ``weight_update`` (−ĝ, the rule's summed
  window gradient) and ``weight_update_bp`` (−∂L/∂θ of *full*, untruncated BPTT for the same
  batch and weights — the shadow reference; for the recurrent ``hidden->hidden:*`` pathways
  too);
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

from bioprop.recording.writer import PATHWAY_VARIABLES, ExtraVariable, Record, Recorder
from bioprop.recurrent.circuit import RecurrentCircuit
from bioprop.recurrent.rules import SequenceSignals
from bioprop.rules.contract import Signals

__all__ = ["SequenceRecorder", "boundary_angle", "relative_error", "RECURRENT_VARIABLES"]

RECURRENT_VARIABLES = (*PATHWAY_VARIABLES, "rate")


def boundary_angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """∠(a, b) in degrees over all entries (NaN when either is zero)."""
    na, nb = float(a.norm()), float(b.norm())
    if na == 0 or nb == 0:
        return math.nan
    cos = float((a * b).sum()) / (na * nb)
    return math.degrees(math.acos(max(-1.0, min(1.0, cos))))


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ (NaN when b = 0)."""
    nb = float(b.norm())
    return float((a - b).norm()) / nb if nb > 0 else math.nan


class SequenceRecorder:
    """A :class:`Recorder` for a :class:`RecurrentCircuit` with the extra groups above.

    Parameters
    ----------
    record
        Path, interval and sample count (``Record``); ``variables`` defaults to
        :data:`RECURRENT_VARIABLES`.
    circuit
        The circuit (with the rule attached, so ``sg:hidden`` is recorded too).
    max_boundaries
        Size of the ``boundary`` dimension (later boundaries are not recorded).
    attrs
        Provenance for the root (rule, task, T, budget, ...).
    """

    def __init__(
        self,
        record: Record,
        circuit: RecurrentCircuit,
        max_boundaries: int = 32,
        attrs: dict[str, Any] | None = None,
    ):
        if record.variables is None:
            record.variables = list(RECURRENT_VARIABLES)
        self.k = max(1, record.samples)
        self.max_boundaries = max_boundaries
        self.state_size = circuit.state_size
        dims4 = ("boundary", "sample", "unit")
        shape4 = (max_boundaries, self.k, circuit.state_size)
        extra = {
            "interfaces/hidden": {
                "synthetic": ExtraVariable(dims4, shape4, "synthetic gradient M(s_b) per sample"),
                "true": ExtraVariable(dims4, shape4, "true future gradient B dL_{>=b}/ds_b"),
                "target": ExtraVariable(dims4, shape4, "bootstrapped target g_b of M"),
                "angle": ExtraVariable(
                    ("boundary",), (max_boundaries,), "angle(synthetic, true) in degrees"
                ),
                "relative_error": ExtraVariable(
                    ("boundary",), (max_boundaries,), "|synthetic - true| / |true|"
                ),
                "module_loss": ExtraVariable((), (), "L_M summed over boundaries"),
            },
            "curriculum": {
                "n": ExtraVariable((), (), "sequence length N of the batch"),
                "error_bits": ExtraVariable((), (), "error of the batch, bits per character"),
                "max_solved": ExtraVariable((), (), "largest N solved so far"),
            },
        }
        self.recorder = Recorder(
            record, circuit, attrs=attrs, extra=extra, reference_roles=("feedforward", "lateral")
        )
        self.spec = record

    def due(self, step: int) -> bool:
        return self.spec.due(step)

    def write(
        self,
        step: int,
        signals: SequenceSignals,
        reference: tuple[float, dict[str, torch.Tensor], list[torch.Tensor]] | None,
        n: int,
        max_solved: int,
    ) -> None:
        """Append one record (call after ``rule.backward``, before the optimizer step)."""
        mb, k, su = self.max_boundaries, self.k, self.state_size
        arrays = {
            v: np.full((mb, k, su), np.nan, np.float32) for v in ("synthetic", "true", "target")
        }
        angle = np.full(mb, np.nan, np.float32)
        rel = np.full(mb, np.nan, np.float32)
        true = reference[2] if reference is not None else []
        for b in range(min(mb, len(true))):
            t = true[b]
            arrays["true"][b, : min(k, len(t))] = t[:k].float().numpy()
            if b < len(signals.synthetic):
                s = signals.synthetic[b]
                arrays["synthetic"][b, : min(k, len(s))] = s[:k].float().numpy()
                arrays["target"][b, : min(k, len(s))] = signals.target[b][:k].float().numpy()
                angle[b] = boundary_angle(s, t)
                rel[b] = relative_error(s, t)
        records = {
            "interfaces/hidden": {
                **arrays,
                "angle": angle,
                "relative_error": rel,
                "module_loss": signals.module_loss,
            },
            "curriculum": {"n": n, "error_bits": signals.error, "max_solved": max_solved},
        }
        last = signals.final_state
        rates = {"hidden": last[0]} if last else {}
        if len(last) > 1:
            rates["cell"] = last[1]
        sig = Signals(
            loss=torch.tensor(signals.loss), output=signals.logits[-1], rates=rates, records=records
        )
        ref = None if reference is None else (reference[1], {}, torch.tensor(reference[0]))
        self.recorder.write(step, 0, sig, reference=ref)

    def close(self) -> None:
        self.recorder.close()

    def __enter__(self) -> SequenceRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
