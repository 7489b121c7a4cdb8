"""Datasets: real loaders (IDX files, MNIST, Fashion-MNIST, MNIST-1D) and procedural tasks.

``bioprop.data.load(name, **options)`` returns a :class:`Dataset` of tensors.
"""

from __future__ import annotations

from collections.abc import Callable

from bioprop.data.base import Dataset
from bioprop.data.procedural import linear_teacher, nonlinear_teacher

__all__ = ["Dataset", "load", "names", "register", "linear_teacher", "nonlinear_teacher"]

_LOADERS: dict[str, tuple[Callable[..., Dataset], str]] = {}


def register(name: str, description: str) -> Callable:
    """Decorator: make a loader available as ``load(name, ...)``."""

    def deco(fn):
        _LOADERS[name] = (fn, description)
        return fn

    return deco


def load(name: str, one_hot: bool = False, **options) -> Dataset:
    """Load a dataset by name; ``one_hot=True`` turns class labels into one-hot rows."""
    try:
        fn, _ = _LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(names())}") from None
    ds = fn(**options)
    return ds.with_one_hot(one_hot) if one_hot else ds


def names() -> list[str]:
    return list(_LOADERS)


def describe() -> dict[str, str]:
    return {n: d for n, (_, d) in _LOADERS.items()}


register("linear-teacher", "y = T x, T ~ U[-1,1]^(10x30), x ~ N(0, I) (Lillicrap Fig. 1)")(
    linear_teacher
)
register("nonlinear-teacher", "targets of a fixed random 30-20-10 tanh network")(nonlinear_teacher)

# Real datasets (files or generated and cached; see bioprop.data.mnist / .mnist1d).
# Imported under private names so ``bioprop.data.mnist`` stays the module.
from bioprop.data import mnist as _mnist  # noqa: E402
from bioprop.data import mnist1d as _mnist1d  # noqa: E402

register("mnist", "MNIST digits, 60000/10000 28x28 images as 784 features in [0, 1]")(_mnist.mnist)
register("fashion-mnist", "Fashion-MNIST (Zalando), 60000/10000 28x28 images as 784 features")(
    _mnist.fashion_mnist
)
register("mnist1d", "MNIST-1D: 40-sample 1-D digit signals, generated from a seed and cached")(
    _mnist1d.mnist1d
)
