"""The dataset container every loader returns.

Data stays in memory as tensors: ``x`` is float32 ``(N, features)``; ``y`` is
int64 labels ``(N,)`` for classification (float one-hot ``(N, C)`` when
loaded with ``one_hot=True``) or float targets ``(N, outputs)`` for regression.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from bioprop.core.encoding import one_hot as _one_hot

__all__ = ["Dataset"]

KINDS = ("classification", "regression")


@dataclass
class Dataset:
    """Train and test tensors plus what the trainer needs to know about them."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    kind: str
    n_classes: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(
                f"dataset {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}"
            )
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dim() != 2:
                raise ValueError(
                    f"dataset {self.name!r}: x_{split} must be 2-D (samples, features), "
                    f"got shape {tuple(x.shape)}"
                )
            if x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"dataset {self.name!r}: x_{split} has {x.shape[0]} samples but y_{split} "
                    f"has {y.shape[0]}"
                )
        if self.kind == "classification" and self.n_classes is None:
            raise ValueError(f"dataset {self.name!r}: classification needs n_classes")

    @property
    def n_inputs(self) -> int:
        return self.x_train.shape[1]

    @property
    def n_outputs(self) -> int:
        if self.kind == "classification":
            return int(self.n_classes)
        return self.y_train.shape[1]

    @property
    def one_hot(self) -> bool:
        return self.kind == "classification" and self.y_train.dim() == 2

    def with_one_hot(self, one_hot: bool = True) -> Dataset:
        """Labels as one-hot float rows (or back to integer labels)."""
        if self.kind != "classification" or one_hot == self.one_hot:
            return self
        if one_hot:
            n = self.n_classes
            return replace(self, y_train=_one_hot(self.y_train, n), y_test=_one_hot(self.y_test, n))
        return replace(self, y_train=self.y_train.argmax(1), y_test=self.y_test.argmax(1))

    def to(self, device: str | torch.device) -> Dataset:
        """A copy whose tensors live on ``device``."""
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> Dataset:
        """The first ``n_train`` / ``n_test`` samples (for quick runs)."""
        return replace(
            self,
            x_train=self.x_train[:n_train],
            y_train=self.y_train[:n_train],
            x_test=self.x_test[:n_test],
            y_test=self.y_test[:n_test],
        )

    def validation_split(self, size: int | float, seed: int | None = None) -> Dataset:
        """The training set split in two, for tuning: ``size`` training samples (a fraction
        of them when ``size < 1``) become the test part, the rest still train; the real test
        set is dropped, so it stays untouched until the final run.

        With ``seed=None`` the held-out samples are the *last* ``size`` (the MNIST /
        Fashion-MNIST convention: the last 10 000 training images); with a seed they are a
        random subset drawn from the stream ``seeding.generator(seed, "validation split")``,
        the same for every rule of that seed.
        """
        from bioprop.core import seeding

        n = self.x_train.shape[0]
        if isinstance(size, float):  # a fraction of the training set; others are refused below
            k = round(size * n) if 0 < size < 1 else -1
        else:
            k = int(size)
        if not 0 < k < n:
            raise ValueError(
                f"dataset {self.name!r}: a validation split of {size!r} must hold out between "
                f"1 and {n - 1} of its {n} training samples; pass a count or a fraction in (0, 1)"
            )
        if seed is None:
            kept, held = torch.arange(n - k), torch.arange(n - k, n)
            how = f"last {k}"
        else:
            perm = torch.randperm(n, generator=seeding.generator(seed, "validation split"))
            held, kept = perm[:k], perm[k:]
            how = f"{k} drawn with seed {seed}"
        return replace(
            self,
            name=f"{self.name} (validation split: {how} training samples)",
            x_train=self.x_train[kept],
            y_train=self.y_train[kept],
            x_test=self.x_train[held],
            y_test=self.y_train[held],
            meta={**self.meta, "validation": k},
        )

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, {self.kind}, train={tuple(self.x_train.shape)}, "
            f"test={tuple(self.x_test.shape)}, outputs={self.n_outputs})"
        )
