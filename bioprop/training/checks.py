"""Checks of a training run's inputs, made before any step so that bad input is named as
such (not reported later as a diverging rule or an index error deep in torch)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["check_data", "check_max_steps", "effective_batch_size"]


def check_max_steps(max_steps: Any) -> None:
    """``max_steps`` is None or a non-negative integer."""
    if max_steps is None:
        return
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 0:
        raise ValueError(f"max_steps must be None or a non-negative integer, got {max_steps!r}")


def effective_batch_size(batch_size: int, n_train: int) -> int:
    """The batch size a run uses: ``batch_size`` clamped to the training set's size (one
    batch holding every sample, as the last batch of an epoch holds what is left)."""
    return min(batch_size, n_train)


def check_data(data) -> None:
    """Refuse NaN/Inf in inputs or targets and class labels outside ``[0, n_classes)``,
    naming the dataset, the split and the first offending sample."""
    for split in ("train", "test"):
        for what in ("x", "y"):
            t: torch.Tensor = getattr(data, f"{what}_{split}")
            if getattr(t, "_bioprop_finite_at", None) == t._version:
                continue  # checked before and not modified since (every epoch's train call)
            if t.is_floating_point() and t.numel():
                bad = ~torch.isfinite(t)
                if bool(bad.any()):
                    first = tuple(int(i) for i in bad.nonzero()[0])
                    raise ValueError(
                        f"data {data.name!r}: {what}_{split} holds {int(bad.sum())} NaN/Inf "
                        f"value(s), the first at index {first}; this is bad data, not a "
                        "diverging rule: clean or impute it before training"
                    )
                t._bioprop_finite_at = t._version
        if data.kind == "classification" and data.n_classes is not None:
            y = getattr(data, f"y_{split}")
            if not y.is_floating_point() and y.dim() == 1 and y.numel():
                lo, hi = int(y.min()), int(y.max())
                if lo < 0 or hi >= data.n_classes:
                    i = int(((y < 0) | (y >= data.n_classes)).nonzero()[0])
                    raise ValueError(
                        f"data {data.name!r}: y_{split} holds class labels {lo}..{hi} but the "
                        f"data has n_classes={data.n_classes} (labels 0..{data.n_classes - 1}); "
                        f"the first out of range is y_{split}[{i}] = {int(y[i])}"
                    )
