"""Recordings of recurrent training: boundary gradients, curriculum, full-BPTT shadow."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import train_quietly

import bioprop as bp
from bioprop.analysis import rnn as analysis_rnn
from bioprop.core import seeding
from bioprop.recurrent import CopyTask, Curriculum, RecurrentCircuit, SequenceData, full_bptt
from bioprop.recurrent.recording import relative_error


def _train(path, rule="dni", T=2, steps=6, every=2, n_start=3, hidden=8, samples=3, **options):
    task = CopyTask()
    c = RecurrentCircuit(task.n_in, hidden, task.n_out, cell="lstm", seed=0)
    r = bp.rules.get(rule, kind="recurrent", T=T)
    kwargs = {
        "steps": steps,
        "batch_size": 4,
        "optimizer": ("adam", {"lr": 1e-3, "module_lr": 1e-2}),
        "seed": 0,
        "record": bp.Record(path, every=every, samples=samples) if path else None,
        "record_boundaries": 4,
        "progress": False,
        **options,
    }
    run = bp.train(c, r, SequenceData(task, Curriculum(n_start=n_start, window=2)), **kwargs)
    return c, r, run


def test_recording_holds_boundary_gradients_curriculum_and_the_full_bptt_shadow(tmp_path):
    path = tmp_path / "dni.h5"
    c, r, run = _train(path, steps=7, every=3)
    tree = bp.load(path)
    try:
        assert {"metrics", "pathways", "populations", "interfaces", "curriculum"} <= set(
            tree.children
        )
        assert tree.attrs["rule"] == "dni" and tree.attrs["rule_kind"] == "recurrent"
        assert json.loads(tree.attrs["rule_hyperparameters"])["T"] == 2
        groups = {g["name"]: g["lr"] for g in json.loads(tree.attrs["optimizer_groups"])}
        assert groups == {"circuit": 1e-3, "module": 1e-2}  # the module's own lr is kept
        assert json.loads(tree.attrs["curriculum"])["window"] == 2
        ig = tree["interfaces/hidden"].to_dataset()
        assert ig["step"].values.tolist() == [0, 3, 6]
        assert ig["synthetic"].dims == ("step", "boundary", "sample", "unit")
        assert ig.sizes["unit"] == c.state_size and ig.sizes["boundary"] == 4
        # copy with N = 3 has length 7: windows of 2 give 3 inner boundaries, the 4th is NaN
        ang = ig["angle"].values
        assert np.isnan(ang[:, 3]).all()
        assert np.isnan(ang[0, :3]).all()  # δ̂ = 0 at step 0: the angle is undefined
        assert np.isfinite(ang[1:, :3]).all() and (ang[1:, :3] <= 180).all()
        rel = ig["relative_error"].values
        assert np.allclose(rel[0, :3], 1.0)  # δ̂ = 0: relative error exactly 1
        assert np.isfinite(ig["true"].values[:, :3]).all()
        cur = tree["curriculum"].to_dataset()
        assert cur["n"].values[0] == 3 and (np.diff(cur["n"].values) >= 0).all()
        assert (cur["max_solved"].values <= cur["n"].values).all()
        assert cur["error_bits"].values[0] == pytest.approx(8.0, abs=0.5)  # chance at start
        pw = tree["pathways/hidden->output"].to_dataset()
        assert {"weight", "weight_update", "weight_update_bp"} <= set(pw.data_vars)
        assert "weight" in tree["pathways/sg:hidden"].to_dataset()
    finally:
        tree.close()


def test_bptt_over_the_whole_sequence_records_an_update_equal_to_the_shadow(tmp_path):
    path = tmp_path / "bptt.h5"
    _train(path, rule="bptt", T=50, steps=3, every=1)
    tree = bp.load(path)
    try:
        for name in ("hidden->hidden:f", "input->hidden:g", "hidden->output"):
            ds = tree[f"pathways/{name}"].to_dataset()
            # the recurrent (lateral) weights carry the full-BPTT reference too
            np.testing.assert_allclose(
                ds["weight_update"].values, ds["weight_update_bp"].values, atol=1e-6
            )
        assert np.isnan(tree["interfaces/hidden"].to_dataset()["angle"].values).all()
    finally:
        tree.close()


def test_core_update_angle_is_zero_untruncated_and_opens_under_truncation(tmp_path):
    """∠(Δθ_rule, Δθ_full BPTT) over the weights into the LSTM: 0° for bptt over the whole
    sequence, clearly positive for bptt cut every step; grouped by curriculum N."""
    whole, cut = tmp_path / "whole.h5", tmp_path / "cut.h5"
    _train(whole, rule="bptt", T=50, steps=3, every=1)
    _train(cut, rule="bptt", T=1, steps=3, every=1)
    for path, truncated in ((whole, False), (cut, True)):
        with bp.load(path) as tree:
            ang = analysis_rnn.core_update_angle(tree).load()
            by_n = analysis_rnn.core_update_angle_by_n(tree).load()
        names = ang.attrs["pathways"].split(", ")
        assert "hidden->hidden:f" in names and "hidden->output" not in names
        assert ang.dims == ("step",) and np.isfinite(ang.values).all()
        if truncated:
            assert (ang.values > 5.0).all(), ang.values
        else:
            assert np.allclose(ang.values, 0.0, atol=0.5), ang.values
        assert by_n.n.values.tolist() == [3]
        assert float(by_n.sel(n=3)) == pytest.approx(float(np.median(ang.values)))


def test_core_update_angle_names_the_pathways_it_can_compare(tmp_path):
    path = tmp_path / "bptt.h5"
    _train(path, rule="bptt", T=2, steps=1, every=1)
    with bp.load(path) as tree:
        with pytest.raises(ValueError, match=r"pathways \['sg:hidden'\] have no weight_update"):
            analysis_rnn.core_update_angle(tree, ["sg:hidden"])


def test_the_recorded_true_gradient_is_the_full_bptt_boundary_gradient(tmp_path):
    """The file's ``true`` at step 0 equals full_bptt's for the first batch (same seed)."""
    path = tmp_path / "dni.h5"
    _train(path, steps=1, every=1)
    task = CopyTask()
    c = RecurrentCircuit(task.n_in, 8, task.n_out, cell="lstm", seed=0)
    batch = task.sample(3, 4, seeding.generator(0, "data"))
    true = full_bptt(c, batch, 2).boundaries
    tree = bp.load(path)
    try:
        rec = tree["interfaces/hidden"].to_dataset()["true"].values[0]
        for b, t in enumerate(true):
            np.testing.assert_allclose(rec[b], t[:3].numpy(), rtol=1e-5, atol=1e-6)
    finally:
        tree.close()


def test_relative_error_helper():
    a = torch.tensor([[1.0, 0.0]])
    assert relative_error(2 * a, a) == pytest.approx(1.0)
    assert math.isnan(relative_error(a, torch.zeros(1, 2)))


def test_analyses_summarise_boundaries_and_recompute_the_angle_from_the_vectors(tmp_path):
    """With every sample of the batch recorded, the angle recomputed from the stored vectors
    equals the recorded one; the summary averages the sequence's boundaries."""
    path = tmp_path / "dni.h5"
    _train(path, steps=5, every=2, samples=4)
    tree = bp.load(path)
    try:
        g = analysis_rnn.boundary_gradients(tree)
        again = analysis_rnn.boundary_angle_from_vectors(tree)
        np.testing.assert_allclose(again.values, g["angle"].values, atol=1e-2, equal_nan=True)
        summary = analysis_rnn.boundary_summary(tree)
        assert summary["boundaries"].values.tolist() == [3, 3, 3]
        np.testing.assert_allclose(
            summary["relative_error"].values, np.nanmean(g["relative_error"].values, axis=1)
        )
        assert analysis_rnn.curriculum(tree)["n"].dims == ("step",)
    finally:
        tree.close()


def test_analyses_refuse_a_recording_without_boundary_groups(tmp_path):
    data = bp.data.load("linear-teacher")
    path = tmp_path / "ff.h5"
    c = bp.Circuit.layered([data.x_train.shape[1], 4, data.y_train.shape[1]], seed=0)
    record = bp.Record(path, every=1000)
    train_quietly(c, bp.rules.get("bp"), data, lr=0.01, epochs=1, batch_size=500, record=record)
    tree = bp.load(path)
    try:
        with pytest.raises(KeyError, match="no 'interfaces/hidden' group"):
            analysis_rnn.boundary_summary(tree)
    finally:
        tree.close()


def test_run_reports_the_curriculum_and_bits_per_character_of_the_last_updates():
    _, _, run = _train(None, steps=8, n_start=1)
    details = run.details
    assert run.steps == 8 and len(details.history) == 8
    assert details.rule == "dni" and details.T == 2 and details.final_n >= details.max_solved
    errors = [e for _, e in details.history]
    assert run.final_loss == pytest.approx(sum(errors[-2:]) / 2)  # the curriculum's window
    assert run.history["n"][0] == 1 and math.isnan(run.test_error)


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"epochs": 3}, TypeError, r"no option\(s\) \['epochs'\]"),
        ({"loss": "mse"}, ValueError, "sequence loss"),
        ({"steps": 0}, ValueError, "steps must be a positive integer"),
        ({"batch_size": None}, ValueError, "needs batch_size="),
    ],
)
def test_the_loop_refuses_options_it_does_not_have(options, error, message):
    with pytest.raises(error, match=message):
        _train(None, **options)


def test_the_loop_refuses_data_that_is_not_a_sequence_task():
    c = RecurrentCircuit(9, 8, 8)
    with pytest.raises(TypeError, match="trains on a bioprop.recurrent.SequenceData"):
        bp.train(c, "bptt", bp.data.load("linear-teacher"), steps=1)
    with pytest.raises(ValueError, match=r"build RecurrentCircuit\(10, n_hidden, 9\)"):
        bp.train(c, "bptt", SequenceData(bp.recurrent.RepeatCopyTask()), steps=1)


def test_a_nan_loss_stops_the_run_naming_the_rule_and_keeping_the_recording(tmp_path):
    task = CopyTask()
    c = RecurrentCircuit(task.n_in, 8, task.n_out, seed=0)
    with torch.no_grad():
        c.pathways["hidden->output"].weight[0, 0] = float("nan")
    path = tmp_path / "nan.h5"
    with pytest.raises(bp.DivergenceError, match="rule 'bptt'") as info:
        bp.train(
            c,
            "bptt",
            SequenceData(task),
            steps=5,
            record=bp.Record(path, every=1),
            progress=False,
        )
    assert info.value.step == 0 and info.value.details.rule == "bptt"
    with bp.load(path) as rec:
        assert rec["metrics"].to_dataset().sizes["step"] == 1
