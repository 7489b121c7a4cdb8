"""Recurrent rules (bptt, dni, dni-aux): limits against full BPTT, locality, module learning."""

from __future__ import annotations

import math

import pytest
import torch

import bioprop as bp
from bioprop.core import seeding
from bioprop.recurrent import CopyTask, RecurrentCircuit, RepeatCopyTask, full_bptt, windows
from bioprop.recurrent.reference import core_named
from bioprop.training.optim import make_optimizer


def get(name, **hyperparameters):
    return bp.rules.get(name, kind="recurrent", **hyperparameters)


def _setup(cell="lstm", n=4, batch=3, hidden=12, task=None, seed=0):
    task = task or CopyTask()
    c = RecurrentCircuit(task.n_in, hidden, task.n_out, cell=cell, seed=seed).double()
    b = task.sample(n, batch, seeding.generator(seed, "test batch")).to(torch.float64)
    return c, b


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _grads(c):
    return {n: p.grad.clone() for n, p in core_named(c).items()}


def test_the_one_registry_lists_the_papers_recurrent_rules_beside_the_feedforward_dni():
    recurrent = [(n, d) for n, k, d in bp.rules.entries() if k == "recurrent"]
    assert {"bptt", "dni", "dni-aux"} <= {n for n, _ in recurrent}
    assert all(d for _, d in recurrent)
    assert set(bp.rules.kinds_of("dni")) == {"layered", "recurrent"}
    with pytest.raises(ValueError, match="pass kind="):
        bp.rules.get("dni")
    assert not hasattr(bp.rules.get("dni", kind="layered"), "T")  # the feedforward rule
    assert get("dni", T=4).T == 4 and get("bptt").kind == "recurrent"


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
@pytest.mark.parametrize("T", [1, 2, 3, 5])
@pytest.mark.parametrize("rule", ["dni", "dni-aux"])
def test_oracle_synthetic_gradient_makes_dni_equal_full_bptt(cell, T, rule):
    """δ̂_b := the true future gradient ⇒ Σ_k ∂J_k/∂θ = ∂L/∂θ of untruncated BPTT, and M's
    bootstrapped target equals the true gradient (L_M = 0)."""
    c, b = _setup(cell, n=4, task=RepeatCopyTask(r_max=2) if T == 3 else None)
    r = get(rule, T=T)
    ref = r.reference(c, b, None, None)  # full BPTT, with the true boundary gradients
    true = ref.boundaries
    assert ref.method == "full bptt"
    assert len(true) == len(windows(b.length, T)) - 1 > 0
    r.attach(c)
    r.synthetic = lambda boundary, s: true[boundary - 1]
    sig = r.step(c, b, None, None)
    assert _max_diff(ref.grads, _grads(c)) < 1e-6
    assert max(float(g.abs().max()) for g in ref.grads.values()) > 1e-3  # not trivially zero
    assert sig.extra["module_loss"] < 1e-12
    for tgt, tr in zip(sig.extra["target"], true[: len(sig.extra["target"])], strict=True):
        torch.testing.assert_close(tgt, tr, atol=1e-9, rtol=0)
    assert math.isclose(float(sig.loss), float(ref.loss), rel_tol=1e-12)


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_bptt_with_T_at_least_the_sequence_length_is_full_bptt(cell):
    c, b = _setup(cell, n=3)
    ref = full_bptt(c, b).grads
    get("bptt", T=b.length).step(c, b, None, None)
    assert _max_diff(ref, _grads(c)) < 1e-12
    get("bptt", T=b.length + 7).step(c, b, None, None)
    assert _max_diff(ref, _grads(c)) < 1e-12


def test_truncation_changes_the_gradient_and_an_untrained_module_is_bptt():
    """Short windows cut real gradient paths (so the limit tests are not trivial); a fresh
    dni module predicts δ̂ = 0, which makes dni's core gradient exactly truncated BPTT's."""
    c, b = _setup("lstm", n=4)
    ref = full_bptt(c, b).grads
    get("bptt", T=2).step(c, b, None, None)
    g_bptt = _grads(c)
    assert _max_diff(ref, g_bptt) > 1e-3
    r = get("dni", T=2)
    r.attach(c)
    r.step(c, b, None, None)
    assert _max_diff(g_bptt, _grads(c)) < 1e-12


@pytest.mark.parametrize("rule", ["dni", "dni-aux"])
def test_window_update_never_reads_the_future_except_through_the_module_target(rule):
    """Corrupt every later input and target (NaN) right after window k is computed: windows
    0…k contribute exactly what they contribute on the clean sequence, and finitely; the
    corruption does reach the rule (the later windows and M's targets become NaN)."""
    c, b = _setup("lstm", n=5, batch=4)
    r = get(rule, T=2)
    r.attach(c)
    with torch.no_grad():  # a trained-looking module, so δ̂ ≠ 0 carries information
        for p in r.module.parameters():
            p.copy_(
                0.1
                * torch.randn(p.shape, generator=torch.Generator().manual_seed(3), dtype=p.dtype)
            )
    clean = r.backward(c, b, keep_window_grads=True).extra
    k0 = 2
    corrupted = b.to(torch.float64)  # a copy

    def corrupt(k, batch):
        if k == k0:
            stop = windows(batch.length, 2)[k][1]
            batch.x[stop:] = math.nan
            batch.y[stop:] = math.nan

    bad = r.backward(c, corrupted, keep_window_grads=True, after_window=corrupt).extra
    for k in range(k0 + 1):
        for name, g in bad["window_grads"][k].items():
            assert torch.isfinite(g).all(), (k, name)
            assert torch.equal(g, clean["window_grads"][k][name]), (k, name)
    for k in range(k0):  # targets of boundaries 1..k0 come from windows 1..k0: untouched
        assert torch.equal(bad["target"][k], clean["target"][k])
    later = bad["window_grads"][k0 + 1]
    assert any(not torch.isfinite(g).all() for g in later.values())
    assert not torch.isfinite(bad["target"][k0]).all()  # boundary k0+1's target: the future


def test_aux_weight_zero_is_dni_and_the_aux_loss_enters_only_the_module_target():
    c, b = _setup("lstm", n=4)
    d = get("dni", T=2).attach(c)
    c2, _ = _setup("lstm", n=4)
    a = get("dni-aux", T=2, aux_weight=0.0).attach(c2)
    gen = seeding.generator(5, "test module")
    with torch.no_grad():
        for p, q in zip(d.module.net.parameters(), a.module.net.parameters(), strict=True):
            p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
            q.copy_(p)
        for p in a.module.aux.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    sd = d.backward(c, b, keep_window_grads=True).extra
    sa = a.backward(c2, b, keep_window_grads=True).extra
    assert _max_diff(_grads(c), _grads(c2)) < 1e-12
    a.aux_weight = 1.0
    sa = a.backward(c2, b, keep_window_grads=True).extra
    # window 0's core update is the same (the aux term is read at s_b, b ≥ 1) ...
    assert _max_diff(sd["window_grads"][0], sa["window_grads"][0]) < 1e-12
    # ... but M's targets carry the auxiliary gradient, and A learns
    assert float((sd["target"][0] - sa["target"][0]).abs().max()) > 1e-6
    assert sa["aux_loss"] > 0
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in a.module.aux.parameters())


def test_module_trained_on_a_frozen_circuit_learns_the_true_future_gradient():
    """M alone learns (core frozen): the relative error of δ̂ to the true boundary gradient
    falls from 1 (δ̂ = 0) to about 0.65 — the rest depends on characters not yet read, which
    no function of s_b can know."""
    task = CopyTask()
    c = RecurrentCircuit(task.n_in, 16, task.n_out, cell="lstm", seed=0)
    r = get("dni", T=2).attach(c)
    # the core frozen (lr 0): only the group "module" moves
    opt = make_optimizer(("adam", {"lr": 0.0, "module_lr": 1e-2}), c, r)
    gen = seeding.generator(1, "data")
    core = {n: p.detach().clone() for n, p in core_named(c).items()}

    def rel_error():
        b = task.sample(3, 64, seeding.generator(99, "held out"))
        synthetic = r.step(c, b, None, None).extra["synthetic"]
        true = r.reference(c, b, None, None).boundaries
        num = sum(float((s - t).norm() ** 2) for s, t in zip(synthetic, true, strict=False))
        den = sum(float(t.norm() ** 2) for t in true[: len(synthetic)])
        return math.sqrt(num / den)

    before = rel_error()
    for _ in range(100):
        r.step(c, task.sample(3, 32, gen), None, None)
        opt.step()
    after = rel_error()
    assert before == pytest.approx(1.0)
    assert after < 0.75, after
    assert all(torch.equal(p, core[n]) for n, p in core_named(c).items())


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: get("bptt", T=0), "T must be >= 1"),
        (lambda: get("dni", T=-2), "T must be >= 1"),
        (lambda: get("dni", T=2.5), "integer >= 1"),
        (lambda: get("dni", T=True), "integer >= 1"),
        (lambda: get("rtrl", T=2), "unknown rule 'rtrl'"),
        (lambda: get("dni", T=2, module="conv"), "unknown synthetic-gradient module 'conv'"),
        (lambda: get("dni-aux", T=2, aux_weight=-1.0), "aux_weight must be >= 0"),
        (lambda: RecurrentCircuit(9, 8, 8, cell="gru"), "unknown cell type 'gru'"),
        (lambda: RecurrentCircuit(9, 0, 8), "n_hidden must be a positive integer"),
        (lambda: windows(0, 2), "cannot cut a sequence of length 0"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_recurrent_rule_refuses_a_layered_circuit_and_a_wrong_input_size():
    layered = bp.Circuit.layered([3, 4, 2])
    why = get("dni", T=2).supports(layered)
    assert "trains a bioprop.recurrent.RecurrentCircuit" in why and "layered" in why
    with pytest.raises(bp.rules.UnsupportedCircuitError, match="RecurrentCircuit"):
        get("dni", T=2).attach(layered)
    with pytest.raises(bp.rules.UnsupportedCircuitError, match="RecurrentCircuit"):
        bp.train(layered, get("bptt"), None, steps=1)
    c = RecurrentCircuit(9, 8, 8)
    with pytest.raises(ValueError, match=r"inputs must have shape \(time, batch, 9\)"):
        c.unroll(c.initial_state(2), torch.zeros(5, 2, 10))


def test_a_recurrent_step_takes_a_batch_of_sequences_and_no_separate_target_or_loss():
    c, b = _setup("rnn", n=2)
    r = get("bptt", T=2)
    with pytest.raises(TypeError, match="steps on a batch of sequences"):
        r.step(c, b.x, None, None)
    with pytest.raises(ValueError, match="pass y=None and loss=None"):
        r.step(c, b, b.y, "mse")
    sig = r.step(c, b, None, None)
    assert sig.output.shape == b.y.shape and sig.rates["hidden"].shape == (3, 12)


def test_the_module_is_the_optimizer_group_module_and_bptt_has_an_empty_one():
    c, _ = _setup("lstm")
    d = get("dni", T=2).attach(c)
    (group,) = d.parameter_groups(c)
    assert group["name"] == "module" and len(group["params"]) == 2  # A and a
    opt = make_optimizer(("adam", {"lr": 1e-2, "module_lr": 1e-3}), c, d)
    lrs = {g["name"]: g["lr"] for g in opt.param_groups}
    assert lrs == {"circuit": 1e-2, "module": 1e-3}
    c2, _ = _setup("lstm")
    b = get("bptt").attach(c2)
    opt = make_optimizer(("adam", {"lr": 1e-2, "module_lr": 1e-3}), c2, b)
    assert [g["name"] for g in opt.param_groups] == ["circuit"]


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_the_fused_kernel_computes_the_circuits_equations_step_by_step(cell):
    """unroll through torch's fused kernel = the equations in Python (keep_states=True):
    final state, outputs and the gradient of every pathway, from a non-zero start state."""
    c, b = _setup(cell, n=4)
    g = torch.Generator().manual_seed(1)
    s0 = tuple(
        0.5 * torch.randn(3, 12, generator=g, dtype=torch.float64) for _ in c.initial_state(3)
    )
    results = []
    for keep in (False, True):
        c.zero_grad(set_to_none=True)
        end, y, states = c.unroll(s0, b.x, keep_states=keep)
        (y.square().sum() + sum(s.sum() for s in end)).backward()
        results.append((end, y, {n: p.grad.clone() for n, p in core_named(c).items()}, states))
    (e1, y1, g1, st1), (e2, y2, g2, st2) = results
    assert st1 == [] and len(st2) == b.length
    torch.testing.assert_close(y1, y2, atol=1e-12, rtol=0)
    for a, bb in zip(e1, e2, strict=True):
        torch.testing.assert_close(a, bb, atol=1e-12, rtol=0)
    assert _max_diff(g1, g2) < 1e-10


@pytest.mark.parametrize("rule", ["bptt", "dni", "dni-aux"])
def test_gate_weights_stacked_once_per_update_give_the_same_grads_as_per_window(rule):
    # the windows of one update share one stacked copy of the LSTM gate weights (its .grad
    # split by gate on leaving); keep_window_grads stacks per window: the same .grad
    c, b = _setup(n=6, batch=4)
    r = get(rule, T=2)
    r.attach(c, seeding.generator(0, "feedback"))
    r.backward(c, b)
    shared = _grads(c)
    r.backward(c, b, keep_window_grads=True)
    assert _max_diff(shared, _grads(c)) < 1e-12
    frozen = c.pathways["input->hidden:f"]
    frozen.plastic = False  # a frozen gate pathway gets no .grad either way
    r.backward(c, b)
    assert frozen.weight.grad is None and c.pathways["input->hidden:i"].weight.grad is not None
