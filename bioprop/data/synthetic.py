"""A seeded synthetic stand-in for MNIST-shaped image data (no files, no network).

:func:`synthetic_images` draws images of a given shape from ``classes`` class
prototypes: each prototype is a centred object (an ellipse with class-specific
holes) filled with a smooth random texture; a sample is its class's prototype at a
random brightness plus pixel noise on the object, on an exact-zero background.

Its pixel statistics are Fashion-MNIST's where they matter for training: pixels in
[0, 1], about half of them exactly 0, mean pixel 0.286, and the spread of the
per-image brightness (sd 0.12 against the real 0.125), so learning rates tuned on the
real data behave alike on it.  That spread matters: ``circuits/ep_mnist.py``'s bp
twin with a linear output (lr 0.2 / 0.1) trains within about 20 % of its stability
edge on the real images, and diverges within 20 steps when every real image is
rescaled to the same brightness, or on uniform random pixels (mean 0.5, +60 % input
power) as the old fallback was.  A 784-1000-10 MLP trained by backprop gets far
below chance on the stand-in within a few dozen steps.

:func:`stand_in` makes one for a named image dataset (same shape, same classes, the
name marked ``"<name> (synthetic stand-in)"``, ``meta["synthetic"] = True``);
:func:`bioprop.data.load_for_run` is the one place that decides to use it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from bioprop.core import seeding
from bioprop.data.base import Dataset

__all__ = ["MARK", "synthetic_images", "stand_in"]

#: Appended to a dataset's name when its data are synthetic.
MARK = " (synthetic stand-in)"

#: Fashion-MNIST's mean pixel on the [0, 1] scale (train set).
FASHION_MNIST_MEAN = 0.286


def _check(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"synthetic_images: {name} must be an integer >= {minimum}, got {value!r}")


def _prototypes(g: torch.Generator, shape: tuple[int, int], classes: int):
    """(classes, H, W) prototypes in [0, 1] and their boolean object masks.

    Each class has its own object: an ellipse nearly filling the image, with holes where
    a smooth random field falls below a class-specific threshold (about half of the
    pixels stay 0, as in Fashion-MNIST), filled with a second smooth random texture.
    """
    h, w = shape
    ys = torch.linspace(-1, 1, h).view(1, h, 1)
    xs = torch.linspace(-1, 1, w).view(1, 1, w)
    half_y = 0.8 + 0.15 * torch.rand(classes, 1, 1, generator=g)
    half_x = 0.8 + 0.15 * torch.rand(classes, 1, 1, generator=g)
    threshold = 0.2 + 0.2 * torch.rand(classes, 1, 1, generator=g)
    # two smooth fields per class: coarse uniform noise upsampled to the image size
    coarse = torch.rand(classes, 2, max(2, h // 5), max(2, w // 5), generator=g)
    field = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    mask = ((ys / half_y) ** 2 + (xs / half_x) ** 2 < 1.0) & (field[:, 1] > threshold)
    proto = (0.5 + 0.5 * field[:, 0]) * mask
    return proto, mask


def synthetic_images(
    n_train: int,
    n_test: int,
    seed: int = 0,
    shape: tuple[int, int] = (28, 28),
    classes: int = 10,
    name: str = "synthetic-images",
    noise: float = 0.15,
    mean: float = FASHION_MNIST_MEAN,
) -> Dataset:
    """Seeded images of class prototypes plus noise, as a classification :class:`Dataset`.

    Parameters
    ----------
    n_train, n_test
        Number of train and test samples (drawn from the same distribution).
    seed
        The same seed gives the same prototypes, samples and labels.
    shape
        Image ``(rows, cols)``; each image becomes a row of ``rows * cols`` features.
    classes
        Number of classes (one prototype each; labels uniform over them).
    name
        The dataset's name.
    noise
        Standard deviation of the Gaussian pixel noise on the object.
    mean
        The mean pixel the images are scaled to (default: Fashion-MNIST's, 0.286).

    Returns
    -------
    Dataset
        ``x`` float32 ``(N, rows * cols)`` in [0, 1], ``y`` int64 ``(N,)``;
        ``meta`` has ``synthetic=True``, ``seed``, ``image_shape`` and ``classes``.
    """
    _check("n_train", n_train, 0)
    _check("n_test", n_test, 0)
    _check("classes", classes, 2)
    if len(shape) != 2 or any(not isinstance(s, int) or s < 4 for s in shape):
        raise ValueError(f"synthetic_images: shape must be (rows, cols), each >= 4, got {shape}")
    if not 0 < mean < 1:
        raise ValueError(f"synthetic_images: mean must lie in (0, 1), got {mean!r}")
    shape = (int(shape[0]), int(shape[1]))
    g = seeding.generator(seed, "synthetic images")
    proto, mask = _prototypes(g, shape, classes)
    n = n_train + n_test
    y = torch.randint(0, classes, (n,), generator=g)
    # per-image brightness spread like Fashion-MNIST's (see the module docstring)
    brightness = 0.2 + 1.6 * torch.rand(n, 1, 1, generator=g)
    x = proto[y] * brightness + noise * torch.randn(n, *shape, generator=g) * mask[y]
    x = x.clamp_(0.0, 1.0)
    if n:
        x = x.mul_(mean / x.mean()).clamp_(0.0, 1.0)
    x = x.reshape(n, -1)
    return Dataset(
        name,
        x[:n_train],
        y[:n_train],
        x[n_train:],
        y[n_train:],
        "classification",
        n_classes=classes,
        meta={
            "synthetic": True,
            "seed": int(seed),
            "image_shape": shape,
            "classes": [str(c) for c in range(classes)],
            "generator": "bioprop.data.synthetic.synthetic_images",
        },
    )


def stand_in(
    name: str,
    n_train: int,
    n_test: int,
    seed: int = 0,
    shape: tuple[int, int] = (28, 28),
    class_names: list[str] | None = None,
    reason: str = "",
) -> Dataset:
    """:func:`synthetic_images` in place of the dataset ``name``.

    The result is named ``"<name> (synthetic stand-in)"``; ``meta`` has
    ``synthetic=True``, ``stands_in_for=name``, ``reason`` and the real class names
    (when given).
    """
    classes = len(class_names) if class_names else 10
    ds = synthetic_images(n_train, n_test, seed=seed, shape=shape, classes=classes)
    ds.name = name + MARK
    ds.meta.update(stands_in_for=name, reason=reason)
    if class_names:
        ds.meta["classes"] = list(class_names)
    return ds
