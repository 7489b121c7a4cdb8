"""Label encodings shared by data, rules and the spiking inputs."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["one_hot"]


def one_hot(labels, n: int, dtype=torch.float32):
    """Rows of the n×n identity picked by integer ``labels``: e_y with (e_y)_k = [k = y].

    Works on torch tensors (returns a tensor of ``dtype`` on the labels' device) and on
    numpy arrays (returns a float array).  Labels outside ``[0, n)`` are refused."""
    if isinstance(labels, np.ndarray):
        lab = labels.astype(np.int64)
        if lab.size and (lab.min() < 0 or lab.max() >= n):
            raise ValueError(f"labels must lie in [0, {n}), got {lab.min()}..{lab.max()}")
        return np.eye(n)[lab]
    lab = labels.long()
    if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= n):
        raise ValueError(f"labels must lie in [0, {n}), got {int(lab.min())}..{int(lab.max())}")
    return torch.nn.functional.one_hot(lab, n).to(dtype)
