"""The synthetic stand-in for image data, and the one place that decides to use it.

A fresh machine has no Fashion-MNIST files and no network: quick runs must still train
(on a seeded synthetic stand-in that says what it is), while full runs must still fail
with a MissingDataError that says where the files go.  ``BIOPROP_SYSTEM_DATASETS`` and
``BIOPROP_DATA`` pointed at empty folders make this machine look fresh.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch

import bioprop as bp
import bioprop.data
from bioprop.data import mnist as mnist_module
from bioprop.data.mnist import MissingDataError, system_datasets_dir
from bioprop.data.synthetic import synthetic_images

REAL_FASHION = system_datasets_dir() / "fashion-mnist"


@pytest.fixture
def fresh_machine(monkeypatch, tmp_path):
    """Nothing on disk (both data folders empty) and no reachable mirror; the
    once-per-process stand-in notice is reset.  Returns (system folder, data folder)."""
    system, data = tmp_path / "system-datasets", tmp_path / "bioprop-data"
    system.mkdir()
    data.mkdir()
    monkeypatch.setenv("BIOPROP_SYSTEM_DATASETS", str(system))
    monkeypatch.setenv("BIOPROP_DATA", str(data))
    with socket.socket() as s:  # a localhost port nothing listens on: refused at once
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}/"
    for attr in ("MNIST", "FASHION_MNIST"):
        source = getattr(mnist_module, attr)
        monkeypatch.setattr(mnist_module, attr, _replace(source, mirrors=(closed,)))
    monkeypatch.setattr(bioprop.data, "_announced", set())
    return system, data


def _replace(source, **changes):
    import dataclasses

    return dataclasses.replace(source, **changes)


# --- the stand-in itself ----------------------------------------------------------


def test_synthetic_images_are_reproducible_per_seed_and_shaped_like_fashion_mnist():
    a = synthetic_images(300, 100, seed=3)
    b = synthetic_images(300, 100, seed=3)
    c = synthetic_images(300, 100, seed=4)
    for split in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, split), getattr(b, split)), split
    assert not torch.equal(a.x_train, c.x_train)
    assert a.x_train.shape == (300, 784) and a.x_test.shape == (100, 784)
    assert a.x_train.dtype == torch.float32 and a.y_train.dtype == torch.int64
    assert a.kind == "classification" and a.n_classes == 10
    assert set(a.y_train.tolist()) == set(range(10))
    x = torch.cat([a.x_train, a.x_test])
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # Fashion-MNIST's pixel statistics: mean 0.286, half the pixels 0, per-image
    # brightness sd 0.125 (what keeps learning rates tuned on it stable)
    assert abs(float(x.mean()) - 0.286) < 0.01
    assert 0.4 < float((x == 0).float().mean()) < 0.65
    assert 0.09 < float(x.mean(1).std()) < 0.16
    assert a.meta["synthetic"] is True and a.meta["image_shape"] == (28, 28)


def test_synthetic_images_other_shapes_and_bad_arguments():
    ds = synthetic_images(20, 10, seed=0, shape=(14, 10), classes=3)
    assert ds.x_train.shape == (20, 140) and ds.n_classes == 3
    assert int(ds.y_train.max()) < 3
    with pytest.raises(ValueError, match="n_train"):
        synthetic_images(-1, 10)
    with pytest.raises(ValueError, match="classes"):
        synthetic_images(10, 10, classes=1)
    with pytest.raises(ValueError, match="shape"):
        synthetic_images(10, 10, shape=(28,))


@pytest.mark.parametrize("seed", [0, 1])
def test_synthetic_images_are_learnable_by_a_small_mlp_with_backprop(seed):
    """784-32-10 tanh MLP, cross-entropy, SGD lr 0.1, 40 steps of 32: test error far below
    chance (90 %).  On uniform random pixels with random labels it stays at chance."""
    torch.manual_seed(0)

    def test_error(ds) -> float:
        net = torch.nn.Sequential(
            torch.nn.Linear(784, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10)
        )
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        for step in range(40):
            i = torch.arange(step * 32, (step + 1) * 32) % ds.x_train.shape[0]
            loss = torch.nn.functional.cross_entropy(net(ds.x_train[i]), ds.y_train[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return float((net(ds.x_test).argmax(1) != ds.y_test).float().mean())

    stand_in = synthetic_images(2000, 500, seed=seed)
    assert test_error(stand_in) < 0.5
    g = torch.Generator().manual_seed(seed)
    noise = bp.data.Dataset(
        "noise",
        torch.rand(2000, 784, generator=g),
        torch.randint(0, 10, (2000,), generator=g),
        torch.rand(500, 784, generator=g),
        torch.randint(0, 10, (500,), generator=g),
        "classification",
        n_classes=10,
    )
    assert test_error(noise) > 0.8


# --- where the real files are looked for --------------------------------------------


def test_system_datasets_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("BIOPROP_SYSTEM_DATASETS", raising=False)
    assert system_datasets_dir() == Path("/usr/share/datasets")
    monkeypatch.setenv("BIOPROP_SYSTEM_DATASETS", str(tmp_path))
    assert system_datasets_dir() == tmp_path


# --- the fallback: quick runs carry on, full runs fail clearly ----------------------


def test_quick_loader_falls_back_to_the_stand_in_and_says_why(fresh_machine, capsys):
    system, data = fresh_machine
    ds = bp.data.load_for_run("fashion-mnist", quick=True, quick_size=(200, 100))
    assert ds.name == "fashion-mnist (synthetic stand-in)"
    assert ds.meta["synthetic"] is True and ds.meta["stands_in_for"] == "fashion-mnist"
    assert ds.x_train.shape == (200, 784) and ds.x_test.shape == (100, 784)
    assert ds.meta["classes"][0] == "T-shirt/top"
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "synthetic stand-in" in lines[0]
    assert str(data / "fashion-mnist") in lines[0] and str(system / "fashion-mnist") in lines[0]
    assert "quick runs do not download" in lines[0]
    # the same again: the same data, and no second notice
    again = bp.data.load_for_run("fashion-mnist", quick=True, quick_size=(200, 100))
    assert torch.equal(again.x_train, ds.x_train)
    assert capsys.readouterr().err == ""
    # one-hot labels as with load()
    one_hot = bp.data.load_for_run("mnist", quick=True, quick_size=(20, 10), one_hot=True)
    assert one_hot.name == "mnist (synthetic stand-in)" and one_hot.y_train.shape == (20, 10)


def test_full_loader_raises_missing_data_error_naming_the_folders(fresh_machine, capsys):
    system, data = fresh_machine
    with pytest.raises(MissingDataError) as exc:
        bp.data.load_for_run("fashion-mnist", quick=False, timeout=2)
    msg = str(exc.value)
    assert str(data / "fashion-mnist") in msg and str(system / "fashion-mnist") in msg
    assert "BIOPROP_SYSTEM_DATASETS" in msg and "BIOPROP_DATA" in msg
    assert exc.value.searched == (data / "fashion-mnist", system / "fashion-mnist")
    assert exc.value.dataset == "fashion-mnist"
    assert "synthetic" not in capsys.readouterr().err


def test_compare_tasks_image_loader_uses_the_same_fallback(fresh_machine, capsys):
    task = bp.tasks.get("fashion-mnist")
    ds = task.load(0, True)
    assert ds.name == "fashion-mnist (synthetic stand-in)"
    assert ds.x_train.shape == (2000, 784) and ds.x_test.shape == (1000, 784)
    assert "synthetic stand-in" in capsys.readouterr().err
    with pytest.raises(MissingDataError):
        task.load(0, False)


def test_datasets_without_files_are_not_replaced(fresh_machine, capsys):
    ds = bp.data.load_for_run("linear-teacher", quick=True, quick_size=(50, 20))
    assert ds.name == "linear-teacher" and ds.x_train.shape[0] == 50
    assert capsys.readouterr().err == ""


# --- with the real files (Debian package dataset-fashion-mnist) -------------------


@pytest.mark.realdata
@pytest.mark.skipif(
    not REAL_FASHION.is_dir(),
    reason=f"{REAL_FASHION} is absent (install the Debian package dataset-fashion-mnist)",
)
def test_quick_loader_uses_the_real_files_when_they_are_there(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("BIOPROP_DATA", str(tmp_path))
    monkeypatch.setattr(bioprop.data, "_announced", set())
    ds = bp.data.load_for_run("fashion-mnist", quick=True, quick_size=(200, 100))
    assert ds.name == "fashion-mnist" and "synthetic" not in ds.meta
    assert ds.meta["source"] == str(REAL_FASHION)
    assert ds.x_train.shape == (200, 784)
    assert capsys.readouterr().err == ""
