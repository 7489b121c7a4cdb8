"""Target propagation on recordings: the Gauss–Newton and bp analyses read the same numbers
the live rule computed; the scripts and `bioprop compare` run the family."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import benchmark_target

import bioprop as bp
from bioprop.analysis import target_propagation as tpa
from bioprop.analysis.target_propagation import gauss_newton_targets
from bioprop.experiments.cli import main

ROOT = Path(__file__).resolve().parents[1]


def linear_teacher(n_in, n_out, n_train=256):
    return bp.data.linear_teacher(n_in=n_in, n_out=n_out, n_train=n_train, n_test=32, seed=0)


def record_run(tmp_path, circuit, rule, data, steps=12, every=4, samples=8, **options):
    path = tmp_path / f"{rule.name}.h5"
    bp.train(
        circuit,
        rule,
        data,
        optimizer=options.pop("optimizer", ("sgd", {"lr": 0.01})),
        batch_size=samples,
        max_steps=steps,
        record=bp.Record(path, every=every, samples=samples),
        progress=False,
        **options,
    )
    return path


def test_with_exact_inverses_in_a_linear_circuit_the_recorded_targets_are_gauss_newton(tmp_path):
    # not orthogonal: there W⁻¹ = Wᵀ and the Gauss–Newton target *is* bp's
    c = bp.Circuit.layered([6, 6, 6, 6, 6], activation="linear", init=bp.init.xavier_uniform())
    rule = bp.rules.get("dtp", inverses="exact", target_step=0.5)
    path = record_run(tmp_path, c, rule, linear_teacher(6, 6))
    with bp.load(path) as rec:
        assert tpa.top_population(rec) == "hidden3"
        assert tpa.target_populations(rec) == ["hidden1", "hidden2", "hidden3"]
        for pop in ("hidden1", "hidden2"):
            assert float(tpa.target_angle(rec, pop, "gauss-newton").max()) < 0.1
        for pw in ("input->hidden1", "hidden1->hidden2"):
            a = tpa.update_angles(rec, pw)
            assert float(a["gauss_newton"].max()) < 0.1  # the update *is* GNT's
            assert float(a["bp"].min()) > 10.0  # and not bp's


def test_the_recorded_gauss_newton_target_and_loss_gradient_match_the_live_ones(tmp_path):
    c = bp.Circuit.layered([5, 7, 6, 5, 3], activation="tanh", init=bp.init.xavier_uniform())
    data = linear_teacher(5, 3)
    rule = bp.rules.get("dtp")
    live = bp.Circuit.layered([5, 7, 6, 5, 3], activation="tanh", init=bp.init.xavier_uniform())
    path = record_run(tmp_path, c, rule, data, steps=1, every=1, samples=8)
    # the first batch of seed 0, through the untrained twin
    idx = bp.training.loop.epoch_order(0, 0, data.x_train.shape[0])[:8]
    x, y = data.x_train[idx].double(), data.y_train[idx].double()
    live = live.double()
    r = bp.rules.get("dtp").attach(live, bp.seeding.generator(0, "feedback"))
    state = r.forward(live, x)
    with torch.no_grad():
        targets, _ = r.targets(live, state, y, bp.losses.get("mse"))
    ws = [live.pathways[n].weight.detach() for n in ("hidden2->hidden3",)]
    fps = [1 - state.r["hidden3"] ** 2]
    want_gn = gauss_newton_targets(ws, fps, targets["hidden3"] - state.r["hidden3"])[0]
    ref = bp.rules.bp_reference(live, x, y, bp.losses.get("mse"))
    want_grad = ref.delta["hidden3"] @ live.pathways["hidden2->hidden3"].weight.detach()
    with bp.load(path) as rec:
        got_gn = tpa.gauss_newton_target(rec, "hidden2").isel(step=0).values
        got_grad = tpa.loss_gradient(rec, "hidden2").isel(step=0).values
        got_diff = tpa.target_difference(rec, "hidden2").isel(step=0).values
    np.testing.assert_allclose(
        got_diff, (targets["hidden2"] - state.r["hidden2"]).numpy(), atol=2e-6
    )
    np.testing.assert_allclose(got_gn, want_gn.numpy(), rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(got_grad, want_grad.numpy(), rtol=1e-4, atol=1e-6)


def test_heavy_damping_turns_the_gauss_newton_target_into_backprops_direction(tmp_path):
    """(JᵀJ + λI)⁻¹ Jᵀ Δh_top → Jᵀ Δh_top / λ, and Jᵀ ∂L/∂h_top = ∂L/∂h_l."""
    c = bp.Circuit.layered([6, 8, 7, 6, 3], activation="tanh", init=bp.init.xavier_uniform())
    path = record_run(tmp_path, c, bp.rules.get("dtp"), linear_teacher(6, 3), steps=8)
    with bp.load(path) as rec:
        for pop in ("hidden1", "hidden2"):
            to_bp = tpa.target_angle(rec, pop, "bp").values
            damped = tpa.target_angle(rec, pop, "gauss-newton", damping=1e9).values
            undamped = tpa.target_angle(rec, pop, "gauss-newton").values
            np.testing.assert_allclose(damped, to_bp, atol=1e-2)
            assert np.abs(undamped - to_bp).max() > 1.0


def test_the_reconstruction_error_of_an_inverse_falls_in_the_recording(tmp_path):
    c = bp.Circuit.layered([8, 8, 8, 8, 3], activation="tanh", init=bp.init.orthogonal())
    rule = bp.rules.get("dtp", schedule="alternating", sigma=0.05)
    path = record_run(
        tmp_path,
        c,
        rule,
        linear_teacher(8, 3, n_train=4096),
        steps=250,
        every=50,
        samples=16,
        optimizer=("adam", {"lr": 1e-3, "inverse_lr": 1e-2}),
    )
    with bp.load(path) as rec:
        err = tpa.reconstruction_error(rec, "hidden1->hidden2").values
    assert err[-1] < 0.2 * err[0]


def test_analyses_name_what_a_recording_lacks(tmp_path):
    c = bp.Circuit.layered([5, 4, 4, 3])
    path = record_run(tmp_path, c, bp.rules.get("fa"), linear_teacher(5, 3), steps=2, every=1)
    with bp.load(path) as rec:
        assert tpa.target_populations(rec) == []
        with pytest.raises(KeyError, match="record a tp, dtp"):
            tpa.top_population(rec)
        with pytest.raises(KeyError, match="no targets recorded for 'hidden1'"):
            tpa.target_difference(rec, "hidden1")
        with pytest.raises(KeyError, match="no inverse mirrors"):
            tpa.reconstruction_error(rec, "hidden1->hidden2")


def test_compare_runs_the_target_propagation_rules_on_the_image_task(tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(
        [
            "compare",
            "--task",
            "fashion-mnist",
            "--rules",
            "bp,fa,tp,dtp",
            "--quick",
            "--seeds",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert rc == 0
    assert "dtp" in capsys.readouterr().out
    ds = xr.open_dataset(out / "summary.nc", engine="h5netcdf")
    assert list(ds.rule.values) == ["bp", "fa", "tp", "dtp"]
    assert np.isfinite(ds.test_error).all()
    # one hidden layer and η̂ = N/2: tp and dtp take bp's very steps
    assert float(ds.test_error.sel(rule="dtp")) == pytest.approx(
        float(ds.test_error.sel(rule="bp"))
    )


@pytest.mark.slow
def test_bartunovs_script_adds_the_dtp_rows_in_both_schedules(tmp_path, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "circuits"))
    import bartunov_fc

    out = tmp_path / "bfc"
    assert (
        bartunov_fc.main(["--quick", "--rules", "bp,dtp,dtp-alternating", "--out", str(out)]) == 0
    )
    text = capsys.readouterr().out
    for row in ("dtp ", "dtp-alternating", "bp ≤ dtp-alternating ≤ dtp-parallel"):
        assert row in text
    assert (out / "dtp-alternating-seed0.h5").exists() and (out / "dtp_alignment.png").exists()
    with bp.load(out / "dtp-alternating-seed0.h5") as rec:
        assert '"alternating"' in rec.attrs["rule_hyperparameters"]
    sys.modules.pop("bartunov_fc", None)


def test_the_dtp_benchmark_is_registered_with_its_target():
    assert benchmark_target("dtp_over_bp_epoch") == 3.0


@pytest.mark.slow
def test_the_dtp_benchmark_runs_and_reports_a_ratio():
    from bioprop.experiments import bench

    res = bench.run_bench(quick=True, only=["dtp_over_bp_epoch"], repeats=1)
    assert res["dtp_over_bp_epoch"]["ratio"] > 0
