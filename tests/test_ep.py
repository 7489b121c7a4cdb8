"""Equilibrium propagation on settling circuits (bioprop.settling, rule ``ep``).

The gradient theorem (EP → BPTT as β → 0), fixed points and energy descent, the errors
for bad configurations, locality of the update, training and recording.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
from conftest import benchmark_target, train_quietly

import bioprop as bp
from bioprop import settling
from bioprop.analysis import angle
from bioprop.analysis import ep as analysis_ep
from bioprop.rules.equilibrium import EquilibriumPropagation, write_ep_grads
from bioprop.training.loop import epoch_order

MSE = bp.losses.get("mse")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only add overhead, and on a busy machine OpenMP threads
    spinning for a core make each step many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_circuit(activation="hard-sigmoid", sizes=(5, 8, 6, 3), seed=1, steps=3000, tol=1e-13):
    """A float64 circuit with two hidden populations, biases that keep most units off the
    hard-sigmoid's kinks, and a settling budget that converges."""
    c = settling.layered_dynamical(
        sizes,
        activation=activation,
        init=bp.init.uniform(0.5),
        seed=seed,
        epsilon=0.5,
        steps=steps,
        tol=tol,
    ).double()
    c.settling = dataclasses.replace(c.settling, check_every=10)  # fewer syncs
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for pw in c.feedforward_pathways():
            pw.bias.copy_(torch.rand(pw.bias.shape, generator=g, dtype=torch.float64) * 0.6 - 0.1)
    rule = bp.rules.get("ep", beta=0.1)
    rule.attach(c)
    x = torch.rand(5, sizes[0], generator=g, dtype=torch.float64)
    y = torch.rand(5, sizes[-1], generator=g, dtype=torch.float64)
    return c, rule, x, y


def _ep_vs_bptt(c, x, y, betas, symmetric=False):
    """Per β, per pathway: (angle in degrees, relative error) of the converged EP
    pseudo-gradient against the BPTT gradient through the converged free phase."""
    free = settling.settle(c, x)
    assert free.converged
    ref = settling.bptt(c, x, y, steps=free.steps)
    out = {}
    for beta in betas:
        nudged = settling.settle(c, x, beta=beta, target=y, start=free.u)
        minus = settling.settle(c, x, beta=-beta, target=y, start=free.u) if symmetric else None
        write_ep_grads(c, free.r, nudged.r, beta, minus.r if minus else None)
        out[beta] = {}
        for pw in c.feedforward_pathways():
            g_ep, g_bptt = pw.weight.grad, ref.grads[f"{pw.name}.weight"]
            rel = float((g_ep - g_bptt).norm() / g_bptt.norm())
            out[beta][pw.name] = (angle(g_ep, g_bptt), rel)
    return out


# -- the gradient theorem ---------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["hard-sigmoid", "logistic"])
def test_ep_update_approaches_the_bptt_gradient_as_beta_shrinks(activation):
    c, _, x, y = small_circuit(activation)
    res = _ep_vs_bptt(c, x, y, [1e-3, 1e-4])
    for name in res[1e-3]:
        (a_big, e_big), (a_small, e_small) = res[1e-3][name], res[1e-4][name]
        assert a_big < 5.0 and a_small < 5.0, (name, a_big, a_small)
        # one-sided estimate: error O(β), so ten times smaller β -> (about) ten times smaller
        assert e_small < e_big / 3, (name, e_big, e_small)


def test_symmetric_estimate_has_a_second_order_bias():
    c, _, x, y = small_circuit("logistic")
    one_sided = _ep_vs_bptt(c, x, y, [1e-2])[1e-2]
    symmetric = _ep_vs_bptt(c, x, y, [1e-2], symmetric=True)[1e-2]
    for name in one_sided:
        assert symmetric[name][1] < one_sided[name][1] / 5, (name, one_sided, symmetric)


def test_bptt_reference_matches_finite_differences_of_the_settled_loss():
    c, _, x, y = small_circuit("tanh", steps=200, tol=None)
    ref = settling.bptt(c, x, y, steps=200)
    pw = c.pathways["hidden1->hidden2"]

    def loss() -> float:
        u = settling.settle(c, x, steps=200, tol=None).u
        return float(settling.cost(c, u, y).mean())

    h = 1e-6
    for idx in [(0, 0), (3, 5), (5, 7)]:
        with torch.no_grad():
            pw.weight[idx] += h
            up = loss()
            pw.weight[idx] -= 2 * h
            down = loss()
            pw.weight[idx] += h
        fd = (up - down) / (2 * h)
        assert ref.grads[f"{pw.name}.weight"][idx].item() == pytest.approx(fd, rel=1e-5, abs=1e-10)


# -- fixed points -----------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["hard-sigmoid", "logistic"])
def test_free_settling_descends_the_energy_to_a_fixed_point(activation):
    c, _, x, y = small_circuit(activation, tol=1e-10)
    free = settling.settle(c, x, trace=x.shape[0])
    assert free.stopped == "tolerance" and free.converged and free.residual < 1e-10
    traj = free.trajectory
    T = traj["output"].shape[0]
    energies = torch.stack(
        [settling.energy(c, x, {n: traj[n][t] for n in traj}) for t in range(T)]
    )  # (time, sample)
    assert torch.all(energies[1:] - energies[:-1] <= 1e-12), energies.diff(dim=0).max()
    # the settled state is stationary: one more Euler step moves it by less than tol
    again = settling.settle(c, x, start=free.u, steps=1, tol=None)
    for n in free.u:
        assert torch.allclose(again.u[n], free.u[n], atol=1e-10)


def test_nudged_phase_with_beta_zero_reproduces_the_free_state():
    c, _, x, y = small_circuit()
    free = settling.settle(c, x)
    nudged = settling.settle(c, x, beta=0.0, target=y, start=free.u, steps=50, tol=None)
    for n in free.u:
        assert torch.allclose(nudged.u[n], free.u[n], atol=1e-12)


def test_nudging_lowers_the_cost_and_the_total_energy_decreases():
    c, _, x, y = small_circuit(tol=1e-12)
    free = settling.settle(c, x)
    beta = 0.5
    nudged = settling.settle(c, x, beta=beta, target=y, start=free.u, trace=x.shape[0])
    assert float(settling.cost(c, nudged.u, y).sum()) < float(settling.cost(c, free.u, y).sum())
    traj = nudged.trajectory
    F = torch.stack(
        [
            settling.total_energy(c, x, {n: traj[n][t] for n in traj}, y, beta)
            for t in range(traj["output"].shape[0])
        ]
    )
    assert torch.all(F[1:] - F[:-1] <= 1e-12)


# -- bad configurations -----------------------------------------------------------------------
def test_beta_zero_is_refused_for_training():
    with pytest.raises(ValueError, match=r"beta must be non-zero for training.*0/0 at β = 0"):
        bp.rules.get("ep", beta=0.0)


def test_a_non_symmetric_feedback_pathway_is_refused():
    c = settling.layered_dynamical([4, 5, 3], seed=0)
    B = bp.Pathway(
        "output",
        "hidden",
        torch.randn(5, 3),
        role="feedback",
        plastic=False,
        mirrors="hidden->output",
    )
    c.add_pathway(B)
    with pytest.raises(
        ValueError,
        match=r"'output->hidden' mirrors 'hidden->output' but is not "
        r"symmetric.*° from Wᵀ.*TransposePathway",
    ):
        bp.rules.get("ep").attach(c)


def test_settling_without_the_transpose_feedback_says_how_to_add_it():
    c = settling.layered_dynamical([4, 5, 3], seed=0)
    with pytest.raises(
        ValueError, match=r"no feedback pathway carries Wᵀ back to 'hidden'.*TransposePathway"
    ):
        c(torch.rand(2, 4))


def test_instant_populations_are_refused():
    c = bp.Circuit.layered([4, 5, 3], activation="hard-sigmoid")
    with pytest.raises(
        ValueError, match=r"population 'hidden' has dynamics='instant'.*layered_dynamical"
    ):
        bp.rules.get("ep").attach(c)


def test_settling_that_runs_out_of_steps_warns():
    c, _, x, _ = small_circuit(steps=3, tol=1e-9)
    with pytest.warns(
        settling.NonConvergenceWarning,
        match=r"settling did not converge: max \|du/dt\|"
        r" = .* > tol = 1e-09 after 3 steps",
    ):
        res = settling.settle(c, x)
    assert res.stopped == "steps" and not res.converged


def test_a_diverging_settling_raises():
    c = settling.layered_dynamical(
        [4, 6, 3], activation="linear", init=bp.init.uniform(3.0), seed=0, epsilon=1.9, steps=500
    )
    bp.rules.get("ep").attach(c)
    with pytest.raises(
        settling.SettlingError,
        match=r"settling diverged: population '\w+' has NaN/Inf"
        r" states .* Lower epsilon",
    ):
        c(torch.rand(2, 4))


def test_ep_refuses_a_loss_other_than_the_squared_error():
    c, rule, x, y = small_circuit(steps=20, tol=None)
    with pytest.raises(ValueError, match="train it with loss='mse', not 'cross-entropy'"):
        rule.step(c, x, y, bp.losses.get("cross-entropy"))


def test_a_plain_circuit_with_leaky_populations_warns_that_evaluation_sweeps():
    c = bp.Circuit(seed=0)
    c.add_population("input", 3)
    c.add_population("hidden", 4, activation="hard-sigmoid", dynamics="leaky")
    c.add_population("output", 2, activation="hard-sigmoid", dynamics="leaky")
    c.connect("input", "hidden")
    c.connect("hidden", "output")
    with pytest.warns(UserWarning, match="run its feedforward sweep, not the settling"):
        bp.rules.get("ep").attach(c)


# -- locality ---------------------------------------------------------------------------------
def test_the_update_of_a_weight_reads_only_the_rates_of_its_two_populations():
    c, _, x, y = small_circuit()
    free = settling.settle(c, x)
    nudged = settling.settle(c, x, beta=0.1, target=y, start=free.u)
    write_ep_grads(c, free.r, nudged.r, 0.1)
    target = c.pathways["hidden1->hidden2"]
    expected = target.weight.grad.clone()
    # everything but hidden1, hidden2 and W_(hidden2 <- hidden1) becomes NaN
    nan = {n: torch.full_like(r, math.nan) for n, r in free.r.items()}
    f = {**nan, "hidden1": free.r["hidden1"], "hidden2": free.r["hidden2"]}
    b = {**nan, "hidden1": nudged.r["hidden1"], "hidden2": nudged.r["hidden2"]}
    with torch.no_grad():
        for pw in c.feedforward_pathways():
            if pw is not target:
                pw.weight.fill_(math.nan)
    write_ep_grads(c, f, b, 0.1)
    assert torch.equal(target.weight.grad, expected)
    # the probe can fail: the same NaN in one of its own populations reaches the update
    write_ep_grads(c, {**f, "hidden1": nan["hidden1"]}, b, 0.1)
    assert torch.isnan(target.weight.grad).all()


# -- training and recording -------------------------------------------------------------------
def _toy(n_train=400, n_test=200, seed=0) -> bp.data.Dataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_train + n_test, 12, generator=g)
    labels = ((x - 0.5) @ torch.randn(12, 3, generator=g)).argmax(1)
    return bp.data.Dataset(
        "toy",
        x[:n_train],
        labels[:n_train],
        x[n_train:],
        labels[n_train:],
        "classification",
        n_classes=3,
    ).with_one_hot()


def test_a_quick_ep_training_run_reduces_the_loss(tmp_path):
    data = _toy()
    c = settling.layered_dynamical([12, 20, 3], seed=0)
    rule = bp.rules.get("ep", beta=1.0, random_sign=True, persistent=True)
    run = train_quietly(c, rule, data, lr=0.2, epochs=4, batch_size=10)
    losses = run.history["train_loss"]
    assert losses[-1] < 0.75 * losses[0], losses
    test = run.history["test_loss"]
    assert test[-1] < test[0], test
    assert len(rule._bank) == data.x_train.shape[0]  # one persistent particle per example


def test_recording_holds_trajectories_energy_and_the_bptt_reference(tmp_path):
    data = _toy(60, 20)
    c = settling.layered_dynamical([12, 7, 3], seed=0, steps=10)
    rule = bp.rules.get("ep", beta=0.5, nudged_steps=3, symmetric=True)
    path = tmp_path / "ep.h5"
    record = bp.Record(path, every=2, samples=4)
    train_quietly(c, rule, data, lr=0.1, epochs=1, batch_size=10, record=record)
    rec = bp.load(path)
    try:
        T = 1 + 10 + 3 + 3
        traj = rec["populations/hidden"]["trajectory"]
        assert traj.dims == ("step", "time", "sample", "neuron")
        assert traj.shape == (3, T, 4, 7)
        assert rec["settling"]["energy"].dims == ("step", "time", "sample")
        assert list(rec["settling"]["phase"].isel(step=0).values) == [0] * 11 + [1] * 3 + [2] * 3
        e = analysis_ep.settling_energy(rec, sample=0).isel(step=0)
        free_e = e.where(e.phase == 0, drop=True).values
        assert (free_e[1:] - free_e[:-1] <= 1e-5).all()  # float32 record of a descent
        # the trainer's shadow reference of a settling rule is BPTT through the settling:
        # at step 0, −∂L/∂W by BPTT on the initial weights and the first batch
        pw = rec["pathways/input->hidden"]
        assert "weight_update_bp" in pw and "weight_update_bptt" not in pw
        fresh = settling.layered_dynamical([12, 7, 3], seed=0, steps=10)
        bp.rules.get("ep").attach(fresh)
        idx = epoch_order(0, 0, 60)[:10]
        first = settling.bptt(fresh, data.x_train[idx], data.y_train[idx])
        expected = -first.grads["input->hidden.weight"].numpy()
        recorded = pw["weight_update_bp"].isel(step=0).values
        assert recorded == pytest.approx(expected, rel=1e-4, abs=1e-7)
        assert "delta_bp" in rec["populations/hidden"]
        assert bool((bp.analysis.reference_angle(rec, "hidden") < 90).all())
        angles = analysis_ep.bptt_angles(rec)
        assert set(angles.data_vars) == {"input->hidden", "hidden->output"}
        assert angles["input->hidden"].dims == ("step",)
        assert bool((angles.to_array() < 90).all())
        assert analysis_ep.bptt_delta_angle(rec, "hidden").dims == ("step",)
        assert analysis_ep.bptt_relative_error(rec, "hidden->output").notnull().all()
        u = analysis_ep.trajectory(rec, "output")
        assert u.dims == ("step", "time", "neuron") and "phase" in u.coords
    finally:
        rec.close()


def test_the_rules_reference_is_bptt_through_the_free_phase_it_will_run():
    c, _, x, y = small_circuit(steps=30, tol=None)
    rule = bp.rules.get("ep", beta=0.1, persistent=True)
    c.remove_pathway("output->hidden2")
    c.remove_pathway("hidden2->hidden1")
    rule.attach(c)
    rule.step(c, x, y, MSE)  # leaves persistent particles for x
    start = rule._bank.get(settling.ParticleBank.keys(x))
    assert start is not None
    grads = {n: p.grad.clone() for n, p in c.named_parameters() if p.grad is not None}
    ref = rule.reference(c, x, y, MSE)
    assert ref.method == "bptt through the settling"
    expected = settling.bptt(c, x, y, start=start)
    assert ref.grads.keys() == expected.grads.keys() and ref.grads
    for k, g in expected.grads.items():
        assert torch.equal(ref.grads[k], g), k
    assert set(ref.delta) == {"hidden1", "hidden2", "output"}
    # .grad and the particles are left alone
    assert all(torch.equal(p.grad, grads[n]) for n, p in c.named_parameters() if n in grads)
    assert torch.equal(rule._bank.get(settling.ParticleBank.keys(x))["output"], start["output"])
    # and it is not the layered twin's backprop gradient
    twin = bp.rules.reference.backprop(c, x, y, MSE)
    assert angle(ref.grads["input->hidden1.weight"], twin.grads["input->hidden1.weight"]) > 1.0


def test_image_tasks_train_ep_on_the_settling_circuit_with_per_layer_learning_rates():
    from bioprop.training.optim import groups_of, make_optimizer

    for name in ("fashion-mnist", "mnist"):
        t = bp.tasks.get(name)
        assert t.kind_for("ep") == "settling" and t.kind_for("fa") == "layered"
        c = t.circuit(0, "settling")
        assert isinstance(c, settling.DynamicalCircuit) and c.kind == "settling"
        assert [p.size for p in c.populations.values()] == [784, 500, 10]
        assert c.settling.epsilon == 0.5 and c.settling.steps == 20
        rule = t.rule("ep")
        hp = rule.hyperparameters()
        assert hp["beta"] == 1.0 and hp["random_sign"] and hp["persistent"]
        rule.attach(c)
        opt = make_optimizer(t.train_options("settling", "ep", quick=True)["optimizer"], c, rule)
        lrs = {g["name"]: g["lr"] for g in groups_of(opt)}
        assert lrs == {"input->hidden": 0.1, "hidden->output": 0.05}  # S&B's, halved


def test_ep_learns_the_synthetic_fashion_mnist_stand_in_without_diverging():
    from bioprop.data.synthetic import stand_in

    t = bp.tasks.get("fashion-mnist")
    data = stand_in("fashion-mnist", 2000, 1000)  # what a quick compare gets without the files
    opts = t.train_options("settling", "ep", quick=True)
    run = bp.train(t.circuit(0, "settling"), t.rule("ep"), data, seed=0, progress=False, **opts)
    assert run.steps == 60 and math.isfinite(run.final_loss)
    # chance is 0.9, and 0.5 the test loss of the dead state with every output clipped at 0
    assert run.test_error < 0.7 and run.final_loss < 0.45, run.history


def test_random_sign_draws_both_signs_reproducibly():
    def signs(seed):
        c, _, x, y = small_circuit(steps=5, tol=None)
        rule = bp.rules.get("ep", beta=0.3, random_sign=True, nudged_steps=1)
        c.remove_pathway("output->hidden2")
        c.remove_pathway("hidden2->hidden1")
        rule.attach(c, torch.Generator().manual_seed(seed))
        out = []
        for _ in range(20):
            rule.step(c, x, y, MSE)
            out.append(rule.last_beta)
        return out

    a, b = signs(0), signs(0)
    assert a == b and set(a) == {0.3, -0.3}


def test_dynamical_circuit_output_is_the_free_fixed_point_and_its_twin_sweeps():
    c, _, x, _ = small_circuit(tol=1e-12)
    assert torch.equal(c(x), settling.settle(c, x).r["output"])
    twin = settling.layered_twin(c)
    assert all(p.dynamics == "instant" for p in twin.populations.values())
    assert not list(twin.feedback_pathways())
    assert torch.allclose(twin(x), c.sweep(x).r["output"])
    assert next(twin.parameters()).dtype == torch.float64


def test_the_ep_benchmark_is_registered():
    assert benchmark_target("ep_over_bp_epoch") > 0


def test_rule_is_found_by_name_with_its_hyperparameters():
    rule = bp.rules.get("ep", beta=0.2, symmetric=True, nudged_steps=7)
    assert isinstance(rule, EquilibriumPropagation)
    hp = rule.hyperparameters()
    assert hp["beta"] == 0.2 and hp["symmetric"] and hp["nudged_steps"] == 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = settling.layered_dynamical([4, 5, 3])
        rule.attach(c)
    assert rule.hyperparameters()["free_steps"] == 20
    assert isinstance(c.pathways["output->hidden"], bp.TransposePathway)
    assert c.pathways["output->hidden"].effective_weight() is not None
