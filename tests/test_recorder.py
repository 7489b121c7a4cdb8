"""Recordings: layout, schedule, provenance, flushing, resume."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest
import torch

import bioprop as bp


def small_run(path, rule="fa", every=5, epochs=2, **record_kw):
    data = bp.data.linear_teacher(n_in=8, n_out=3, n_train=40, n_test=16, seed=1)
    c = bp.Circuit.layered([8, 6, 3], activation="tanh", init=bp.init.uniform(0.3), seed=0)
    run = bp.train(
        c,
        rule,
        data,
        optimizer=("sgd", {"lr": 0.05}),
        epochs=epochs,
        batch_size=4,
        seed=0,
        record=bp.Record(path, every=every, **record_kw),
        progress=False,
    )
    return run, bp.load(path)


def test_recording_holds_weights_feedback_updates_and_shadow_bp(tmp_path):
    run, rec = small_run(tmp_path / "fa.h5")
    pw = rec["pathways/input->hidden"].ds
    assert pw.weight.dims == ("step", "post", "pre")
    assert pw.weight.shape == (4, 6, 8)  # 20 steps, every 5
    assert list(pw.step.values) == [0, 5, 10, 15]
    for v in ("weight_update", "weight_update_bp", "bias", "bias_update", "bias_update_bp"):
        assert v in pw
    fb = rec["pathways/output->hidden"]
    assert fb.attrs["role"] == "feedback" and fb.attrs["mirrors"] == "hidden->output"
    assert "weight" in fb.ds and "weight_update" not in fb.ds
    pop = rec["populations/hidden"].ds
    assert pop.delta.dims == ("step", "sample", "neuron")
    assert pop.delta.shape == (4, 16, 6)  # batch of 4 < samples=16: padded with NaN
    assert np.isfinite(pop.delta.values[:, :4]).all()
    assert np.isnan(pop.delta.values[:, 4:]).all()
    assert "delta_bp" in pop and "rate" in pop
    assert rec["metrics"].ds.loss.shape == (4,)


def test_recorded_update_is_minus_the_grad_and_weight_is_the_pre_step_weight(tmp_path):
    run, rec = small_run(tmp_path / "fa.h5", every=1, epochs=1)
    pw = rec["pathways/hidden->output"].ds
    # the optimizer is plain SGD with lr 0.05: W_{t+1} = W_t + 0.05 * update_t
    w, upd = pw.weight.values, pw.weight_update.values
    assert np.allclose(w[1], w[0] + 0.05 * upd[0], atol=1e-6)
    # for the last layer fa and bp agree
    assert np.allclose(pw.weight_update.values, pw.weight_update_bp.values, atol=1e-6)


def test_provenance_is_stored_in_root_attrs(tmp_path):
    _, rec = small_run(tmp_path / "fa.h5")
    a = rec.attrs
    assert a["rule"] == "fa" and a["seed"] == 0 and a["task"] == "linear-teacher"
    assert a["torch_version"] == torch.__version__
    assert a["bioprop_version"] == bp.__version__
    assert "feedback_init" in a["rule_hyperparameters"]
    assert a["optimizer"] == "SGD" and "0.05" in a["optimizer_hyperparameters"]


def test_schedule_selects_groups_and_variables(tmp_path):
    _, rec = small_run(
        tmp_path / "sel.h5", pathways=["hidden->output"], populations=[], variables=["weight"]
    )
    assert list(rec["pathways"].children) == ["hidden->output"]
    assert list(rec["populations"].children) == []
    assert list(rec["pathways/hidden->output"].ds.data_vars) == ["weight"]


def test_bad_record_options_are_refused():
    with pytest.raises(ValueError, match="every"):
        bp.Record("x.h5", every=0)
    with pytest.raises(ValueError, match=r"unknown \['weights'\]"):
        bp.Record("x.h5", variables=["weights"])


def test_unknown_group_name_is_refused_before_training(tmp_path):
    with pytest.raises(ValueError, match="no pathway 'in->out'"):
        small_run(tmp_path / "bad.h5", pathways=["in->out"])


def test_recording_memory_stays_flat(tmp_path):
    data = bp.data.linear_teacher(n_in=30, n_out=10, n_train=400, n_test=10)
    c = bp.Circuit.layered([30, 50, 10], seed=0)
    rule = bp.rules.get("fa")

    def peak(steps):
        tracemalloc.start()
        bp.train(
            c,
            rule,
            data,
            optimizer=("sgd", {"lr": 1e-3}),
            epochs=1,
            batch_size=1,
            max_steps=steps,
            record=bp.Record(tmp_path / f"m{steps}.h5", every=1),
            progress=False,
        )
        _, p = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return p

    small, large = peak(20), peak(200)
    # ten times the records, no more than a little more peak memory
    assert large < small * 1.5 + 200_000, (small, large)


SCRIPT = textwrap.dedent("""
    import sys, time, torch
    import bioprop as bp
    out, resume, slow = sys.argv[1], sys.argv[2] == "resume", sys.argv[3] == "slow"
    data = bp.data.linear_teacher(n_in=8, n_out=3, n_train=60, n_test=10, seed=1)
    c = bp.Circuit.layered([8, 6, 3], activation="tanh", init=bp.init.uniform(0.3), seed=0)
    def on_step(step, signals):
        if slow:
            time.sleep(0.05)
    run = bp.train(c, "fa", data, optimizer=("sgd", {"lr": 0.05, "momentum": 0.9}), epochs=4,
                   batch_size=4, seed=0, record=bp.Record(out + "/rec.h5", every=2),
                   checkpoint=bp.Checkpoint(out + "/ckpt.pt", every=7), resume=resume,
                   progress=False, on_step=on_step)
    torch.save(c.state_dict(), out + "/final.pt")
""")


def test_killed_run_keeps_its_records_and_resume_matches_uninterrupted(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    full, killed = tmp_path / "full", tmp_path / "killed"
    full.mkdir()
    killed.mkdir()
    subprocess.run([sys.executable, str(script), str(full), "fresh", "fast"], check=True)

    proc = subprocess.Popen([sys.executable, str(script), str(killed), "fresh", "slow"])
    deadline = time.time() + 60
    while not (killed / "ckpt.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.6)  # a few more steps after the first checkpoint
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "final.pt").exists(), "the run finished before it was killed"

    rec = bp.load(killed / "rec.h5")
    steps = rec["metrics"].ds.step.values
    assert len(steps) >= 4 and list(steps) == list(range(0, 2 * len(steps), 2))
    w = rec["pathways/input->hidden"].ds.weight.values
    assert np.isfinite(w).all()
    rec.close()

    subprocess.run([sys.executable, str(script), str(killed), "resume", "fast"], check=True)
    a = torch.load(full / "final.pt")
    b = torch.load(killed / "final.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the continued recording equals the uninterrupted one
    ra, rb = bp.load(full / "rec.h5"), bp.load(killed / "rec.h5")
    assert np.array_equal(ra["metrics"].ds.step.values, rb["metrics"].ds.step.values)
    assert np.allclose(
        ra["pathways/input->hidden"].ds.weight.values, rb["pathways/input->hidden"].ds.weight.values
    )


def test_a_long_recording_is_written_at_flat_memory():
    # HDF5's default chunk cache (1 MiB per dataset, filled with old rows) grew a 3000-record
    # run by ~60 MB; the writer's cache holds only the chunks being written
    from bioprop.experiments.bench import _recording_rss_growth

    res = _recording_rss_growth(quick=True, repeats=1, device="cpu")
    assert res["ratio"] < 20, res


def _structure(path):
    """Every object of an HDF5 file: name, shape, dtype, chunks, fill value, attributes."""
    import h5py

    out = []

    def attrs(obj):
        return sorted((k, repr(v)) for k, v in obj.attrs.items() if k != "DIMENSION_LIST")

    with h5py.File(path, "r", locking=False) as f:
        out.append(("/", attrs(f)))

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out.append((name, obj.shape, obj.dtype.str, obj.chunks, repr(obj.fillvalue)))
            out.append((name, [a for a in attrs(obj) if a[0] != "REFERENCE_LIST"]))

        f.visititems(visit)
    return out


def test_a_layout_from_the_cache_is_the_layout_built_afresh(tmp_path):
    from bioprop.recording import schema

    small_run(tmp_path / "first.h5")  # builds (or finds) the skeleton of this layout
    assert schema._SKELETONS
    small_run(tmp_path / "cached.h5")
    schema._SKELETONS.clear()
    small_run(tmp_path / "fresh.h5")
    cached, fresh = _structure(tmp_path / "cached.h5"), _structure(tmp_path / "fresh.h5")
    for s in (cached, fresh):  # the runs' own time stamps may fall in different seconds
        s[0] = ("/", [a for a in s[0][1] if a[0] != "created"])
    assert cached == fresh
    assert cached[0][0] == "/" and ("rule", "'fa'") in cached[0][1]  # the run's own attributes


def test_layouts_that_differ_never_share_a_skeleton(tmp_path):
    data = bp.data.linear_teacher(n_in=8, n_out=3, n_train=8, n_test=4, seed=1)
    for hidden, rule in ((6, "fa"), (7, "fa"), (7, "bp")):
        c = bp.Circuit.layered([8, hidden, 3], activation="tanh", seed=0)
        path = tmp_path / f"{hidden}-{rule}.h5"
        bp.train(c, rule, data, epochs=1, batch_size=4, record=bp.Record(path), progress=False)
        rec = bp.load(path)
        assert rec["pathways/input->hidden"].ds.sizes["post"] == hidden
        assert rec.attrs["rule"] == rule
        assert ("output->hidden" in rec["pathways"].children) == (rule == "fa")
