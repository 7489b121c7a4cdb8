"""Locality: a rule's update must not read what its equations do not read."""

import torch
from conftest import batch

import bioprop as bp

MSE = bp.losses.get("mse")


def hidden_grad_after_altering_w_above(rule_name, alter):
    c = bp.Circuit.layered([6, 5, 4, 3], activation="tanh", init=bp.init.uniform(0.5), seed=4)
    c = c.double()
    rule = bp.rules.get(rule_name).attach(c)
    x, y = batch()
    state = rule.forward(c, x)
    if alter:
        # after the forward pass, replace every forward weight above the first layer
        for name in ("hidden1->hidden2", "hidden2->output"):
            c.pathways[name].weight.data.fill_(float("nan"))  # in place: autograd would see it
    rule.teach(c, state, y, MSE)
    return c.pathways["input->hidden1"].weight.grad.clone()


def test_fa_hidden_update_never_reads_forward_weights_above():
    clean = hidden_grad_after_altering_w_above("fa", alter=False)
    altered = hidden_grad_after_altering_w_above("fa", alter=True)
    assert torch.isfinite(altered).all()
    assert torch.equal(clean, altered)


def test_dfa_hidden_update_never_reads_forward_weights_above():
    clean = hidden_grad_after_altering_w_above("dfa", alter=False)
    altered = hidden_grad_after_altering_w_above("dfa", alter=True)
    assert torch.equal(clean, altered)


def test_the_locality_probe_catches_weight_transport_in_bp():
    # the same probe on backprop sees the altered weights: the test above can fail
    altered = hidden_grad_after_altering_w_above("bp", alter=True)
    assert not torch.isfinite(altered).all()


def test_node_perturbation_hidden_update_reads_only_a_scalar_loss_change():
    c = bp.Circuit.layered([6, 5, 3], activation="tanh", init=bp.init.uniform(0.5), seed=4).double()
    rule = bp.rules.get("node-perturbation", sigma=1e-2).attach(c)
    x, y = batch()
    state = rule.forward(c, x)
    gen_state = rule.generator.get_state()
    sig = rule.teach(c, state, y, MSE)
    # δ̂_hidden is (Δℓ/σ²) ξ: replay the noise and check that it is a per-sample scalar times ξ
    rule.generator.set_state(gen_state)
    xi = torch.randn(state.u["hidden"].shape, generator=rule.generator).double() * 1e-2
    ratio = sig.delta["hidden"] / xi
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio))
