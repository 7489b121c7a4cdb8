"""Two networks joined by a DNI: stream targets, oracle limit, what each method trains."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

import bioprop as bp
from bioprop.core import seeding
from bioprop.recurrent.two_networks import (
    METHODS,
    StreamTask,
    TwoNetworks,
    evaluate,
    get_method,
    train_step,
)
from bioprop.recurrent.two_networks_loop import fit


def gen(seed):
    return seeding.generator(seed, "test streams")


def _task(T=2, blocks=4, n=40, d=6, seed=0):
    x = torch.randn(n, d, generator=gen(seed))
    return StreamTask(x, torch.arange(n) % 10, T=T, blocks=blocks)


def test_stream_targets_count_odd_classes_per_block_and_threes_over_T_squared_steps():
    task = _task(T=3, blocks=5)
    s = task.sample(4, gen(1))
    assert s.x.shape == (15, 4, 6) and s.a.shape == (5, 4) and s.b.shape == (5, 4)
    # recover the classes from the images (class = row index mod 10, rows are distinct)
    rows = (s.x[:, :, None, :] == task.x[None, None]).all(-1).float().argmax(-1)
    c = task.c[rows]
    for n in range(4):
        for j in range(5):
            block = c[3 * j : 3 * j + 3, n]
            assert s.a[j, n] == int((block % 2 == 1).sum())
            last = c[max(0, 3 * (j - 2)) : 3 * j + 3, n]  # the last T² = 9 steps
            assert s.b[j, n] == int((last == 3).sum())


def test_streams_are_reproducible_from_the_seed():
    task = _task()
    a = task.sample(3, gen(7))
    b = task.sample(3, gen(7))
    assert torch.equal(a.x, b.x) and torch.equal(a.b, b.b)


def _full_boundary_and_message_grads(net, s):
    """True B·∂L_{≥b}/∂s^A_b (A's future includes B's loss) and B·∂L_B/∂m_j, by autograd."""
    T, n_b, K = net.T, s.x.shape[1], s.a.shape[0]
    state, bounds, msgs, la = net.A.initial_state(n_b), [], [], []
    for j in range(K):
        if j > 0:
            sb = net.A.flat(state)
            bounds.append(sb)
            state = net.A.unflat(sb)
        state, logit, m = net.run_a(state, s.x[j * T : (j + 1) * T])
        la.append(logit)
        msgs.append(m)
    _, lb, _ = net.B.unroll(net.B.initial_state(n_b), torch.stack(msgs))
    ce = torch.nn.functional.cross_entropy
    true_a = []
    for j, sb in enumerate(bounds, start=1):
        future = (
            sum(ce(la[i], s.a[i]) for i in range(j, K))
            + ce(lb.reshape(-1, lb.shape[-1]), s.b.reshape(-1), reduction="sum") / n_b
        )
        true_a.append(torch.autograd.grad(future, sb, retain_graph=True)[0] * n_b)
    lb_total = ce(lb.reshape(-1, lb.shape[-1]), s.b.reshape(-1), reduction="sum") / n_b
    true_m = [g * n_b for g in torch.autograd.grad(lb_total, msgs)]
    return true_a, true_m


def test_oracle_modules_make_network_a_learn_exactly_as_with_full_bptt():
    """With M_A := the true future gradient at A's boundaries (B's loss included) and
    M_m := the true ∂L_B/∂m_j, A's parameter gradients equal full BPTT's; with B's window
    covering the whole stream (blocks ≤ T) B's equal full BPTT's too."""
    T = 3
    net = TwoNetworks(6, T, hidden_a=5, hidden_b=4, message=3, seed=0).double()
    s = _task(T=T, blocks=3).sample(4, gen(2))
    s.x = s.x.double()
    true_a, true_m = _full_boundary_and_message_grads(net, s)
    train_step(net, s, "bptt")
    ref = [p.grad.clone() for p in net.network_parameters()]
    calls = {"A": iter(true_a), "m": iter(true_m)}
    net.M_A.predict = lambda state: next(calls["A"])
    net.M_m.predict = lambda m: next(calls["m"])
    train_step(net, s, "dni")
    got = [p.grad for p in net.network_parameters()]
    assert max(float((a - b).abs().max()) for a, b in zip(ref, got, strict=True)) < 1e-6
    assert max(float(a.abs().max()) for a in ref) > 1e-3


def test_only_dni_teaches_the_message_and_truncated_never_does():
    net = TwoNetworks(6, 2, hidden_a=5, hidden_b=4, message=3, seed=0)
    s = _task().sample(8, gen(3))
    msg = net.A.pathways["hidden->message"].weight
    train_step(net, s, "truncated")
    assert msg.grad is None or float(msg.grad.abs().max()) == 0.0
    assert all(p.grad is None for p in net.module_parameters())
    with torch.no_grad():
        net.M_m.net[0].weight.normal_(0, 0.1)
    train_step(net, s, "dni")
    assert float(msg.grad.abs().max()) > 0
    assert net.M_m.net[0].weight.grad is not None  # M_m learns from B's targets
    train_step(net, s, "bptt")
    assert float(msg.grad.abs().max()) > 0
    ev = evaluate(net, s)
    assert 0 <= ev["acc_a"] <= 1 and 0 <= ev["acc_b"] <= 1


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: _task(T=0), "T must be >= 1"),
        (lambda: _task(blocks=0), "blocks must be a positive integer"),
        (
            lambda: train_step(TwoNetworks(6, 2), _task().sample(2, gen(0)), "rtrl"),
            "unknown method 'rtrl'",
        ),
    ],
)
def test_bad_two_network_settings_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_methods_are_rule_objects_with_the_modules_in_their_own_optimizer_group(tmp_path):
    """The library loop: make_optimizer's groups (module lr kept in provenance), recordings
    of both networks, the message angle only where there is a message module."""
    assert list(METHODS) == ["bptt", "dni", "truncated"]
    assert get_method("dni").name == "dni" and get_method(get_method("bptt")).name == "bptt"
    g = gen(1)
    x, c = torch.randn(60, 6, generator=g), torch.arange(60) % 10
    data = SimpleNamespace(x_train=x[:40], y_train=c[:40], x_test=x[40:], y_test=c[40:])
    runs = {}
    for method in ("dni", "truncated"):
        net = TwoNetworks(6, 2, hidden_a=5, hidden_b=4, message=3, seed=0)
        runs[method] = fit(
            net,
            method,
            data,
            blocks=4,
            steps=3,
            n_test=4,
            batch_size=4,
            optimizer=("adam", {"lr": 1e-3, "module_lr": 1e-2}),
            every=2,
            record=tmp_path / method,
        )
    assert runs["dni"].step == [0, 2] and 0 <= runs["dni"].acc_b[-1] <= 1
    assert math.isfinite(runs["dni"].angle[-1]) and math.isnan(runs["truncated"].angle[-1])
    with bp.load(tmp_path / "dni_A.h5") as rec:
        groups = {g["name"]: g["lr"] for g in json.loads(rec.attrs["optimizer_groups"])}
        assert groups == {"circuit": 1e-3, "module": 1e-2}
        assert rec.attrs["rule"] == "dni" and rec.attrs["network"] == "A"
        assert rec["interfaces/message"].to_dataset()["angle"].sizes["tick"] == 4
    with bp.load(tmp_path / "truncated_B.h5") as rec:
        assert rec["evaluation"].to_dataset()["acc_b"].sizes["step"] == 2
