"""MNIST-1D (Greydanus & Kobak 2020): 40-sample 1-D signals of the ten digits.

Generated locally with the ``mnist1d`` package's ``make_dataset`` (never its
``get_dataset``, which downloads), then cached as ``.npz`` under
``<data dir>/mnist1d/`` keyed by the generator arguments, so a second call with
the same arguments only reads the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import warnings
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

from bioprop.data.base import Dataset
from bioprop.data.mnist import data_dir

__all__ = ["mnist1d"]

# Generator arguments a caller may change; the sample counts, split and seed
# have their own parameters, and ``url`` belongs to the download we never use.
_RESERVED = ("num_samples", "train_split", "seed", "url")


def _package_version() -> str:
    try:
        return version("mnist1d")
    except PackageNotFoundError:  # pragma: no cover - installed without metadata
        return "unknown"


def _generate(args: dict) -> tuple[np.ndarray, np.ndarray]:
    """Run ``make_dataset`` without touching the caller's global random state."""
    from mnist1d.data import make_dataset
    from mnist1d.utils import ObjectView

    # make_dataset seeds and draws from the legacy global RNGs; restore them after.
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        d = make_dataset(ObjectView(dict(args)))
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    return d["x"], d["y"]


def mnist1d(
    n_train: int = 4000,
    n_test: int = 1000,
    seed: int = 0,
    cache: bool = True,
    **generator_args,
) -> Dataset:
    """MNIST-1D: ten template signals, padded, scaled, translated, sheared and noised.

    Parameters
    ----------
    n_train, n_test
        Sample counts. The generator draws ``n_train + n_test`` samples (rounded
        up to a multiple of 10: equal counts per class) in one shuffled batch,
        centred and scaled to unit standard deviation as a whole, and the first
        ``n_train`` become the train set. With the defaults and ``seed=42`` this
        is the split of the package's reference dataset.
    seed
        Seed of the generator (the package's own default is 42).
    cache
        Read and write ``<data dir>/mnist1d/mnist1d-<key>.npz`` (data dir:
        ``$BIOPROP_DATA`` or ``pooch.os_cache("bioprop")``).
    **generator_args
        Overrides of ``mnist1d.data.get_dataset_args()``, e.g. ``shuffle_seq=True``
        or ``iid_noise_scale=0.05``.

    Returns
    -------
    Dataset
        ``x`` float32 ``(N, 40)`` (``final_seq_length`` features), ``y`` int64
        ``(N,)``, 10 classes.
    """
    for k, v in (("n_train", n_train), ("n_test", n_test)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"mnist1d: {k} must be a positive integer, got {v!r}")
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    bad = sorted(set(generator_args) - (set(args) - set(_RESERVED)))
    if bad:
        allowed = ", ".join(sorted(set(args) - set(_RESERVED)))
        raise ValueError(
            f"mnist1d: unknown generator argument(s) {', '.join(bad)}; use n_train, "
            f"n_test, seed or one of: {allowed}"
        )
    total = -(-(n_train + n_test) // 10) * 10  # make_dataset draws num_samples // 10 per class
    args.update(generator_args, num_samples=total, train_split=1.0, seed=seed)
    del args["url"]

    key_args = {**args, "mnist1d_version": _package_version()}
    key = hashlib.sha256(json.dumps(key_args, sort_keys=True).encode()).hexdigest()[:16]
    path = data_dir() / "mnist1d" / f"mnist1d-{key}.npz"
    x = y = None
    if cache and path.is_file():
        try:
            with np.load(path) as f:
                x, y = f["x"], f["y"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            x = y = None  # unreadable cache file: regenerate and overwrite it
    if x is None:
        x, y = _generate(args)
        x, y = x.astype(np.float32), y.astype(np.int64)
        if cache:
            try:
                _save(path, x, y, key_args)
            except OSError as e:
                warnings.warn(
                    f"mnist1d: could not write the cache {path} ({e}); the data will be "
                    f"generated again next time. Set BIOPROP_DATA to a writable directory.",
                    stacklevel=2,
                )
    x_t, y_t = torch.from_numpy(x), torch.from_numpy(y)
    end = n_train + n_test
    return Dataset(
        "mnist1d",
        x_t[:n_train],
        y_t[:n_train],
        x_t[n_train:end],
        y_t[n_train:end],
        "classification",
        n_classes=10,
        meta={"seed": seed, "generator_args": args, "cache": str(path) if cache else None},
    )


def _save(path: Path, x: np.ndarray, y: np.ndarray, key_args: dict) -> None:
    """Write the cache atomically (a temp file renamed), so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, x=x, y=y, args=json.dumps(key_args, sort_keys=True))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
