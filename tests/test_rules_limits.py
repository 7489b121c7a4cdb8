"""Each rule in the limit where it must equal backprop, checked against autograd."""

import pytest
import torch
from conftest import batch

import bioprop as bp

MSE = bp.losses.get("mse")


def grads(circuit):
    return {n: p.grad.clone() for n, p in circuit.named_parameters() if p.grad is not None}


def bp_grads(circuit, x, y, loss=MSE):
    ref = bp.rules.bp_reference(circuit, x, y, loss)
    g, delta = ref.grads, ref.delta
    return {f"pathways.{k}": v for k, v in g.items()}, delta


def assert_same(a, b, tol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=tol, atol=tol), k


def test_bp_rule_matches_finite_differences(deep_circuit):
    x, y = batch()
    rule = bp.rules.get("bp").attach(deep_circuit)
    rule.step(deep_circuit, x, y, MSE)
    g = grads(deep_circuit)
    eps = 1e-6
    for name, p in deep_circuit.named_parameters():
        flat = p.data.view(-1)
        for i in range(0, flat.numel(), max(1, flat.numel() // 7)):
            old = flat[i].item()
            flat[i] = old + eps
            lp = MSE(deep_circuit(x), y).item()
            flat[i] = old - eps
            lm = MSE(deep_circuit(x), y).item()
            flat[i] = old
            assert g[name].view(-1)[i].item() == pytest.approx((lp - lm) / (2 * eps), abs=1e-7)


def test_bp_reference_leaves_grad_untouched_and_equals_the_bp_rule(deep_circuit):
    x, y = batch()
    ref, _ = bp_grads(deep_circuit, x, y)
    assert all(p.grad is None for p in deep_circuit.parameters())
    bp.rules.get("bp").attach(deep_circuit).step(deep_circuit, x, y, MSE)
    assert_same(grads(deep_circuit), ref, 1e-12)


def test_fa_with_feedback_set_to_w_transpose_equals_bp(deep_circuit):
    x, y = batch()
    rule = bp.rules.get("fa").attach(deep_circuit)
    for fb in deep_circuit.feedback_pathways():
        fb.weight.data = deep_circuit.pathways[fb.mirrors].weight.data.t().clone()
    ref, ref_delta = bp_grads(deep_circuit, x, y)
    sig = rule.step(deep_circuit, x, y, MSE)
    assert_same(grads(deep_circuit), ref)
    for pop in deep_circuit.hidden():
        assert torch.allclose(sig.delta[pop], ref_delta[pop], atol=1e-9)


def test_fa_with_random_feedback_differs_from_bp(deep_circuit):
    x, y = batch()
    rule = bp.rules.get("fa").attach(deep_circuit)
    ref, _ = bp_grads(deep_circuit, x, y)
    rule.step(deep_circuit, x, y, MSE)
    g = grads(deep_circuit)
    assert torch.allclose(
        g["pathways.hidden3->output.weight"], ref["pathways.hidden3->output.weight"]
    )
    assert not torch.allclose(
        g["pathways.input->hidden1.weight"], ref["pathways.input->hidden1.weight"]
    )


def test_fa_installs_visible_fixed_feedback_pathways(deep_circuit):
    bp.rules.get("fa").attach(deep_circuit)
    fbs = {p.name: p for p in deep_circuit.feedback_pathways()}
    assert set(fbs) == {"hidden2->hidden1", "hidden3->hidden2", "output->hidden3"}
    assert fbs["output->hidden3"].mirrors == "hidden3->output"
    assert fbs["output->hidden3"].weight.shape == (4, 3)
    assert not fbs["output->hidden3"].plastic


def test_dfa_with_one_hidden_layer_and_b_equal_w2_transpose_equals_bp():
    c = bp.Circuit.layered([6, 5, 3], activation="tanh", init=bp.init.uniform(0.5), seed=2).double()
    x, y = batch()
    rule = bp.rules.get("dfa").attach(c)
    c.pathways["output->hidden"].weight.data = c.pathways["hidden->output"].weight.data.t().clone()
    ref, _ = bp_grads(c, x, y)
    rule.step(c, x, y, MSE)
    assert_same(grads(c), ref)


def test_dfa_sends_the_output_error_to_every_hidden_layer(deep_circuit):
    rule = bp.rules.get("dfa").attach(deep_circuit)
    assert {p.name for p in deep_circuit.feedback_pathways()} == {
        "output->hidden1",
        "output->hidden2",
        "output->hidden3",
    }
    x, y = batch()
    sig = rule.step(deep_circuit, x, y, MSE)
    e = sig.delta["output"]
    h1 = deep_circuit.pathways["output->hidden1"](e)
    s = deep_circuit.sweep(x)
    fp = 1 - s.r["hidden1"] ** 2
    assert torch.allclose(sig.delta["hidden1"], h1 * fp)


def test_sign_symmetry_with_magnitudes_equal_to_w_equals_bp(deep_circuit):
    x, y = batch()
    rule = bp.rules.get("sign-symmetry").attach(deep_circuit)
    for fb in deep_circuit.feedback_pathways():
        fb.weight.data = deep_circuit.pathways[fb.mirrors].weight.data.t().abs().clone()
    ref, _ = bp_grads(deep_circuit, x, y)
    rule.step(deep_circuit, x, y, MSE)
    assert_same(grads(deep_circuit), ref)


def test_sign_symmetry_follows_the_current_signs_with_fixed_magnitudes(deep_circuit):
    bp.rules.get("sign-symmetry").attach(deep_circuit)
    fb = deep_circuit.pathways["output->hidden3"]
    w = deep_circuit.pathways["hidden3->output"].weight
    b1 = fb.effective_weight().clone()
    assert torch.equal(torch.sign(b1), torch.sign(w.t()))
    assert torch.equal(fb.effective_weight(), b1)  # no redraw, no flip between calls
    with torch.no_grad():
        w.neg_()
    b2 = fb.effective_weight()
    assert torch.equal(b2, -b1)  # signs follow W, magnitudes stay


def test_shallow_changes_only_the_last_pathway(deep_circuit):
    x, y = batch()
    before = {n: p.clone() for n, p in deep_circuit.named_parameters()}
    rule = bp.rules.get("shallow").attach(deep_circuit)
    opt = torch.optim.SGD(deep_circuit.plastic_parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        rule.step(deep_circuit, x, y, MSE)
        opt.step()
    changed = {n for n, p in deep_circuit.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"pathways.hidden3->output.weight", "pathways.hidden3->output.bias"}


def test_shallow_last_layer_update_equals_bp_last_layer(deep_circuit):
    x, y = batch()
    ref, _ = bp_grads(deep_circuit, x, y)
    bp.rules.get("shallow").attach(deep_circuit).step(deep_circuit, x, y, MSE)
    g = grads(deep_circuit)
    assert torch.allclose(
        g["pathways.hidden3->output.weight"], ref["pathways.hidden3->output.weight"]
    )


@pytest.mark.parametrize("output", ["scalar", "vector"])
def test_node_perturbation_averages_to_bp_as_sigma_goes_to_zero(output):
    c = bp.Circuit.layered([6, 5, 3], activation="tanh", init=bp.init.uniform(0.5), seed=2).double()
    x, y = batch(n=1)
    ref, ref_delta = bp_grads(c, x, y)
    rule = bp.rules.get("node-perturbation", sigma=1e-3, output=output).attach(c)
    names = ["pathways.input->hidden.weight", "pathways.hidden->output.weight"]
    acc = {k: torch.zeros_like(ref[k]) for k in names}
    n = 4000
    for _ in range(n):
        rule.step(c, x, y, MSE)
        for k in names:
            acc[k] += c.get_parameter(k).grad
    for k in names:
        cos = torch.nn.functional.cosine_similarity((acc[k] / n).view(-1), ref[k].view(-1), dim=0)
        assert cos > 0.95, (k, cos)
    single = c.pathways["input->hidden"].weight.grad.view(-1)
    cos1 = torch.nn.functional.cosine_similarity(single, ref[names[0]].view(-1), dim=0)
    assert cos1 < 0.95  # one perturbation is a noisy estimate; the average is not
    out_single = c.pathways["hidden->output"].weight.grad
    if output == "vector":  # the output learns from its own error, exactly bp's
        assert torch.allclose(out_single, ref[names[1]])
    else:  # the output, too, learns only from the scalar reward: one sample is noisy
        assert not torch.allclose(out_single, ref[names[1]], rtol=0.1)


def test_unknown_rule_lists_registered_rules():
    with pytest.raises(ValueError, match=r"unknown rule 'fb'; registered rules: bp, fa"):
        bp.rules.get("fb")


def test_unknown_rule_hyperparameter_is_named():
    with pytest.raises(TypeError, match="rule 'fa'.*sigma"):
        bp.rules.get("fa", sigma=1.0)


def test_registry_lists_every_foundation_rule_with_a_description():
    d = bp.rules.describe()
    for name in ["bp", "fa", "dfa", "sign-symmetry", "shallow", "node-perturbation"]:
        assert name in d and d[name]


def test_a_rule_cannot_be_attached_to_two_circuits():
    rule = bp.rules.get("fa").attach(bp.Circuit.layered([3, 2, 2]))
    with pytest.raises(RuntimeError, match="already attached"):
        rule.attach(bp.Circuit.layered([3, 2, 2]))
