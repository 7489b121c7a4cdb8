"""MNIST / Fashion-MNIST / MNIST-1D loaders, on tiny IDX files written here (no network)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import random
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import bioprop.data
from bioprop.data import mnist as mnist_module
from bioprop.data.idx import IDXError, write_idx
from bioprop.data.mnist import (
    IDX_FILES,
    MissingDataError,
    data_dir,
    fashion_mnist,
    find_idx_files,
    load_idx_pair,
    mnist,
)
from bioprop.data.mnist1d import mnist1d

N_TRAIN, N_TEST = 30, 12
# $BIOPROP_SYSTEM_DATASETS/fashion-mnist, default /usr/share/datasets/fashion-mnist
SYSTEM_FASHION = mnist_module.system_datasets_dir() / "fashion-mnist"


def make_idx_dir(directory: Path, gz: bool = True, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the four standard files with tiny random contents; return the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train_labels": np.arange(N_TRAIN, dtype=np.uint8) % 10,
        "test_images": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "test_labels": np.arange(N_TEST, dtype=np.uint8)[::-1] % 10,
    }
    arrays["train_images"][0, 0, :2] = (0, 255)
    directory.mkdir(parents=True, exist_ok=True)
    for part, stem in IDX_FILES.items():
        write_idx(directory / (stem + (".gz" if gz else "")), arrays[part])
    return arrays


@pytest.fixture
def no_env_data(monkeypatch, tmp_path):
    """BIOPROP_DATA points at an empty directory, so nothing real is found by default."""
    empty = tmp_path / "empty-data-dir"
    monkeypatch.setenv("BIOPROP_DATA", str(empty))
    return empty


@pytest.fixture
def closed_port_url():
    """A localhost URL nothing listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


# --- finding and pairing files ------------------------------------------------


def test_find_idx_files_reports_what_is_there_and_prefers_raw(tmp_path):
    assert find_idx_files(tmp_path / "does-not-exist") == {}
    make_idx_dir(tmp_path, gz=True)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((1, 28, 28), np.uint8))
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    found = find_idx_files(tmp_path)
    assert set(found) == {"train_images", "train_labels", "test_images"}
    assert found["train_images"].name == "train-images-idx3-ubyte"
    assert found["train_labels"].name == "train-labels-idx1-ubyte.gz"


def test_load_idx_pair_returns_uint8_images_and_int64_labels(tmp_path):
    arrays = make_idx_dir(tmp_path)
    x, y = load_idx_pair(
        tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz", "t"
    )
    assert x.dtype == np.uint8 and x.shape == (N_TRAIN, 28, 28)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(x, arrays["train_images"])
    np.testing.assert_array_equal(y, arrays["train_labels"])


def test_mismatched_image_and_label_counts_name_both_files(tmp_path):
    images = write_idx(tmp_path / "imgs", np.zeros((5, 2, 2), np.uint8))
    labels = write_idx(tmp_path / "labs", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="5 images in .* but 4 labels in") as exc:
        load_idx_pair(images, labels, "MNIST train")
    msg = str(exc.value)
    assert msg.startswith("MNIST train:")
    assert str(images) in msg and str(labels) in msg


def test_swapped_images_and_labels_are_reported(tmp_path):
    images = write_idx(tmp_path / "imgs", np.zeros((5, 2, 2), np.uint8))
    labels = write_idx(tmp_path / "labs", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="are the images and labels files swapped"):
        load_idx_pair(labels, images, "pair")


def test_loader_reports_mismatched_counts_in_a_dataset_directory(tmp_path):
    make_idx_dir(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(N_TEST + 1, np.uint8))
    with pytest.raises(ValueError, match=f"{N_TEST} images in .* but {N_TEST + 1} labels"):
        fashion_mnist(root=tmp_path)


def test_corrupt_file_error_names_it(tmp_path):
    make_idx_dir(tmp_path)
    bad = tmp_path / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:100])
    with pytest.raises(IDXError, match="train-images-idx3-ubyte.gz: gzip data is truncated"):
        mnist(root=tmp_path)


def test_labels_outside_0_to_9_are_rejected(tmp_path):
    make_idx_dir(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.full(N_TRAIN, 10, np.uint8))
    with pytest.raises(ValueError, match=r"has labels in \[10, 10\], expected 0..9"):
        mnist(root=tmp_path)


# --- scaling and the Dataset returned --------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_unit_scale_gives_pixels_over_255(tmp_path, gz):
    arrays = make_idx_dir(tmp_path, gz=gz)
    ds = mnist(root=tmp_path)
    assert ds.name == "mnist" and ds.kind == "classification" and ds.n_classes == 10
    assert ds.x_train.dtype == torch.float32 and ds.x_train.shape == (N_TRAIN, 784)
    assert ds.x_test.shape == (N_TEST, 784)
    assert ds.y_train.dtype == torch.int64
    assert float(ds.x_train.min()) == 0.0 and float(ds.x_train.max()) == 1.0
    expected = arrays["train_images"].reshape(N_TRAIN, -1) / 255.0
    np.testing.assert_allclose(ds.x_train.numpy(), expected, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["test_labels"])
    assert ds.meta["image_shape"] == (28, 28)
    assert ds.meta["source"] == str(tmp_path)


def test_standardize_uses_train_statistics(tmp_path):
    arrays = make_idx_dir(tmp_path)
    ds = fashion_mnist(root=tmp_path, scale="standardize")
    assert abs(float(ds.x_train.mean())) < 1e-5
    assert float(ds.x_train.std(unbiased=False)) == pytest.approx(1.0, abs=1e-5)
    train = arrays["train_images"] / 255.0
    assert ds.meta["mean"] == pytest.approx(train.mean())
    assert ds.meta["std"] == pytest.approx(train.std())
    expected_test = (arrays["test_images"].reshape(N_TEST, -1) / 255.0 - train.mean()) / train.std()
    np.testing.assert_allclose(ds.x_test.numpy(), expected_test, rtol=1e-5, atol=1e-5)


def test_unknown_scale_is_rejected_before_reading_files(tmp_path):
    with pytest.raises(ValueError, match=r"scale must be one of \('unit', 'standardize'\)"):
        mnist(root=tmp_path, scale="minmax")


def test_flatten_false_explains_that_datasets_are_2d(tmp_path):
    with pytest.raises(ValueError, match="flatten=False is not supported.*image_shape"):
        mnist(root=tmp_path, flatten=False)


def test_registry_loads_fashion_mnist_with_one_hot_labels(tmp_path):
    arrays = make_idx_dir(tmp_path)
    ds = bioprop.data.load("fashion-mnist", one_hot=True, root=tmp_path)
    assert ds.y_train.shape == (N_TRAIN, 10)
    np.testing.assert_array_equal(ds.y_train.argmax(1).numpy(), arrays["train_labels"])
    assert ds.meta["classes"][0] == "T-shirt/top"


def test_registry_has_the_three_real_datasets():
    assert {"mnist", "fashion-mnist", "mnist1d"} <= set(bioprop.data.names())
    # the package attribute is still the module, not the loader function
    assert bioprop.data.mnist is mnist_module


# --- where files are looked for -------------------------------------------------


def test_bioprop_data_env_var_sets_the_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("BIOPROP_DATA", str(tmp_path))
    assert data_dir() == tmp_path
    make_idx_dir(tmp_path / "mnist", seed=1)
    arrays = make_idx_dir(tmp_path / "fashion-mnist", seed=2)
    ds = fashion_mnist(download=False)
    assert ds.meta["source"] == str(tmp_path / "fashion-mnist")
    np.testing.assert_array_equal(
        (ds.x_test.numpy() * 255).round(), arrays["test_images"].reshape(N_TEST, -1)
    )
    assert mnist(download=False).meta["source"] == str(tmp_path / "mnist")


def test_default_data_dir_is_the_pooch_cache(monkeypatch):
    import pooch

    monkeypatch.delenv("BIOPROP_DATA", raising=False)
    assert data_dir() == Path(pooch.os_cache("bioprop"))


def test_missing_files_without_download_name_the_directory_and_files(no_env_data):
    with pytest.raises(MissingDataError) as exc:
        mnist(download=False)
    msg = str(exc.value)
    assert "download=False" in msg
    assert f"in {no_env_data / 'mnist'}:" in msg
    for stem in IDX_FILES.values():
        assert f"{stem}.gz" in msg
    assert "BIOPROP_DATA" in msg
    assert isinstance(exc.value, FileNotFoundError)


def test_partial_directory_lists_what_it_has(tmp_path):
    make_idx_dir(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(MissingDataError, match=r"has only train-images-idx3-ubyte\.gz"):
        mnist(root=tmp_path, download=False)


def test_unreachable_mirror_fails_fast_with_where_to_put_files(tmp_path, closed_port_url):
    start = time.perf_counter()
    with pytest.raises(MissingDataError) as exc:
        fashion_mnist(root=tmp_path / "fm", mirrors=[closed_port_url], timeout=2)
    assert time.perf_counter() - start < 5
    msg = str(exc.value)
    assert "downloading them into" in msg
    assert closed_port_url + "train-images-idx3-ubyte.gz" in msg
    put = "Put these four files (gzipped as below, or uncompressed without .gz) in"
    assert f"{put} {tmp_path / 'fm'}:" in msg
    for stem in IDX_FILES.values():
        assert f"    {stem}.gz" in msg


def test_default_search_without_root_fails_fast_when_nothing_is_reachable(
    monkeypatch, no_env_data, closed_port_url
):
    monkeypatch.setenv("BIOPROP_SYSTEM_DATASETS", str(no_env_data / "system"))
    monkeypatch.setattr(
        mnist_module,
        "FASHION_MNIST",
        _with(mnist_module.FASHION_MNIST, mirrors=(closed_port_url,)),
    )
    with pytest.raises(MissingDataError) as exc:
        fashion_mnist(timeout=2)
    msg = str(exc.value)
    system = no_env_data / "system" / "fashion-mnist"
    assert f"not in {no_env_data / 'fashion-mnist'} or {system}" in msg
    assert f"in {no_env_data / 'fashion-mnist'}:" in msg
    assert "BIOPROP_SYSTEM_DATASETS" in msg


def test_bioprop_system_datasets_env_var_moves_the_system_directory(
    monkeypatch, no_env_data, tmp_path
):
    system = tmp_path / "elsewhere"
    arrays = make_idx_dir(system / "fashion-mnist", seed=4)
    monkeypatch.setenv("BIOPROP_SYSTEM_DATASETS", str(system))
    ds = fashion_mnist(download=False)
    assert ds.meta["source"] == str(system / "fashion-mnist")
    np.testing.assert_array_equal(ds.y_train.numpy(), arrays["train_labels"])
    with pytest.raises(MissingDataError, match="not in .*mnist, and download=False"):
        mnist(download=False)  # MNIST has no system directory


def _with(source, **changes):
    import dataclasses

    return dataclasses.replace(source, **changes)


@contextlib.contextmanager
def serve(directory: Path):
    """A local HTTP server for ``directory`` (stands in for a download mirror)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_fetches_missing_files_and_checks_hashes(monkeypatch, tmp_path):
    mirror_dir = tmp_path / "mirror"
    arrays = make_idx_dir(mirror_dir)
    hashes = {p: _sha256(mirror_dir / f"{s}.gz") for p, s in IDX_FILES.items()}
    monkeypatch.setattr(mnist_module, "MNIST", _with(mnist_module.MNIST, sha256=hashes))
    target = tmp_path / "target"
    with serve(mirror_dir) as url:
        ds = mnist(root=target, mirrors=["http://127.0.0.1:1/", url], timeout=2)
    assert sorted(p.name for p in target.iterdir()) == sorted(f"{s}.gz" for s in IDX_FILES.values())
    np.testing.assert_array_equal(ds.y_train.numpy(), arrays["train_labels"])


def test_download_with_wrong_hash_is_refused(monkeypatch, tmp_path):
    mirror_dir = tmp_path / "mirror"
    make_idx_dir(mirror_dir)
    monkeypatch.setattr(
        mnist_module, "MNIST", _with(mnist_module.MNIST, sha256=dict.fromkeys(IDX_FILES, "0" * 64))
    )
    with serve(mirror_dir) as url, pytest.raises(MissingDataError, match="SHA256 hash"):
        mnist(root=tmp_path / "target", mirrors=[url], timeout=2)


# --- the real Fashion-MNIST (Debian package dataset-fashion-mnist) ---------------


@pytest.mark.realdata
@pytest.mark.skipif(
    not SYSTEM_FASHION.is_dir(),
    reason=f"{SYSTEM_FASHION} is absent (install the Debian package dataset-fashion-mnist)",
)
def test_real_fashion_mnist_from_the_system_directory(no_env_data):
    start = time.perf_counter()
    ds = fashion_mnist(download=False)
    elapsed = time.perf_counter() - start
    assert ds.meta["source"] == str(SYSTEM_FASHION)
    assert ds.x_train.shape == (60000, 784) and ds.x_test.shape == (10000, 784)
    assert ds.y_train.unique().tolist() == list(range(10))
    assert ds.y_test.unique().tolist() == list(range(10))
    assert torch.bincount(ds.y_train).tolist() == [6000] * 10
    assert 0.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1.0
    assert elapsed < 5, f"loading took {elapsed:.2f} s"


# --- MNIST-1D --------------------------------------------------------------------


def test_mnist1d_shapes_labels_and_cache_file(no_env_data):
    ds = mnist1d(n_train=60, n_test=25, seed=3)
    assert ds.x_train.shape == (60, 40) and ds.x_test.shape == (25, 40)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.n_classes == 10 and set(ds.y_train.tolist()) <= set(range(10))
    cache = Path(ds.meta["cache"])
    assert cache.parent == no_env_data / "mnist1d" and cache.is_file()


def test_mnist1d_second_call_reads_the_cache(monkeypatch, no_env_data):
    first = mnist1d(n_train=40, n_test=20, seed=5)

    def boom(args):
        raise AssertionError("regenerated instead of reading the cache")

    monkeypatch.setattr("bioprop.data.mnist1d._generate", boom)
    second = mnist1d(n_train=40, n_test=20, seed=5)
    assert torch.equal(first.x_train, second.x_train)
    assert torch.equal(first.y_test, second.y_test)


def test_mnist1d_is_seeded(no_env_data):
    a = mnist1d(n_train=30, n_test=10, seed=1, cache=False)
    b = mnist1d(n_train=30, n_test=10, seed=1, cache=False)
    c = mnist1d(n_train=30, n_test=10, seed=2, cache=False)
    assert torch.equal(a.x_train, b.x_train)
    assert not torch.equal(a.x_train, c.x_train)
    assert not (no_env_data / "mnist1d").exists()


def test_mnist1d_matches_the_packages_generator_split(no_env_data):
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples, args.seed = 100, 7
    ref = make_dataset(args)  # train_split 0.8
    ds = mnist1d(n_train=80, n_test=20, seed=7, cache=False)
    np.testing.assert_allclose(ds.x_train.numpy(), ref["x"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ds.x_test.numpy(), ref["x_test"], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ds.y_test.numpy(), ref["y_test"])


def test_mnist1d_leaves_global_random_state_alone(no_env_data):
    # the package draws from the legacy global RNGs; the loader must restore them
    np.random.seed(123)  # noqa: NPY002
    random.seed(123)
    mnist1d(n_train=20, n_test=10, seed=0, cache=False)
    after = (np.random.rand(), random.random())  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    random.seed(123)
    assert after == (np.random.rand(), random.random())  # noqa: NPY002


def test_mnist1d_rejects_unknown_generator_arguments(no_env_data):
    with pytest.raises(ValueError, match="unknown generator argument.*noise; use n_train"):
        mnist1d(n_train=10, n_test=10, noise=0.1)
    with pytest.raises(ValueError, match="n_train must be a positive integer, got 0"):
        mnist1d(n_train=0)


def test_mnist1d_generator_arguments_change_the_data(no_env_data):
    a = mnist1d(n_train=20, n_test=10, seed=0)
    b = mnist1d(n_train=20, n_test=10, seed=0, shuffle_seq=True)
    assert a.meta["cache"] != b.meta["cache"]
    assert not torch.equal(a.x_train, b.x_train)


def test_mnist1d_through_the_registry(no_env_data):
    ds = bioprop.data.load("mnist1d", one_hot=True, n_train=20, n_test=10, seed=0)
    assert ds.y_train.shape == (20, 10)


def test_a_validation_split_holds_out_the_last_training_samples_and_drops_the_test_set():
    data = bioprop.data.linear_teacher(n_train=100, n_test=50, seed=0)
    v = data.validation_split(30)
    assert v.x_train.shape[0] == 70 and v.x_test.shape[0] == 30
    assert torch.equal(v.x_test, data.x_train[70:]) and torch.equal(v.y_test, data.y_train[70:])
    assert "validation split" in v.name and v.meta["validation"] == 30
    assert torch.equal(data.validation_split(0.3).x_test, v.x_test)  # a fraction of 100


@pytest.mark.parametrize("size", [0, 100, 1.5, -3])
def test_a_validation_split_that_leaves_nothing_to_train_or_hold_out_is_refused(size):
    data = bioprop.data.linear_teacher(n_train=100, n_test=50, seed=0)
    with pytest.raises(ValueError, match="validation split of .* must hold out between 1 and 99"):
        data.validation_split(size)
