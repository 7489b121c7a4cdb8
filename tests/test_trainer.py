"""The training loop: data order, bad input, divergence guard, optimizers."""

import math

import numpy as np
import pytest
import torch
from conftest import train_quietly

import bioprop as bp


def make(seed=0, n_train=32):
    data = bp.data.linear_teacher(n_in=8, n_out=3, n_train=n_train, n_test=16, seed=1)
    c = bp.Circuit.layered([8, 6, 3], activation="tanh", init=bp.init.uniform(0.3), seed=seed)
    return c, data


def test_every_rule_sees_the_same_data_order():
    seen = {}
    for rule in ("bp", "fa"):
        c, data = make()
        batches = []

        def on_step(step, signals, batches=batches):
            batches.append(signals.rates["input"].clone())

        bp.train(c, rule, data, epochs=2, batch_size=8, seed=5, progress=False, on_step=on_step)
        seen[rule] = torch.cat(batches)
    assert torch.equal(seen["bp"], seen["fa"])
    # ... and each epoch is a different permutation of the training set
    first, second = seen["bp"][:32], seen["bp"][32:]
    assert not torch.equal(first, second)
    assert torch.equal(first.sort(0).values, second.sort(0).values)


def test_training_reduces_the_loss_for_every_rule():
    for rule in ("bp", "fa", "dfa", "sign-symmetry", "shallow", "node-perturbation"):
        c, data = make(n_train=256)
        before = bp.evaluate(c, data.x_test, data.y_test, bp.losses.get("mse"))["loss"]
        run = bp.train(
            c, rule, data, optimizer=("sgd", {"lr": 0.02}), epochs=5, batch_size=8, progress=False
        )
        assert run.final["test_loss"] < before, rule


def test_divergence_stops_with_step_pathway_and_rule_and_keeps_the_recording(tmp_path):
    data = bp.data.linear_teacher(n_in=8, n_out=3, n_train=32, n_test=16, seed=1)
    c = bp.Circuit.layered([8, 6, 3], activation="linear", init=bp.init.uniform(0.3))
    path = tmp_path / "boom.h5"
    record = bp.Record(path, every=1)
    with pytest.raises(bp.DivergenceError) as info:
        train_quietly(c, "fa", data, lr=10.0, epochs=50, batch_size=4, record=record)
    err = info.value
    msg = str(err)
    assert f"at step {err.step}" in msg and "rule 'fa'" in msg and str(path) in msg
    assert err.pathway is None or f"pathway {err.pathway!r}" in msg
    rec = bp.load(path)
    steps = rec["metrics"].ds.step.values
    assert len(steps) >= 1 and steps[-1] <= err.step


def test_mismatched_data_and_circuit_are_refused_before_training():
    c, _ = make()
    other = bp.data.linear_teacher(n_in=5, n_out=3, n_train=8, n_test=4)
    with pytest.raises(ValueError, match="5 input features but the circuit's input population"):
        bp.train(c, "fa", other, progress=False)


def test_bad_training_options_are_refused():
    c, data = make()
    with pytest.raises(ValueError, match="unknown optimizer 'sgdd'"):
        bp.train(c, "fa", data, optimizer=("sgdd", {}), progress=False)
    with pytest.raises(ValueError, match="needs a learning rate"):
        bp.train(c, "bp", data, optimizer=("sgd", {}), progress=False)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        bp.train(c, "bp", data, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="unknown loss 'l2'"):
        bp.train(c, "bp", data, loss="l2", progress=False)


def test_cross_entropy_classification_reports_an_error_rate():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 4, generator=g)
    y = (x[:, 0] > 0).long()
    data = bp.data.Dataset(
        "halfspace", x[:150], y[:150], x[150:], y[150:], "classification", n_classes=2
    )
    c = bp.Circuit.layered([4, 8, 2], activation="relu", output_activation="linear", seed=0)
    run = bp.train(
        c,
        "fa",
        data,
        loss="cross-entropy",
        optimizer=("adam", {"lr": 1e-2}),
        epochs=20,
        batch_size=16,
        progress=False,
    )
    assert run.final["test_error"] < 0.15
    assert not math.isnan(run.final["test_loss"])


def test_max_steps_stops_early_and_summary_reports_it():
    c, data = make()
    run = bp.train(c, "fa", data, epochs=10, batch_size=4, max_steps=5, progress=False)
    assert run.steps == 5
    assert "steps=5" in run.summary()


@pytest.mark.parametrize("rule", ["fa", "sign-symmetry", "shallow", "node-perturbation"])
def test_direct_sgd_updates_train_exactly_as_gradient_plus_optimizer(rule, tmp_path):
    """With plain SGD the rule applies W ← (1 − ηλ)W − ηĝ in one in-place GEMM on steps that
    are not recorded; the weights match the .grad + torch.optim path to float64 round-off,
    recorded steps still store the rule's update, and no parameter is left armed."""
    data = bp.data.linear_teacher(n_in=12, n_out=4, n_train=96, n_test=8, seed=3)
    data = bp.data.Dataset(
        data.name,
        data.x_train.double(),
        data.y_train.double(),
        data.x_test.double(),
        data.y_test.double(),
        data.kind,
    )
    weights = {}
    for direct in (True, False):
        c = bp.Circuit.layered([12, 9, 7, 4], activation="tanh", seed=0).double()
        bp.train(
            c,
            rule,
            data,
            optimizer=("sgd", {"lr": 0.05, "weight_decay": 0.01}),
            epochs=2,
            batch_size=8,
            progress=False,
            direct_updates=direct,
            record=bp.Record(tmp_path / f"{direct}.h5", every=5),
        )
        weights[direct] = {k: v.clone() for k, v in c.state_dict().items()}
        assert not any(hasattr(p, "_bioprop_sgd_group") for p in c.parameters())
    for k, w in weights[True].items():
        torch.testing.assert_close(w, weights[False][k], atol=1e-12, rtol=1e-10)
    with bp.load(tmp_path / "True.h5") as rec:
        upd = rec["pathways"]["hidden2->output"].ds.weight_update.values
        assert np.isfinite(upd).all() and np.abs(upd).max() > 0


def test_momentum_or_adam_keeps_the_gradient_and_optimizer_path():
    from bioprop.rules.contract import apply_sgd_directly

    c = bp.Circuit.layered([3, 4, 2], seed=0)
    params = list(c.parameters())
    assert not apply_sgd_directly(params, torch.optim.SGD(params, lr=0.1, momentum=0.9))
    assert not apply_sgd_directly(params, torch.optim.Adam(params, lr=0.1))
    assert apply_sgd_directly(params, torch.optim.SGD(params, lr=0.1))
    apply_sgd_directly(params, None)
    assert not any(hasattr(p, "_bioprop_sgd_group") for p in params)


def test_a_parameter_stored_transposed_keeps_the_unfused_optimizer_and_its_exact_update():
    """torch's fused kernels pair a parameter and its gradient in memory order: a weight
    stored transposed (strides (1, n)) beside a contiguous gradient must not be fused."""
    from bioprop.training.optim import make_optimizer

    c = bp.Circuit.layered([5, 4, 3], seed=0).double()
    w = c.pathways["input->hidden"].weight
    w.data = w.data.t().contiguous().t()  # the same values, stored transposed
    opt = make_optimizer(("sgd", {"lr": 0.5, "weight_decay": 0.1}), c)
    assert not opt.defaults.get("fused")
    g = torch.randn(w.shape, dtype=torch.float64)
    expected = w.detach() - 0.5 * (g + 0.1 * w.detach())
    w.grad = g.clone()
    opt.step()
    torch.testing.assert_close(w.detach(), expected, atol=1e-14, rtol=0)
    assert make_optimizer(("sgd", {"lr": 0.5}), bp.Circuit.layered([5, 4, 3])).defaults["fused"]
