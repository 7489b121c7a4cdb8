"""`bioprop sweep`: rules × seeds × options on dask, fault-tolerant, resumable, checked first.

One 2-worker LocalCluster (process workers) is shared by the module's tests."""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import xarray as xr

import bioprop as bp
from bioprop.experiments.cli import main
from bioprop.experiments.spec import SpecError, load_spec
from bioprop.experiments.summary import open_summary
from bioprop.experiments.sweep import parse_grid_flag, sweep
from bioprop.recording.lock import FileLock, LockedError

SPEC = """\
task = "linear"
rules = ["bp", "fa"]
seeds = 2
quick = true

[grid]
optimizer.lr = [0.005, 0.01]
"""


@pytest.fixture(scope="module")
def cluster():
    import dask
    from distributed import LocalCluster

    env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}), OMP_NUM_THREADS=1)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
        c = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            silence_logs=logging.ERROR,
        )
    yield c
    c.close()


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("spec") / "lr.toml"
    p.write_text(SPEC)
    return p


@pytest.fixture(scope="module")
def serial(spec_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial") / "out"
    return sweep(spec_file, out=str(out), scheduler="serial", progress=False, say=lambda s: None)


def _rows(out):
    return {p.stem: p for p in (out / "rows").glob("*.nc")}


def _session(path):
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.attrs["session"]


def test_a_2x2x2_sweep_on_two_worker_processes_equals_the_same_runs_done_serially(
    cluster, spec_file, serial, tmp_path, capsys
):
    out = tmp_path / "out"
    ds = sweep(spec_file, out=str(out), scheduler=cluster, progress=False)
    printed = capsys.readouterr().out
    assert "dashboard: http" in printed
    assert ds.final_loss.dims == ("rule", "seed", "optimizer.lr")
    assert ds.final_loss.shape == (2, 2, 2)
    assert list(ds["optimizer.lr"].values) == [0.005, 0.01]
    assert (ds.status == "ok").all()
    assert np.array_equal(ds.final_loss.values, serial.final_loss.values)  # bit-identical
    assert np.array_equal(ds.angle_to_bp.values, serial.angle_to_bp.values, equal_nan=True)
    assert np.array_equal(ds.steps.values, serial.steps.values)
    assert len(_rows(out)) == 8 and len(list(out.glob("*.h5"))) == 8
    on_disk = xr.open_dataset(out / "summary.nc", engine="h5netcdf")
    assert np.array_equal(on_disk.final_loss.values, ds.final_loss.values)
    assert list(on_disk.kind.values) == ["layered", "layered"]
    assert (out / "report.png").stat().st_size > 1000
    assert not (out / ".bioprop-sweep.lock").exists()
    assert not list((out / "checkpoints").glob("*.pt"))  # finished runs leave no checkpoint


def test_an_option_of_one_rule_runs_the_other_rules_once_and_repeats_their_row(tmp_path):
    ds = sweep(
        task="linear",
        rules=["bp", "fa"],
        seeds=1,
        quick=True,
        grid={"fa.feedback_init": ["uniform(0.05)", "uniform(0.5)"]},
        out=str(tmp_path),
        scheduler="serial",
        progress=False,
    )
    assert sorted(_rows(tmp_path)) == [
        "bp-seed0",
        "fa-seed0-feedback_init=uniform(0.05)",
        "fa-seed0-feedback_init=uniform(0.5)",
    ]
    bp_loss = ds.final_loss.sel(rule="bp").values
    assert bp_loss[0, 0] == bp_loss[0, 1]  # one bp run stands for both cells
    fa = ds.final_loss.sel(rule="fa", seed=0).values
    assert fa[0] != fa[1]
    rec = bp.load(tmp_path / "fa-seed0-feedback_init=uniform(0.5).h5")
    assert "uniform(0.5)" in rec.attrs["rule_hyperparameters"]


def test_a_run_that_raises_is_recorded_as_failed_and_the_others_finish(tmp_path):
    ds = sweep(
        task="linear",
        rules=["fa"],
        seeds=1,
        quick=True,
        grid={"optimizer.lr": [0.01, 50.0], "optimizer.module_lr": [0.1]},
        out=str(tmp_path),
        scheduler="serial",
        progress=False,
    )
    st = ds.status.sel(rule="fa", seed=0).squeeze("optimizer.module_lr")
    assert list(st.values) == ["failed", "failed"]  # fa has no 'module' group: bad option
    err = str(ds.error.sel(rule="fa", seed=0, **{"optimizer.lr": 0.01}).item())
    assert "module_lr" in err and "ValueError" in err
    ok = sweep(
        task="linear",
        rules=["fa"],
        seeds=1,
        quick=True,
        grid={"optimizer.lr": [0.01, 50.0]},
        out=str(tmp_path / "div"),
        scheduler="serial",
        progress=False,
    )
    assert list(ok.status.sel(rule="fa", seed=0).values) == ["ok", "failed"]
    assert "diverged" in str(ok.error.sel(rule="fa", seed=0).values[1])
    assert np.isfinite(ok.final_loss.sel(rule="fa", seed=0).values[0])
    assert "diverged" in ok.attrs["diverged"]
    curves = ok.loss_by_epoch.sel(rule="fa", seed=0)
    assert curves[0].notnull().all() and curves[1].isnull().all()  # a failed run has none


def test_a_killed_worker_is_retried_from_its_checkpoint_and_nothing_is_duplicated(
    cluster, tmp_path
):
    out = tmp_path / "out"
    spec = dict(
        task="linear",
        rules=["fa"],
        seeds=2,
        epochs=4,  # 6000 steps a run: seconds, long enough to be killed mid-run
        checkpoint_every=300,
        grid={"optimizer.lr": [0.005, 0.01]},
    )
    killed = {}

    def kill_one():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            for ck in (out / "checkpoints").glob("*.pt"):
                lock = out / "rows" / f".{ck.stem}.lock"
                try:
                    pid = json.loads(lock.read_text())["pid"]
                except (OSError, ValueError, KeyError):
                    continue
                os.kill(pid, signal.SIGKILL)
                killed.update(run=ck.stem, pid=pid)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_one)
    killer.start()
    ds = sweep(out=str(out), scheduler=cluster, progress=False, say=lambda s: None, **spec)
    killer.join()
    assert killed, "no run was seen mid-run"
    assert (ds.status == "ok").all()
    assert len(_rows(out)) == 4 and ds.final_loss.size == 4
    with xr.open_dataset(out / "rows" / f"{killed['run']}.nc", engine="h5netcdf") as row:
        assert int(row.resumed_from[0]) > 0  # retried from its checkpoint, not from step 0
        assert row.attrs["pid"] != killed["pid"]
    rec = bp.load(out / f"{killed['run']}.h5")
    steps = rec["metrics"].ds.step.values
    assert np.all(np.diff(steps) > 0) and steps[-1] == 5900  # each record once, to the end
    assert (ds.steps == 6000).all()
    # the retried run ends where the uninterrupted one does
    again = sweep(
        out=str(tmp_path / "serial"),
        scheduler="serial",
        progress=False,
        **{**spec, "seeds": [int(killed["run"].split("seed")[1][0])]},
    )
    lr = float(killed["run"].split("lr=")[1])
    want = again.final_loss.sel(**{"optimizer.lr": lr}).values
    got = ds.final_loss.sel(seed=again.seed.values, **{"optimizer.lr": lr}).values
    assert np.array_equal(got, want)


def test_resume_after_an_interrupt_runs_only_the_missing_runs(cluster, spec_file, tmp_path):
    out = tmp_path / "out"
    seen = []

    def interrupt_after_two(config, row):
        seen.append(config.run_id)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sweep(
            spec_file,
            out=str(out),
            scheduler="serial",
            progress=False,
            on_result=interrupt_after_two,
            say=lambda s: None,
        )
    before = {k: (p.stat().st_mtime_ns, _session(p)) for k, p in _rows(out).items()}
    assert sorted(before) == sorted(seen)
    partial = open_summary(out)  # lazily, from the rows there are
    assert int(partial.final_loss.notnull().sum()) == 2
    assert not (out / ".bioprop-sweep.lock").exists()  # released on interrupt
    with pytest.raises(FileExistsError, match="--resume to finish it"):
        sweep(spec_file, out=str(out), scheduler="serial", progress=False)
    assert (
        main(
            [
                "sweep",
                str(spec_file),
                "--out",
                str(out),
                "--resume",
                "--no-progress",
                "--scheduler",
                cluster.scheduler_address,
            ]
        )
        == 0
    )
    after = _rows(out)
    assert len(after) == 8
    for k, (mtime, session) in before.items():  # finished runs were not run again
        assert after[k].stat().st_mtime_ns == mtime and _session(after[k]) == session
    new = {_session(p) for k, p in after.items() if k not in before}
    assert len(new) == 1 and new != {next(iter(before.values()))[1]}
    ds = xr.open_dataset(out / "summary.nc", engine="h5netcdf")
    assert (ds.status == "ok").all() and ds.final_loss.shape == (2, 2, 2)


def test_resume_refuses_another_spec_and_a_folder_without_a_sweep(spec_file, serial, tmp_path):
    out = serial.attrs["out"]
    with pytest.raises(ValueError, match=r"another spec \(seeds: \[0, 1\] then, \[0, 1, 2\] now"):
        sweep(spec_file, out=out, seeds=3, resume=True, scheduler="serial", progress=False)
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        sweep(spec_file, out=str(tmp_path / "new"), resume=True, scheduler="serial")


def test_two_sweeps_cannot_write_into_one_folder_at_once(spec_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with FileLock(out / ".bioprop-sweep.lock", "x"):  # a live sweep (this process) holds it
        with pytest.raises(LockedError, match=rf"in use by another process \(pid {os.getpid()}"):
            sweep(spec_file, out=str(out), scheduler="serial", progress=False)
    assert not (out / "rows").exists()
    # a lock left by a sweep that was killed (its process is gone) is taken over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / ".bioprop-sweep.lock").write_text(
        json.dumps({"host": os.uname().nodename, "pid": dead.pid, "since": "earlier"})
    )
    ds = sweep(spec_file, out=str(out), scheduler="serial", progress=False, seeds=1)
    assert (ds.status == "ok").all()


def test_a_list_of_points_gives_one_point_dimension(tmp_path):
    spec = tmp_path / "points.toml"
    spec.write_text(
        'task = "linear"\nrules = ["fa"]\nseeds = [3]\nquick = true\n\n'
        '[[points]]\noptimizer.lr = 0.01\nfa.feedback_init = "uniform(0.1)"\n\n'
        '[[points]]\noptimizer.lr = 0.005\nfa.feedback_init = "uniform(0.3)"\n'
    )
    ds = sweep(spec, out=str(tmp_path / "out"), scheduler="serial", progress=False)
    assert ds.final_loss.dims == ("rule", "seed", "point")
    assert list(ds["optimizer.lr"].values) == [0.01, 0.005]
    assert list(ds["fa.feedback_init"].values) == ["uniform(0.1)", "uniform(0.3)"]
    assert list(ds.seed.values) == [3] and (ds.status == "ok").all()


def test_validation_holds_out_part_of_the_training_set_instead_of_the_test_set(tmp_path):
    data = bp.data.linear_teacher(n_train=100, n_test=50, seed=0)
    v = data.validation_split(0.2, seed=0)
    assert v.x_train.shape[0] == 80 and v.x_test.shape[0] == 20
    rows = {tuple(r) for r in data.x_train.tolist()}
    assert all(tuple(r) in rows for r in v.x_test.tolist())  # drawn from training samples
    assert not {tuple(r) for r in v.x_train.tolist()} & {tuple(r) for r in v.x_test.tolist()}
    assert (data.validation_split(0.2, seed=0).x_test == v.x_test).all()
    ds = sweep(
        task="linear",
        rules=["fa"],
        seeds=1,
        quick=True,
        validation=0.2,
        out=str(tmp_path),
        scheduler="serial",
        progress=False,
    )
    assert ds.attrs["evaluated_on"].startswith("validation: 0.2")
    assert "validation split" in bp.load(tmp_path / "fa-seed0.h5").attrs["task"]


BASE = {"task": 'task = "linear"', "rules": 'rules = ["bp", "fa"]', "seeds": "seeds = 2"}
BAD = [  # (line replaced, or None: appended as lines 4 and on), text, words of the error
    ("rules", 'rules = ["bp", "fb"]', "line 2: unknown rule 'fb'; registered rules: bp, fa"),
    (
        None,
        '[grid]\nfa.feedback_int = ["uniform(0.1)"]',
        "line 5: option 'fa.feedback_int': rule 'fa' takes no 'feedback_int'; valid: feedback_init",
    ),
    (None, "[grid]\noptimizer.lr = []", "line 5: grid option 'optimizer.lr' has no values"),
    (None, "[grid]", "line 4: the grid is empty"),
    (
        None,
        "[grid]\noptimizer.lrate = [0.1]",
        "line 5: option 'optimizer.lrate': unknown "
        "option of 'sgd' (the optimizer of rule 'bp'); valid: lr, momentum",
    ),
    (
        None,
        "[grid]\ntask.width = [3]",
        "line 5: option 'task.width': unknown task option; valid: epochs, batch_size",
    ),
    (
        None,
        '[grid]\ndfa.feedback_init = ["uniform(0.1)"]',
        "line 5: option "
        "'dfa.feedback_init': rule 'dfa' is not among the sweep's rules ['bp', 'fa']",
    ),
    (
        None,
        '[grid]\nfa.feedback_init = ["unifrm(0.1)"]',
        "line 5: option 'fa.feedback_init': "
        "'unifrm(0.1)' calls no initialiser; known initialisers: constant",
    ),
    (None, "[grid]\noptimizer.lr = [-0.1]", "line 5: option 'optimizer.lr': Invalid learning"),
    (None, "colour = 3", "line 4: unknown key 'colour'; valid keys: task, rules"),
    ("seeds", "seeds = 0", "line 3: seeds must be a positive integer or a list"),
]


@pytest.mark.parametrize("key, text, words", BAD)
def test_a_bad_spec_is_refused_before_any_run_with_its_line_and_the_valid_names(
    key, text, words, tmp_path, capsys
):
    lines = dict(BASE)
    if key:
        lines[key] = text
    spec = tmp_path / "bad.toml"
    spec.write_text("\n".join([*lines.values(), *([] if key else [text])]) + "\n")
    out = tmp_path / "out"
    with pytest.raises(SpecError) as exc:
        sweep(spec, out=str(out), scheduler="serial", progress=False)
    assert str(exc.value).startswith(f"{spec}, line ")
    assert words in str(exc.value)
    assert not out.exists()  # refused before anything was written or run
    assert main(["sweep", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]


def test_flags_replace_the_spec_and_a_bad_flag_is_named(tmp_path, capsys):
    assert parse_grid_flag("x.init=normal(0.1),kaiming_uniform(2, 3)") == (
        "x.init",
        ["normal(0.1)", "kaiming_uniform(2, 3)"],
    )
    assert parse_grid_flag("optimizer.lr=0.1,1") == ("optimizer.lr", [0.1, 1])
    argv = ["sweep", "--task", "linear", "--rules", "fa", "--grid", "fa.feedback_int=uniform(0.1)"]
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "--grid fa.feedback_int: option 'fa.feedback_int'" in err and "feedback_init" in err
    assert main(["sweep", "--rules", "fa,fb", "--out", str(tmp_path / "y")]) == 2
    assert "--rules: unknown rule 'fb'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_the_sweep_command_prints_the_table_and_writes_results(tmp_path, capsys):
    out, res = tmp_path / "out", tmp_path / "results" / "lr"
    argv = ["sweep", "--task", "linear", "--rules", "bp,fa", "--seeds", "1", "--quick"]
    argv += ["--grid", "optimizer.lr=0.005,0.01", "--scheduler", "serial", "--no-progress"]
    assert main([*argv, "--out", str(out), "--results", str(res)]) == 0
    printed = capsys.readouterr().out
    assert "optimizer.lr" in printed and "angle to bp" in printed
    record = json.loads(res.with_suffix(".json").read_text())
    assert record["command"].startswith("bioprop sweep --task linear")
    assert record["spec"]["grid"] == {"optimizer.lr": [0.005, 0.01]}
    assert record["seeds"] == [0] and record["steps_per_run"] == 200
    assert len(record["cells"]) == 4 and record["cells"][0]["rule"] == "bp"
    assert res.with_suffix(".png").stat().st_size > 1000


def test_load_spec_reads_dotted_and_sub_table_options_alike(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('task = "linear"\nrules = ["fa"]\n[grid.fa]\nfeedback_init = ["uniform(0.1)"]\n')
    spec = load_spec(p)
    assert spec.grid == {"fa.feedback_init": ["uniform(0.1)"]}
    assert spec.where["fa.feedback_init"] == f"{p}, line 4"
    assert spec.out.endswith("sweep-s")


def test_the_shipped_sweep_specs_are_valid():
    from pathlib import Path

    specs = sorted((Path(__file__).resolve().parents[1] / "circuits" / "sweeps").glob("*.toml"))
    assert specs
    for p in specs:
        spec = load_spec(p).validate()
        assert spec.rules and spec.cells()


def test_the_summary_keeps_every_runs_evaluation_after_each_epoch(tmp_path):
    # the curves over `epoch` end at the run's final numbers
    from dataclasses import replace

    three = replace(bp.tasks.get("mnist1d"), quick_epochs=3, quick_max_steps=None)
    ds = sweep(
        task=three,
        rules=["fa"],
        seeds=1,
        quick=True,
        grid={"optimizer.lr": [0.01]},
        out=str(tmp_path),
        scheduler="serial",
        progress=False,
    )
    ok = ds.sel(rule="fa", seed=0, **{"optimizer.lr": 0.01})
    curve = ok.test_error_by_epoch.dropna("epoch")
    assert list(curve.epoch.values) == [1, 2, 3]
    assert float(curve[0]) > float(curve[-1])  # it learns
    assert float(curve[-1]) == float(ok.test_error)
    assert float(ok.loss_by_epoch.dropna("epoch")[-1]) == float(ok.final_loss)


def test_rows_written_before_the_curves_were_kept_still_combine(tmp_path):
    # a sweep resumed from rows of an older bioprop: their curves read as NaN
    ds = bp.compare("linear", rules=["bp", "fa"], seeds=1, out=tmp_path, progress=False)
    assert ds.loss_by_epoch.sel(rule="fa").notnull().any()
    old = tmp_path / "rows" / "fa-seed0.nc"
    with xr.open_dataset(old, engine="h5netcdf") as row:
        stripped = row.drop_vars(["test_error_by_epoch", "loss_by_epoch", "epoch"]).load()
    old.unlink()
    stripped.to_netcdf(old, engine="h5netcdf")
    combined = open_summary(tmp_path).load()
    assert combined.loss_by_epoch.sel(rule="fa", seed=0).isnull().all()
    assert combined.loss_by_epoch.sel(rule="bp", seed=0).notnull().any()
    fa = dict(rule="fa", seed=0)
    assert float(combined.final_loss.sel(**fa)) == float(ds.final_loss.sel(**fa))


def _scheduler_inside_a_run() -> str:
    import dask.base

    from bioprop.experiments.runs import in_this_process

    with in_this_process():
        return dask.base.get_scheduler().__module__


def test_a_run_on_a_dask_worker_reads_its_recording_in_its_own_thread():
    # a task's dask computations go back to the cluster by default: the lazy h5py-backed
    # arrays of a recording must be read where the file is, not shipped to another worker
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as cluster:
        with Client(cluster) as client:
            assert client.submit(_scheduler_inside_a_run).result(timeout=30) == "dask.local"
