"""Every bad input gets a clear error, raised before any work: the CLI answers in one line
(no traceback, non-zero exit); the API raises an exception naming the offending argument,
file or population."""

import h5py
import numpy as np
import pytest
import torch

import bioprop as bp
from bioprop.data.idx import IDXError, read_idx
from bioprop.experiments.cli import main


def tiny():
    return bp.data.linear_teacher(n_in=8, n_out=3, n_train=40, n_test=16, seed=1)


def circuit():
    return bp.Circuit.layered([8, 6, 3], activation="tanh", seed=0)


def one_line_error(capsys, argv, *needles):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# -- inspect / load ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"", "is an empty file"),
        (b"this is not HDF5 at all\n" * 40, "not an HDF5 file"),
        (np.random.default_rng(0).bytes(4096), "not an HDF5 file"),
        (b"\x89HDF\r\n\x1a\n" + bytes(200), "not a readable HDF5/NetCDF4 recording"),
    ],
    ids=["empty", "text", "random", "broken-hdf5"],
)
def test_inspect_of_a_file_that_is_no_recording_answers_in_one_line(
    tmp_path, capsys, content, needle
):
    path = tmp_path / "x.h5"
    path.write_bytes(content)
    one_line_error(capsys, ["inspect", str(path)], "bioprop inspect: error:", str(path), needle)


def test_inspect_of_a_directory_or_a_missing_file_answers_in_one_line(tmp_path, capsys):
    one_line_error(capsys, ["inspect", str(tmp_path)], "is a directory")
    one_line_error(capsys, ["inspect", str(tmp_path / "nope.h5")], "no recording at")


def test_load_of_an_hdf5_file_of_another_schema_is_refused_naming_it(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(3)
        f.attrs["Conventions"] = "CF-1.8"
    with pytest.raises(ValueError, match=r"other\.h5 is an HDF5 file but not a bioprop recording"):
        bp.load(path)
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(3)
    with pytest.raises(ValueError, match="Conventions = absent"):
        bp.load(path)


# -- Record paths --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["notes.csv", "foreign.h5"])
def test_a_record_path_holding_a_file_bioprop_did_not_write_is_refused_and_kept(tmp_path, kind):
    path = tmp_path / kind
    if kind.endswith(".csv"):
        path.write_text("step,loss\n0,1.0\n")
    else:
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(5)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match=rf"{kind} holds a file bioprop did not write"):
        bp.train(circuit(), "fa", tiny(), record=bp.Record(path, every=1), progress=False)
    assert path.read_bytes() == before


def test_a_record_path_that_is_a_directory_is_refused(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        bp.train(circuit(), "fa", tiny(), record=bp.Record(tmp_path), progress=False)


def test_a_recording_of_an_earlier_run_is_replaced(tmp_path):
    path = tmp_path / "run.h5"
    for steps in (6, 3):
        bp.train(
            circuit(), "fa", tiny(), batch_size=4, max_steps=steps,
            record=bp.Record(path, every=1), progress=False,
        )  # fmt: skip
    with bp.load(path) as rec:
        assert rec["metrics"].ds.sizes["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.h5"]  # no lock or temp left


# -- training options and data --
def test_a_batch_larger_than_the_data_is_clamped_to_it_and_recorded(tmp_path):
    run = bp.train(
        circuit(), "fa", tiny(), batch_size=100, epochs=2,
        record=bp.Record(tmp_path / "r.h5", every=1), progress=False,
    )  # fmt: skip
    assert run.steps == 2  # one batch of all 40 samples per epoch
    with bp.load(tmp_path / "r.h5") as rec:
        assert rec.attrs["batch_size"] == 40


@pytest.mark.parametrize("bad", [-1, 2.5, "10", True])
def test_a_bad_max_steps_is_refused(bad):
    with pytest.raises(ValueError, match=r"max_steps must be None or a non-negative integer"):
        bp.train(circuit(), "fa", tiny(), max_steps=bad, progress=False)


def test_nan_in_the_data_is_reported_as_bad_data_before_training(tmp_path):
    d = tiny()
    x = d.x_train.clone()
    x[5, 2] = float("nan")
    bad = bp.data.Dataset("noisy", x, d.y_train, d.x_test, d.y_test, "regression")
    with pytest.raises(
        ValueError, match=r"data 'noisy': x_train holds 1 NaN/Inf .*\(5, 2\).*bad data"
    ):
        bp.train(circuit(), "fa", bad, record=bp.Record(tmp_path / "r.h5"), progress=False)
    assert not (tmp_path / "r.h5").exists()


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
def test_labels_out_of_range_are_named_before_training(loss):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 8, generator=g)
    y = torch.randint(0, 3, (30,), generator=g)
    y[7] = 5
    d = bp.data.Dataset("labels", x[:20], y[:20], x[20:], y[20:], "classification", n_classes=3)
    with pytest.raises(
        ValueError, match=r"y_train holds class labels 0\.\.5 .*n_classes=3.*y_train\[7\] = 5"
    ):
        bp.train(circuit(), "fa", d, loss=loss, progress=False)


def test_a_string_hyperparameter_is_refused_naming_it():
    with pytest.raises(TypeError, match=r"rule 'node-perturbation': hyper-parameter sigma='0\.1'"):
        bp.rules.get("node-perturbation", sigma="0.1")


def test_a_feedback_pathway_mirroring_a_missing_pathway_is_refused():
    c = circuit()
    with pytest.raises(ValueError, match=r"mirrors 'hidden->nowhere', which this circuit does not"):
        c.connect("output", "hidden", role="feedback", mirrors="hidden->nowhere")
    assert "output->hidden" not in c.pathways


def test_an_idx_header_whose_size_overflows_int64_is_refused(tmp_path):
    path = tmp_path / "huge-idx"
    # 00 00 08 04, four dimensions of 2**32 - 1: 2**128 bytes (an int64 product wraps)
    path.write_bytes(bytes([0, 0, 8, 4]) + b"\xff\xff\xff\xff" * 4 + bytes(16))
    with pytest.raises(IDXError, match=r"huge-idx: corrupt header"):
        read_idx(path)


def test_an_idx_header_whose_int64_product_wraps_to_the_file_size_is_refused(tmp_path):
    path = tmp_path / "wrap-idx"
    # 2**32 * 2**32 wraps to 0 in int64: the old check saw a file of exactly its header
    path.write_bytes(bytes([0, 0, 8, 3]) + (2**32 - 1).to_bytes(4, "big") * 3)
    with pytest.raises(IDXError, match="corrupt header"):
        read_idx(path)


# -- compare --overwrite -------------------------------------------------------------------------
def test_overwrite_removes_only_files_bioprop_wrote(tmp_path, capsys):
    import xarray as xr

    from bioprop.experiments.compare import check_output_dir

    out = tmp_path / "out"
    out.mkdir()
    bp.train(
        circuit(), "fa", tiny(), max_steps=2, record=bp.Record(out / "fa-seed0.h5"), progress=False
    )
    summary = xr.Dataset(
        {k: (("rule", "seed"), np.zeros((1, 1))) for k in ("final_loss", "angle_to_bp")},
        coords={"rule": ["fa"], "seed": [0]},
    )
    summary.to_netcdf(out / "summary.nc", engine="h5netcdf")
    (out / "notes.csv").write_text("keep me\n")
    with h5py.File(out / "mine.h5", "w") as f:
        f["x"] = np.arange(3)

    one_line_error(
        capsys,
        ["compare", "--task", "linear", "--rules", "fa", "--seeds", "1", "--quick",
         "--out", str(out), "--overwrite"],
        "--overwrite removes only files bioprop wrote", "mine.h5", "nothing was removed",
    )  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == [
        "fa-seed0.h5", "mine.h5", "notes.csv", "summary.nc",
    ]  # fmt: skip

    (out / "mine.h5").unlink()
    check_output_dir(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.csv"]


def test_data_checked_once_is_checked_again_after_an_in_place_change():
    from bioprop.training.checks import check_data

    data = bp.data.linear_teacher(n_train=20, n_test=10, seed=0)
    check_data(data)  # clean: remembered on the tensors
    check_data(data)
    data.x_train[3, 1] = float("nan")  # an in-place change bumps the tensor's version
    with pytest.raises(
        ValueError, match=r"x_train holds 1 NaN/Inf value\(s\), the first at index \(3, 1\)"
    ):
        check_data(data)
