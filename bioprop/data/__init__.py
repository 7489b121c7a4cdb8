"""Datasets: real loaders (IDX files, MNIST, Fashion-MNIST, MNIST-1D) and procedural tasks.

``bioprop.data.load(name, **options)`` returns a :class:`Dataset` of tensors.
``bioprop.data.load_for_run(name, quick=...)`` is what runs use: for a quick run
whose real image files are not on disk it returns a seeded synthetic stand-in
(:mod:`bioprop.data.synthetic`) instead, and says so on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from bioprop.data.base import Dataset
from bioprop.data.procedural import linear_teacher, nonlinear_teacher

__all__ = [
    "Dataset",
    "load",
    "load_for_run",
    "names",
    "register",
    "linear_teacher",
    "nonlinear_teacher",
    "synthetic_images",
]

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

# Robot-arm inverse dynamics (kickback's regressions): a procedural arm, and SARCOS /
# Barrett WAM from files a user has (never downloaded).
from bioprop.data import arm as _arm  # noqa: E402
from bioprop.data import sarcos as _sarcos  # noqa: E402

register(
    "planar-arm",
    "inverse dynamics of a simulated 2- or 3-link planar arm: (q, dq, ddq) -> joint torques",
)(_arm.planar_arm)
register("sarcos", "SARCOS inverse dynamics (21 inputs, 7 torques) from files you have")(
    _sarcos.sarcos
)
register("barrett", "Barrett WAM inverse dynamics from files you have")(_sarcos.barrett)


# -- the one place that decides on a synthetic stand-in --------------------------------
from bioprop.data.synthetic import stand_in as _stand_in  # noqa: E402
from bioprop.data.synthetic import synthetic_images  # noqa: E402

#: Datasets of files that a quick run may replace by a synthetic stand-in.
_STAND_IN_SOURCES = {"mnist": _mnist.MNIST, "fashion-mnist": _mnist.FASHION_MNIST}
_announced: set[str] = set()


def load_for_run(
    name: str,
    quick: bool = False,
    quick_size: tuple[int, int] = (2000, 1000),
    one_hot: bool = False,
    **options,
) -> Dataset:
    """The dataset a run trains on; the one place that decides on a synthetic stand-in.

    Parameters
    ----------
    name
        A registered dataset (see :func:`names`).
    quick
        False: exactly ``load(name, one_hot=one_hot, **options)``: missing files are
        downloaded or raise :class:`~bioprop.data.mnist.MissingDataError`.
        True: the first ``quick_size`` samples. A quick run never downloads
        (``download=False`` unless ``options`` say otherwise); when the files of
        ``mnist`` / ``fashion-mnist`` are not on disk, it uses a seeded synthetic
        stand-in of the same shape and classes (seed 0, so every run gets the same),
        named ``"<name> (synthetic stand-in)"`` with ``meta["synthetic"] = True``, and
        prints one line on stderr saying so and why (once per dataset and process).
    quick_size
        ``(n_train, n_test)`` of a quick run.
    one_hot, options
        As for :func:`load`.
    """
    if not quick:
        return load(name, one_hot=one_hot, **options)
    n_train, n_test = quick_size
    source = _STAND_IN_SOURCES.get(name)
    if source is None:
        ds = load(name, **options)
    else:
        options.setdefault("download", False)
        try:
            ds = load(name, **options)
        except _mnist.MissingDataError as exc:
            where = ", ".join(str(d) for d in exc.searched) or "its folders"
            why = "quick runs do not download" if exc.reason == "download=False" else exc.reason
            reason = f"{source.title} files not found in {where} ({why})"
            ds = _stand_in(
                name, n_train, n_test, seed=0, class_names=list(source.classes), reason=reason
            )
            if name not in _announced:
                _announced.add(name)
                print(
                    f"bioprop: {reason}; this quick run uses a seeded synthetic stand-in, "
                    f"{ds.name!r}",
                    file=sys.stderr,
                    flush=True,
                )
    ds = ds.subset(n_train, n_test)
    return ds.with_one_hot(one_hot) if one_hot else ds
