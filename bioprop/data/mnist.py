"""MNIST and Fashion-MNIST from their four IDX files.

Where the files are looked for, in order:

* ``root`` if given (and nowhere else);
* otherwise ``<data dir>/mnist`` or ``<data dir>/fashion-mnist``, where the data
  dir is ``$BIOPROP_DATA`` if set, else ``pooch.os_cache("bioprop")``
  (``~/.cache/bioprop`` on Linux); for Fashion-MNIST then also
  ``<system datasets>/fashion-mnist``, where the system datasets folder is
  ``$BIOPROP_SYSTEM_DATASETS`` if set, else ``/usr/share/datasets`` (where the
  Debian package ``dataset-fashion-mnist`` puts its ``fashion-mnist/`` folder).
  Pointing both variables at empty folders makes a machine look fresh: nothing
  on disk is found.

Each file may be gzipped (``.gz``) or raw. When none of these directories has
all four, they are downloaded into the first one with :func:`pooch.retrieve`
and checked against known SHA-256 hashes; offline, this fails within seconds
with a message saying where to put the files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bioprop.data.base import Dataset
from bioprop.data.idx import read_idx

__all__ = [
    "IDX_FILES",
    "MissingDataError",
    "data_dir",
    "fashion_mnist",
    "system_datasets_dir",
    "find_idx_files",
    "load_idx_pair",
    "mnist",
]

#: Split part -> standard file name (without ``.gz``).
IDX_FILES: dict[str, str] = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

SCALES = ("unit", "standardize")


#: Default of ``$BIOPROP_SYSTEM_DATASETS``: where Debian's dataset packages install.
SYSTEM_DATASETS = Path("/usr/share/datasets")


class MissingDataError(FileNotFoundError):
    """The dataset's files are not on disk and could not be downloaded.

    ``dataset`` is the registry name (``"fashion-mnist"``), ``searched`` the folders
    looked in, ``reason`` why nothing was downloaded (the full text is ``str(error)``).
    """

    def __init__(
        self, message: str, dataset: str = "", searched: Sequence[Path] = (), reason: str = ""
    ):
        super().__init__(message)
        self.dataset = dataset
        self.searched = tuple(searched)
        self.reason = reason


@dataclass(frozen=True)
class _Source:
    name: str  # registry name and sub-directory of the data dir
    title: str
    mirrors: tuple[str, ...]
    sha256: dict[str, str]  # part -> SHA-256 of its .gz file
    system_subdir: str | None = None  # its folder under system_datasets_dir(), if any
    classes: tuple[str, ...] = tuple(str(i) for i in range(10))


MNIST = _Source(
    name="mnist",
    title="MNIST",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    sha256={
        "train_images": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train_labels": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "test_images": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "test_labels": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
)

FASHION_MNIST = _Source(
    name="fashion-mnist",
    title="Fashion-MNIST",
    mirrors=(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
    ),
    sha256={
        "train_images": "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
        "train_labels": "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
        "test_images": "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
        "test_labels": "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
    },
    system_subdir="fashion-mnist",
    classes=(
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
)


def data_dir() -> Path:
    """Where bioprop keeps datasets: ``$BIOPROP_DATA``, else ``pooch.os_cache("bioprop")``."""
    env = os.environ.get("BIOPROP_DATA")
    if env:
        return Path(env).expanduser()
    import pooch

    return Path(pooch.os_cache("bioprop"))


def system_datasets_dir() -> Path:
    """Where system-wide dataset packages live: ``$BIOPROP_SYSTEM_DATASETS``, else
    ``/usr/share/datasets`` (Debian's ``dataset-fashion-mnist`` installs
    ``fashion-mnist/`` there). Read on every call, so the variable may change at run time."""
    env = os.environ.get("BIOPROP_SYSTEM_DATASETS")
    return Path(env).expanduser() if env else SYSTEM_DATASETS


def _search_dirs(source: _Source, root: str | os.PathLike | None = None) -> list[Path]:
    """The folders looked in for ``source``'s files, in order (see the module docstring)."""
    if root is not None:
        return [Path(root).expanduser()]
    dirs = [data_dir() / source.name]
    if source.system_subdir:
        dirs.append(system_datasets_dir() / source.system_subdir)
    return dirs


def find_idx_files(directory: str | os.PathLike) -> dict[str, Path]:
    """The standard IDX files present in ``directory``.

    Parameters
    ----------
    directory
        Where to look. A missing directory simply has no files.

    Returns
    -------
    dict
        Maps each part found (keys of :data:`IDX_FILES`: ``train_images``,
        ``train_labels``, ``test_images``, ``test_labels``) to its path, the raw
        file preferred over its ``.gz``. All four are there when ``len(...) == 4``.
    """
    directory = Path(directory)
    found = {}
    for part, stem in IDX_FILES.items():
        for fname in (stem, stem + ".gz"):
            if (directory / fname).is_file():
                found[part] = directory / fname
                break
    return found


def load_idx_pair(
    images_path: str | os.PathLike, labels_path: str | os.PathLike, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Read an images file and its labels file and check that they belong together.

    Parameters
    ----------
    images_path, labels_path
        IDX files (raw or gzipped): images ``(N, ...)``, labels ``(N,)``.
    name
        What to call the pair in error messages (e.g. ``"MNIST train"``).

    Returns
    -------
    images : numpy.ndarray
        uint8 ``(N, rows, cols)`` as stored.
    labels : numpy.ndarray
        int64 ``(N,)``.

    Raises
    ------
    ValueError
        If either file is not valid IDX (:class:`~bioprop.data.idx.IDXError`),
        the labels are not 1-D, or the counts differ; the message names both files.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim < 2:
        raise ValueError(
            f"{name}: images file {images_path} holds shape {images.shape}; expected "
            f"(samples, rows, cols) — are the images and labels files swapped?"
        )
    if labels.ndim != 1:
        raise ValueError(
            f"{name}: labels file {labels_path} holds shape {labels.shape}; expected "
            f"(samples,) — are the images and labels files swapped?"
        )
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{name}: {images.shape[0]} images in {images_path} but {labels.shape[0]} "
            f"labels in {labels_path}; the two files must come from the same split"
        )
    return images, labels.astype(np.int64)


def _download(
    source: _Source, directory: Path, missing: Sequence[str], mirrors: Sequence[str], timeout: float
) -> None:
    """Fetch the ``missing`` parts into ``directory``; stop at the first file no mirror has."""
    import pooch

    downloader = pooch.HTTPDownloader(progressbar=False, timeout=timeout)
    for part in missing:
        fname = IDX_FILES[part] + ".gz"
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + fname
            try:
                pooch.retrieve(
                    url,
                    known_hash=f"sha256:{source.sha256[part]}",
                    fname=fname,
                    path=directory,
                    downloader=downloader,
                )
                break
            except (OSError, ValueError) as e:  # connection, HTTP status, hash mismatch
                errors.append(f"{url}: {type(e).__name__}: {e}")
        else:
            raise OSError("; ".join(errors))


def _missing_message(source: _Source, dirs: Sequence[Path], found: dict, reason: str) -> str:
    target = dirs[0]
    where = " or ".join(str(d) for d in dirs)
    lines = [f"{source.title}: the four IDX files are not in {where}, and {reason}."]
    for d in dirs:
        if found[d]:
            have = ", ".join(p.name for p in found[d].values())
            lines.append(f"({d} has only {have}.)")
    lines.append(
        f"Put these four files (gzipped as below, or uncompressed without .gz) in {target}:"
    )
    lines += [f"    {stem}.gz" for stem in IDX_FILES.values()]
    lines.append(
        f"or set BIOPROP_DATA to a directory whose {source.name}/ sub-directory holds them, "
        f"or pass root=<directory>."
    )
    if source.system_subdir:
        lines.append(
            f"(Or install the Debian package dataset-{source.name}, or set "
            f"BIOPROP_SYSTEM_DATASETS to a directory whose {source.system_subdir}/ holds them.)"
        )
    return "\n".join(lines)


def _locate(
    source: _Source,
    root: str | os.PathLike | None,
    download: bool,
    mirrors: Sequence[str] | None,
    timeout: float,
) -> tuple[Path, dict[str, Path]]:
    dirs = _search_dirs(source, root)
    found = {d: find_idx_files(d) for d in dirs}
    for d in dirs:
        if len(found[d]) == len(IDX_FILES):
            return d, found[d]
    target = dirs[0]
    if not download:
        reason = "download=False"
        raise MissingDataError(
            _missing_message(source, dirs, found, reason), source.name, dirs, reason
        )
    missing = [part for part in IDX_FILES if part not in found[target]]
    mirrors = tuple(source.mirrors if mirrors is None else mirrors)
    try:
        _download(source, target, missing, mirrors, timeout)
    except OSError as e:
        reason = f"downloading them into {target} failed ({e})"
        raise MissingDataError(
            _missing_message(source, dirs, found, reason), source.name, dirs, reason
        ) from None
    files = find_idx_files(target)
    if len(files) != len(IDX_FILES):  # pragma: no cover - pooch returned without a file
        found[target] = files
        reason = "the download was incomplete"
        raise MissingDataError(
            _missing_message(source, dirs, found, reason), source.name, dirs, reason
        )
    return target, files


def _load(
    source: _Source,
    scale: str = "unit",
    flatten: bool = True,
    root: str | os.PathLike | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
    timeout: float = 10.0,
) -> Dataset:
    if scale not in SCALES:
        raise ValueError(f"{source.name}: scale must be one of {SCALES}, got {scale!r}")
    if not flatten:
        raise ValueError(
            f"{source.name}: flatten=False is not supported: a Dataset holds 2-D "
            f"(samples, features) tensors; reshape x with meta['image_shape'] instead"
        )
    directory, files = _locate(source, root, download, mirrors, timeout)
    xs, ys = {}, {}
    for split in ("train", "test"):
        img, lab = files[f"{split}_images"], files[f"{split}_labels"]
        x, y = load_idx_pair(img, lab, f"{source.title} {split}")
        if x.dtype != np.uint8:
            raise ValueError(f"{source.title}: images file {img} holds {x.dtype}, expected uint8")
        if y.size and (y.min() < 0 or y.max() >= len(source.classes)):
            raise ValueError(
                f"{source.title}: labels file {lab} has labels in [{y.min()}, {y.max()}], "
                f"expected 0..{len(source.classes) - 1}"
            )
        xs[split], ys[split] = x, y
    image_shape = xs["train"].shape[1:]
    if xs["test"].shape[1:] != image_shape:
        raise ValueError(
            f"{source.title}: train images are {image_shape} but test images are "
            f"{xs['test'].shape[1:]} ({files['train_images']}, {files['test_images']})"
        )
    meta = {
        "source": str(directory),
        "files": {part: str(p) for part, p in files.items()},
        "image_shape": tuple(int(s) for s in image_shape),
        "classes": list(source.classes),
        "scale": scale,
    }
    if scale == "unit":
        offset, divisor = 0.0, 255.0
    else:  # exact train-set moments from integer sums
        x = xs["train"]
        n = x.size
        mean = int(x.sum(dtype=np.uint64)) / n
        var = int(np.square(x, dtype=np.uint32).sum(dtype=np.uint64)) / n - mean**2
        offset, divisor = mean, var**0.5
        meta["mean"], meta["std"] = mean / 255.0, divisor / 255.0  # on the [0, 1] scale
    tensors = {}
    for split, x in xs.items():
        xt = torch.from_numpy(x.reshape(len(x), -1)).to(torch.float32)
        if offset:
            xt.sub_(offset)
        tensors[split] = xt.div_(divisor)
    return Dataset(
        source.name,
        tensors["train"],
        torch.from_numpy(ys["train"]),
        tensors["test"],
        torch.from_numpy(ys["test"]),
        "classification",
        n_classes=len(source.classes),
        meta=meta,
    )


def mnist(**options: Any) -> Dataset:
    """MNIST handwritten digits (LeCun et al. 1998).

    Parameters
    ----------
    **options
        Any of the keywords below.
    scale
        ``"unit"``: pixels / 255, in [0, 1]. ``"standardize"``: minus the train
        set's mean pixel, divided by its standard deviation (one scalar each,
        stored in ``meta["mean"]``, ``meta["std"]`` on the [0, 1] scale).
    flatten
        Must be True: images become rows of ``rows * cols`` features
        (``meta["image_shape"]`` has the original shape).
    root
        Look only in this directory (and download into it). Default: see the
        module docstring.
    download
        Whether to download missing files. With False, missing files raise at once.
    mirrors
        Base URLs to try in order (default: the public mirrors).
    timeout
        Seconds to wait for a connection or data before giving up on a mirror.

    Returns
    -------
    Dataset
        ``x`` float32 ``(N, 784)``, ``y`` int64 ``(N,)``, 60000 train and 10000
        test samples, 10 classes; ``meta`` has the source directory and files.

    Raises
    ------
    MissingDataError
        (a FileNotFoundError) if the files are neither on disk nor downloadable;
        the message names the directory and the four files to put there.
    ValueError
        If a file is corrupt or the images and labels do not match.
    """
    return _load(MNIST, **options)


def fashion_mnist(**options: Any) -> Dataset:
    """Fashion-MNIST: Zalando article images, a drop-in for MNIST (Xiao et al. 2017).

    Options (``scale``, ``flatten``, ``root``, ``download``, ``mirrors``, ``timeout``),
    return value and errors as for :func:`mnist`. Without ``root`` it
    also looks in ``$BIOPROP_SYSTEM_DATASETS/fashion-mnist`` (default
    ``/usr/share/datasets/fashion-mnist``, Debian's ``dataset-fashion-mnist``)
    before downloading; ``meta["classes"]`` has the
    class names (T-shirt/top, Trouser, ...).
    """
    return _load(FASHION_MNIST, **options)
