"""SARCOS and Barrett WAM inverse dynamics, read from files a user has.

Both are robot-arm regressions (Balduzzi et al. 2015 train kickback on them): each row
holds a 7-joint arm's positions, velocities and accelerations (3·7 = 21 inputs) followed by
its 7 joint torques.  They are not downloaded: put the files in ``<data dir>/sarcos`` or
``<data dir>/barrett`` (data dir: ``$BIOPROP_DATA``, else ``~/.cache/bioprop``), or pass
``root=``.  Files, by stem, in any of the formats ``.mat`` (MATLAB, v5 or v7.3), ``.npy``,
``.csv`` / ``.txt`` (comma or whitespace separated):

=========== =========================== ================================
dataset     training file               test file
=========== =========================== ================================
``sarcos``  ``sarcos_inv``              ``sarcos_inv_test``
``barrett`` ``barrett_inv``             ``barrett_inv_test``
=========== =========================== ================================

SARCOS is published by Vijayakumar & Schaal with the GPML book's data
(``sarcos_inv.mat``, 44 484 × 28, and ``sarcos_inv_test.mat``, 4 449 × 28).  Without the
files, loading raises :class:`~bioprop.data.mnist.MissingDataError` naming the folders
searched and the file names expected; ``planar-arm`` is the procedural stand-in.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from bioprop.data.base import Dataset
from bioprop.data.mnist import MissingDataError, data_dir

__all__ = ["ROBOTS", "find_files", "read_matrix", "robot_inverse_dynamics", "sarcos", "barrett"]

#: dataset name -> (training stem, test stem, title, where to get it)
ROBOTS = {
    "sarcos": (
        "sarcos_inv",
        "sarcos_inv_test",
        "SARCOS inverse dynamics",
        "the GPML data page (www.gaussianprocess.org/gpml/data/)",
    ),
    "barrett": (
        "barrett_inv",
        "barrett_inv_test",
        "Barrett WAM inverse dynamics",
        "the authors of the Barrett WAM recordings (Nguyen-Tuong & Peters)",
    ),
}
SUFFIXES = (".mat", ".npy", ".csv", ".txt")


def _search_dirs(name: str, root: str | os.PathLike | None) -> list[Path]:
    return [Path(root).expanduser()] if root is not None else [data_dir() / name]


def find_files(name: str, root: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """The training and test files of ``name`` (``"sarcos"`` or ``"barrett"``); raises
    :class:`MissingDataError` saying where they were looked for."""
    if name not in ROBOTS:
        raise ValueError(f"unknown robot dataset {name!r}; choose one of {', '.join(ROBOTS)}")
    train_stem, test_stem, title, source = ROBOTS[name]
    dirs = _search_dirs(name, root)
    for d in dirs:
        found = []
        for stem in (train_stem, test_stem):
            hits = [d / f"{stem}{s}" for s in SUFFIXES if (d / f"{stem}{s}").is_file()]
            found.append(hits[0] if hits else None)
        if all(found):
            return found[0], found[1]
    where = ", ".join(str(d) for d in dirs)
    raise MissingDataError(
        f"{title} files not found in {where}: put {train_stem}.mat and {test_stem}.mat (or "
        f".npy / .csv with the same stems) there, from {source}, or pass root=...; bioprop "
        "does not download them. The procedural stand-in 'planar-arm' needs no files",
        dataset=name,
        searched=dirs,
        reason="not on disk",
    )


def read_matrix(path: str | os.PathLike) -> np.ndarray:
    """A 2-D float array from a ``.mat`` (its one matrix), ``.npy``, ``.csv`` or ``.txt``."""
    path = Path(path)
    if path.suffix == ".npy":
        a = np.load(path)
    elif path.suffix == ".mat":
        a = _read_mat(path)
    else:
        with open(path) as fh:
            first = fh.readline()
        a = np.loadtxt(path, delimiter="," if "," in first else None, ndmin=2)
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D matrix (samples x columns), got {a.shape}")
    return a


def _read_mat(path: Path) -> np.ndarray:
    import scipy.io

    try:
        content = scipy.io.loadmat(path)
    except NotImplementedError:  # MATLAB v7.3 is HDF5
        import h5py

        with h5py.File(path, "r") as f:
            arrays = {k: np.asarray(v).T for k, v in f.items() if hasattr(v, "shape")}
    else:
        arrays = {k: v for k, v in content.items() if not k.startswith("__")}
    mats = {k: v for k, v in arrays.items() if getattr(v, "ndim", 0) == 2}
    if len(mats) != 1:
        raise ValueError(f"{path}: expected one matrix in the .mat file, found {sorted(mats)}")
    return next(iter(mats.values()))


def robot_inverse_dynamics(
    name: str,
    root: str | os.PathLike | None = None,
    outputs: tuple[int, ...] | None = None,
    validation: int = 0,
    standardize: bool = True,
) -> Dataset:
    """A robot-arm inverse-dynamics dataset from its files: inputs (q, q̇, q̈) of every
    joint, targets the torques of the joints in ``outputs`` (0-based; default all).

    ``validation=k`` holds out the last ``k`` training rows as the returned dataset's
    ``test`` part (the test file is not read into it); ``standardize`` scales inputs and
    targets with the training rows' mean and standard deviation (the normalized squared
    error is then the mean over joints of MSE / variance)."""
    train_path, test_path = find_files(name, root)
    train, test = read_matrix(train_path), read_matrix(test_path)
    cols = train.shape[1]
    if cols % 4 or test.shape[1] != cols:
        raise ValueError(
            f"{name}: expected 4·dof columns (q, dq, ddq, torque of each joint) in both files, "
            f"got {cols} and {test.shape[1]}"
        )
    dof = cols // 4
    outputs = tuple(range(dof)) if outputs is None else tuple(outputs)
    if not outputs or any(not isinstance(o, int) or not 0 <= o < dof for o in outputs):
        raise ValueError(f"{name}: outputs must be joint indices in 0..{dof - 1}, got {outputs}")
    if not isinstance(validation, int) or not 0 <= validation < len(train):
        raise ValueError(
            f"{name}: validation must be an integer in [0, {len(train)}), got {validation!r}"
        )
    pick = [3 * dof + o for o in outputs]
    x_tr, y_tr = torch.from_numpy(train[:, : 3 * dof]), torch.from_numpy(train[:, pick])
    x_te, y_te = torch.from_numpy(test[:, : 3 * dof]), torch.from_numpy(test[:, pick])
    meta = {"files": [str(train_path), str(test_path)], "outputs": list(outputs), "dof": dof}
    if standardize:
        mx, sx = x_tr.mean(0), x_tr.std(0).clamp_min(1e-12)
        my, sy = y_tr.mean(0), y_tr.std(0).clamp_min(1e-12)
        x_tr, x_te = (x_tr - mx) / sx, (x_te - mx) / sx
        y_tr, y_te = (y_tr - my) / sy, (y_te - my) / sy
    title = name
    if validation:
        k = len(train) - validation
        x_tr, y_tr, x_te, y_te = x_tr[:k], y_tr[:k], x_tr[k:], y_tr[k:]
        title += " (validation)"
        meta["validation"] = validation
    return Dataset(
        title, x_tr.float(), y_tr.float(), x_te.float(), y_te.float(), "regression", meta=meta
    )


def sarcos(**options) -> Dataset:
    """SARCOS inverse dynamics (see :func:`robot_inverse_dynamics` for the options)."""
    return robot_inverse_dynamics("sarcos", **options)


def barrett(**options) -> Dataset:
    """Barrett WAM inverse dynamics (see :func:`robot_inverse_dynamics`)."""
    return robot_inverse_dynamics("barrett", **options)
