"""Kolen–Pollack (kp): its limit, the decay of W − Bᵀ, locality, and its errors."""

import copy

import pytest
import torch
from conftest import batch, layered_6_7_5_4_3, train_quietly

import bioprop as bp
from bioprop.rules.contract import UnsupportedCircuitError
from bioprop.training.optim import groups_of, make_optimizer

MSE = bp.losses.get("mse")


def set_feedback_to_w_transpose(circuit):
    for fb in circuit.feedback_pathways():
        fb.weight.data = circuit.pathways[fb.mirrors].weight.data.t().clone()


def step_side_by_side(runs, steps):
    """Trains every (rule, circuit, optimizer) of ``runs`` on the same batches (seeds 0, 1, ...)."""
    for s in range(steps):
        x, y = batch(seed=s)
        for rule, c, opt in runs:
            opt.zero_grad(set_to_none=True)
            rule.step(c, x, y, MSE)
            opt.step()


def forward_grads(circuit):
    return {
        f"{pw.name}.{part}": getattr(pw, part).grad.clone()
        for pw in circuit.feedforward_pathways()
        for part in ("weight", "bias")
        if getattr(pw, part) is not None
    }


def gaps(circuit):
    """‖W − Bᵀ‖_F per mirrored forward pathway."""
    return {
        fb.mirrors: float((circuit.pathways[fb.mirrors].weight - fb.weight.t()).detach().norm())
        for fb in circuit.feedback_pathways()
    }


# -- the limit ---------------------------------------------------------------------------


def test_kp_with_feedback_set_to_w_transpose_equals_bp(deep_circuit):
    x, y = batch()
    rule = bp.rules.get("kp").attach(deep_circuit)
    set_feedback_to_w_transpose(deep_circuit)
    ref = bp.rules.bp_reference(deep_circuit, x, y, MSE)
    sig = rule.step(deep_circuit, x, y, MSE)
    got = forward_grads(deep_circuit)
    assert got.keys() == ref.grads.keys()
    for k, g in ref.grads.items():
        assert torch.allclose(got[k], g, rtol=1e-12, atol=1e-14), k
    for pop in deep_circuit.hidden():
        assert torch.allclose(sig.delta[pop], ref.delta[pop], rtol=1e-12, atol=1e-14), pop
    # and B receives exactly the transposed update of the W it mirrors
    for fb in deep_circuit.feedback_pathways():
        w_grad = deep_circuit.pathways[fb.mirrors].weight.grad
        assert torch.allclose(fb.weight.grad, w_grad.t(), rtol=1e-12, atol=1e-14)


def test_kp_started_at_b_equal_w_transpose_follows_bp_step_after_step(deep_circuit):
    spec = ("sgd", {"lr": 0.2, "weight_decay": 0.05})
    twin = copy.deepcopy(deep_circuit)
    kp = bp.rules.get("kp").attach(deep_circuit)
    set_feedback_to_w_transpose(deep_circuit)
    bprule = bp.rules.get("bp").attach(twin)
    opt_kp = make_optimizer(spec, deep_circuit, kp)
    opt_bp = make_optimizer(spec, twin, bprule)
    step_side_by_side([(kp, deep_circuit, opt_kp), (bprule, twin, opt_bp)], steps=10)
    for pw in twin.feedforward_pathways():
        assert torch.allclose(deep_circuit.pathways[pw.name].weight, pw.weight, atol=1e-12)
    assert max(gaps(deep_circuit).values()) < 1e-12


def test_kp_with_random_feedback_differs_from_bp_below_the_output(deep_circuit):
    x, y = batch()
    rule = bp.rules.get("kp").attach(deep_circuit)
    ref = bp.rules.bp_reference(deep_circuit, x, y, MSE)
    rule.step(deep_circuit, x, y, MSE)
    got = forward_grads(deep_circuit)
    assert torch.allclose(got["hidden3->output.weight"], ref.grads["hidden3->output.weight"])
    assert not torch.allclose(got["input->hidden1.weight"], ref.grads["input->hidden1.weight"])


def test_kp_on_a_circuit_with_a_skip_pathway_equals_bp_when_b_is_w_transpose():
    c = bp.Circuit(seed=2)
    c.add_population("input", 4)
    c.add_population("a", 5, activation="tanh")
    c.add_population("b", 3, activation="tanh")
    c.add_population("output", 2, activation="logistic")
    for s, t in (("input", "a"), ("a", "b"), ("b", "output"), ("a", "output")):
        c.connect(s, t, init=bp.init.uniform(0.7))
    c = c.double()
    rule = bp.rules.get("kp").attach(c)
    assert {fb.mirrors for fb in c.feedback_pathways()} == {"a->b", "b->output", "a->output"}
    set_feedback_to_w_transpose(c)
    x, y = batch(n_in=4, n_out=2)
    ref = bp.rules.bp_reference(c, x, y, MSE)
    rule.step(c, x, y, MSE)
    got = forward_grads(c)
    for k, g in ref.grads.items():
        assert torch.allclose(got[k], g, rtol=1e-12, atol=1e-14), k


# -- W − Bᵀ decays as (1 − ηλ)^t -----------------------------------------------------------


@pytest.mark.parametrize("lr, weight_decay", [(0.5, 0.05), (0.2, 0.1)])
def test_w_minus_b_transpose_decays_as_one_minus_lr_times_weight_decay_to_the_t(lr, weight_decay):
    c = layered_6_7_5_4_3(output_activation="linear")
    rule = bp.rules.get("kp").attach(c)
    opt = make_optimizer(("sgd", {"lr": lr, "weight_decay": weight_decay}), c, rule)
    g0 = gaps(c)
    w0 = {pw.name: pw.weight.detach().clone() for pw in c.feedforward_pathways()}
    assert min(g0.values()) > 0.5  # random B: far from Wᵀ to start with
    t = 40
    for s in range(t):
        x, y = batch(seed=100 + s)
        opt.zero_grad(set_to_none=True)
        rule.step(c, x, 3 * (2 * y - 1), MSE)  # targets in [-3, 3]: W learns a lot
        opt.step()
    factor = (1 - lr * weight_decay) ** t
    for name, g in gaps(c).items():
        assert g == pytest.approx(factor * g0[name], rel=1e-6), name
        # while W did learn: it is not merely its decayed start
        learned = (c.pathways[name].weight.detach() - factor * w0[name]).norm()
        assert learned > 0.1 * g0[name], name


def test_without_weight_decay_the_gap_is_kept_while_the_angle_to_w_transpose_falls(tmp_path):
    task = bp.tasks.get("linear")
    circuit, data = task.circuit(0), task.load(0, True)
    rec_path = tmp_path / "kp.h5"
    record = bp.Record(rec_path, every=50)
    train_quietly(circuit, "kp", data, lr=0.01, batch_size=1, max_steps=200, record=record)
    rec = bp.load(rec_path)
    angle = bp.analysis.weight_alignment(rec, "hidden->output").values
    w = rec["pathways/hidden->output"].ds.weight.values
    b = rec["pathways/output->hidden"].ds
    gap = [float(((w[i].T - b.weight.values[i]) ** 2).sum() ** 0.5) for i in range(len(w))]
    assert angle[0] > 80 and angle[-1] < 15
    assert gap[-1] == pytest.approx(gap[0], rel=1e-3)
    # B is plastic, so its own update is recorded beside its weight
    assert "weight_update" in b and torch.isfinite(torch.as_tensor(b.weight_update.values)).all()
    rec.close()


# -- optimizer groups --------------------------------------------------------------------


def test_feedback_weights_form_the_feedback_group_at_lr_unless_feedback_lr_is_given():
    c = bp.Circuit.layered([4, 3, 2], seed=0)
    rule = bp.rules.get("kp").attach(c)
    groups = {g["name"]: g for g in groups_of(make_optimizer(("sgd", {"lr": 0.1}), c, rule))}
    assert set(groups) == {"circuit", "feedback"}
    assert groups["feedback"]["lr"] == groups["circuit"]["lr"] == 0.1
    assert groups["feedback"]["parameters"] == 2 * 3
    spec = ("sgd", {"lr": 0.1, "feedback_lr": 0.0, "weight_decay": 0.01})
    groups = {g["name"]: g for g in groups_of(make_optimizer(spec, c, rule))}
    assert groups["feedback"]["lr"] == 0.0 and groups["circuit"]["lr"] == 0.1
    assert groups["feedback"]["weight_decay"] == groups["circuit"]["weight_decay"] == 0.01


def test_kp_with_feedback_lr_zero_trains_exactly_like_fa(deep_circuit):
    twin = copy.deepcopy(deep_circuit)
    kp = bp.rules.get("kp").attach(deep_circuit)
    fa = bp.rules.get("fa").attach(twin)  # same generator stream: the same initial B
    for fb in twin.feedback_pathways():
        assert torch.equal(fb.weight, deep_circuit.pathways[fb.name].weight)
    opt_kp = make_optimizer(("sgd", {"lr": 0.1, "feedback_lr": 0.0}), deep_circuit, kp)
    opt_fa = make_optimizer(("sgd", {"lr": 0.1}), twin, fa)
    step_side_by_side([(kp, deep_circuit, opt_kp), (fa, twin, opt_fa)], steps=5)
    for name, p in twin.named_parameters():
        assert torch.equal(dict(deep_circuit.named_parameters())[name], p), name


# -- locality ----------------------------------------------------------------------------


def kp_grads_after_corrupting(keep_feedback_above=None, corrupt_rate=None):
    """One kp step on a fresh circuit; after the forward pass every forward weight is NaN,
    and every feedback weight too except those whose source lies above population
    ``keep_feedback_above`` (the ones δ of that population is made of)."""
    c = bp.Circuit.layered([6, 5, 4, 3], activation="tanh", init=bp.init.uniform(0.5), seed=4)
    c = c.double()
    rule = bp.rules.get("kp").attach(c)
    x, y = batch()
    state = rule.forward(c, x)
    if keep_feedback_above is not None:
        order = c.order()
        level = order.index(keep_feedback_above)
        for pw in c.pathways.values():
            if pw.role == "feedback" and order.index(pw.source) > level:
                continue
            pw.weight.data.fill_(float("nan"))
    if corrupt_rate is not None:
        state.r[corrupt_rate] = torch.full_like(state.r[corrupt_rate], float("nan"))
    rule.teach(c, state, y, MSE)
    return {n: p.grad.clone() for n, p in c.named_parameters() if p.grad is not None}


def test_no_kp_update_reads_a_forward_weight():
    clean = kp_grads_after_corrupting()
    # corrupt every forward weight, keep every feedback weight
    altered = kp_grads_after_corrupting(keep_feedback_above="input")
    assert clean.keys() == altered.keys()
    for k in clean:
        assert torch.equal(clean[k], altered[k]), k


@pytest.mark.parametrize(
    "feedback, above", [("output->hidden2", "output"), ("hidden2->hidden1", "hidden2")]
)
def test_feedback_update_reads_only_delta_above_and_the_rate_below(feedback, above):
    key = f"pathways.{feedback}.weight"
    clean = kp_grads_after_corrupting()[key]
    # every weight NaN — W, this B itself, the B's below — except the B's carrying δ_above
    altered = kp_grads_after_corrupting(keep_feedback_above=above)[key]
    assert torch.isfinite(altered).all()
    assert torch.equal(clean, altered)


def test_the_probe_sees_the_rate_below_that_the_feedback_update_reads():
    # the same probe does see what ĝ_B reads: r of the population B projects to
    altered = kp_grads_after_corrupting(corrupt_rate="hidden2")["pathways.output->hidden2.weight"]
    assert torch.isnan(altered).all()


# -- refusals and bad options ------------------------------------------------------------


def test_unknown_feedback_init_is_refused_when_the_rule_is_made():
    with pytest.raises(ValueError, match="unknown initialiser 'gauss'"):
        bp.rules.get("kp", feedback_init="gauss")
    with pytest.raises(TypeError, match="init must be"):
        bp.rules.get("kp", feedback_init=0.5)


def test_unknown_kp_option_is_named():
    with pytest.raises(TypeError, match="rule 'kp'.*sigma"):
        bp.rules.get("kp", sigma=1.0)


def test_an_optimizer_lr_for_a_group_kp_does_not_have_names_its_groups():
    c = bp.Circuit.layered([4, 3, 2], seed=0)
    rule = bp.rules.get("kp").attach(c)
    with pytest.raises(ValueError, match=r"module_lr.*groups: \['feedback'\]"):
        make_optimizer(("sgd", {"lr": 0.1, "module_lr": 0.01}), c, rule)


def test_kp_refuses_a_settling_circuit():
    c = bp.Circuit.layered([4, 3, 2], dynamics="leaky", seed=0)
    with pytest.raises(UnsupportedCircuitError, match="'kp' trains layered circuits.*settling"):
        bp.rules.get("kp").attach(c)


def test_kp_refuses_a_fixed_forward_pathway_it_would_mirror():
    c = bp.Circuit.layered([4, 3, 3, 2], seed=0)
    c.pathways["hidden1->hidden2"].plastic = False
    why = bp.rules.get("kp").supports(c)
    assert "'hidden1->hidden2' is fixed" in why and "use 'fa'" in why
    with pytest.raises(UnsupportedCircuitError, match="make it plastic"):
        bp.train(c, "kp", bp.data.linear_teacher(n_in=4, n_out=2, n_train=4, n_test=4))
    # a fixed pathway out of the input gets no B, so it is no obstacle
    c2 = bp.Circuit.layered([4, 3, 2], seed=0)
    c2.pathways["input->hidden"].plastic = False
    assert bp.rules.get("kp").supports(c2) is None


def test_kp_refuses_a_circuit_that_already_carries_another_rules_feedback():
    c = bp.Circuit.layered([4, 3, 2], seed=0)
    bp.rules.get("fa").attach(c)
    with pytest.raises(
        UnsupportedCircuitError, match=r"already has feedback pathways.*'hidden->output'"
    ):
        bp.rules.get("kp").attach(c)


def test_kp_is_registered_as_a_layered_rule_with_its_description():
    assert bp.rules.kinds_of("kp") == ["layered"]
    assert "Kolen-Pollack" in bp.rules.describe()["kp"]
    assert isinstance(bp.rules.get("kp"), bp.rules.kolen_pollack.KolenPollack)
