"""`bioprop compare` and the command line: what they promise, and their errors."""

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

import bioprop as bp
from bioprop.experiments.cli import main


def test_compare_quick_writes_recordings_summary_and_report(tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(
        [
            "compare",
            "--quick",
            "--seeds",
            "2",
            "--rules",
            "bp,fa,shallow",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    table = capsys.readouterr().out
    assert "fa" in table and "angle to bp" in table
    for r in ("bp", "fa", "shallow"):
        for s in (0, 1):
            assert (out / f"{r}-seed{s}.h5").exists()
    assert (out / "report.png").stat().st_size > 1000
    ds = xr.open_dataset(out / "summary.nc", engine="h5netcdf")
    assert list(ds.rule.values) == ["bp", "fa", "shallow"]
    for v in ("final_loss", "test_error", "angle_to_bp", "wall_time"):
        assert ds[v].dims == ("rule", "seed")
    assert np.isnan(ds.angle_to_bp.sel(rule="bp")).all()
    assert np.isfinite(ds.angle_to_bp.sel(rule="fa")).all()
    assert ((ds.angle_to_bp.sel(rule="fa") >= 0) & (ds.angle_to_bp.sel(rule="fa") <= 180)).all()
    assert np.isnan(ds.test_error).all()  # regression task: no error rate
    assert (ds.wall_time > 0).all()
    # every rule started from the same weights
    w0 = [
        bp.load(out / f"{r}-seed0.h5")["pathways/input->hidden"].ds.weight[0].values
        for r in ("bp", "fa", "shallow")
    ]
    assert np.array_equal(w0[0], w0[1]) and np.array_equal(w0[0], w0[2])


def test_compare_refuses_a_directory_holding_recordings_unless_overwrite(tmp_path):
    out = tmp_path / "cmp"
    out.mkdir()
    data = bp.data.linear_teacher(n_in=8, n_out=3, n_train=8, n_test=4)
    bp.train(  # an earlier recording (--overwrite replaces only files bioprop wrote)
        bp.Circuit.layered([8, 4, 3]), "fa", data, max_steps=1,
        record=bp.Record(out / "fa-seed0.h5"), progress=False,
    )  # fmt: skip
    with pytest.raises(FileExistsError, match="already holds recordings.*--overwrite"):
        bp.compare("linear", rules=["fa"], seeds=1, out=out, quick=True, progress=False)
    ds = bp.compare(
        "linear", rules=["fa"], seeds=1, out=out, quick=True, overwrite=True, progress=False
    )
    assert ds.sizes["rule"] == 1


def test_compare_refuses_an_unwritable_output_before_training(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        bp.compare("linear", out=f, quick=True)


def test_unknown_rule_and_task_names_list_the_valid_ones(tmp_path, capsys):
    assert main(["compare", "--rules", "fa,fb", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "unknown rule 'fb'" in err and "node-perturbation" in err
    assert main(["compare", "--task", "cifar", "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'cifar'" in err and "linear" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_rules_and_tasks_list_one_name_per_line_with_a_description(capsys):
    assert main(["rules"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    names = [ln.split()[0] for ln in lines]
    assert names[:6] == ["bp", "fa", "dfa", "sign-symmetry", "shallow", "node-perturbation"]
    assert all(len(ln.split()) > 2 for ln in lines)
    assert main(["tasks"]) == 0
    tasks = [ln.split()[0] for ln in capsys.readouterr().out.strip().splitlines()]
    assert "linear" in tasks and "fashion-mnist" in tasks


def test_inspect_prints_groups_and_provenance(tmp_path, capsys):
    data = bp.data.linear_teacher(n_in=8, n_out=3, n_train=20, n_test=4)
    c = bp.Circuit.layered([8, 5, 3])
    bp.train(
        c,
        "fa",
        data,
        epochs=1,
        batch_size=4,
        record=bp.Record(tmp_path / "r.h5", every=2),
        progress=False,
    )
    assert main(["inspect", str(tmp_path / "r.h5")]) == 0
    out = capsys.readouterr().out
    assert "rule                       fa" in out
    assert "/pathways/output->hidden [feedback, mirrors hidden->output]: 3 records" in out
    assert "delta(3, 16, 5)" in out
    assert main(["inspect", str(tmp_path / "missing.h5")]) == 2
    assert "no recording at" in capsys.readouterr().err


def test_the_bioprop_command_is_installed():
    r = subprocess.run(
        [sys.executable, "-m", "bioprop.experiments.cli", "--help"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "compare" in r.stdout and "bench" in r.stdout


def test_a_tasks_rule_options_reach_the_rules_compare_trains(tmp_path):
    from dataclasses import replace

    task = replace(
        bp.tasks.get("linear"),
        rule_options={"fa": {"feedback_init": bp.init.uniform(0.3)}},
    )
    bp.compare(task, rules=["bp", "fa"], seeds=1, out=tmp_path, quick=True, progress=False)
    rec = bp.load(tmp_path / "fa-seed0.h5")
    assert "uniform(0.3)" in rec.attrs["rule_hyperparameters"]
    b = rec["pathways/output->hidden"].ds.weight[0].values
    assert np.abs(b).max() <= 0.3 and np.abs(b).max() > 0.2  # drawn from U[±0.3]
    bad = replace(task, rule_options={"bp": {"feedback_init": bp.init.uniform(0.3)}})
    with pytest.raises(TypeError, match="rule 'bp'"):
        bp.compare(bad, rules=["bp"], seeds=1, out=tmp_path / "bad", quick=True, progress=False)
    assert not (tmp_path / "bad").exists()


def test_compare_on_two_worker_processes_gives_the_serial_results(tmp_path):
    # each run's weights and data order depend on its seed only, not on where it runs
    kw = dict(rules=["bp", "fa"], seeds=2, quick=True, progress=False)
    serial = bp.compare("linear", out=tmp_path / "serial", **kw)
    parallel = bp.compare("linear", out=tmp_path / "parallel", workers=2, **kw)
    np.testing.assert_array_equal(parallel.final_loss.values, serial.final_loss.values)
    np.testing.assert_array_equal(parallel.loss_by_epoch.values, serial.loss_by_epoch.values)
    with pytest.raises(ValueError, match="workers must be a positive integer, got 0"):
        bp.compare("linear", out=tmp_path / "none", workers=0, **kw)
    assert not (tmp_path / "none").exists()
