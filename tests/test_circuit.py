"""Building circuits: structure, sweeps and build-time errors."""

import pytest
import torch

import bioprop as bp


def test_layered_circuit_names_populations_and_pathways():
    c = bp.Circuit.layered([4, 3, 2], activation="logistic")
    assert c.order() == ["input", "hidden", "output"]
    assert list(c.pathways) == ["input->hidden", "hidden->output"]
    assert c.pathways["input->hidden"].weight.shape == (3, 4)  # post x pre
    c2 = bp.Circuit.layered([4, 3, 3, 2])
    assert c2.hidden() == ["hidden1", "hidden2"]


def test_same_seed_gives_same_initial_weights():
    a = bp.Circuit.layered([5, 4, 3], seed=7)
    b = bp.Circuit.layered([5, 4, 3], seed=7)
    c = bp.Circuit.layered([5, 4, 3], seed=8)
    wa, wb, wc = (x.pathways["input->hidden"].weight for x in (a, b, c))
    assert torch.equal(wa, wb)
    assert not torch.equal(wa, wc)


def test_sweep_computes_u_equals_w_r_plus_b():
    c = bp.Circuit.layered([3, 2], activation="tanh", seed=0)
    x = torch.randn(4, 3)
    s = c.sweep(x)
    pw = c.pathways["input->output"]
    assert torch.allclose(s.u["output"], x @ pw.weight.t() + pw.bias)
    assert torch.allclose(s.r["output"], torch.tanh(s.u["output"]))


def test_circuit_is_an_nn_module_with_plastic_parameters():
    c = bp.Circuit.layered([3, 4, 2])
    assert isinstance(c, torch.nn.Module)
    assert len(c.plastic_parameters()) == 4
    c.pathways["input->hidden"].plastic = False
    assert len(c.plastic_parameters()) == 2


def test_explicit_circuit_with_add_population_and_connect():
    c = bp.Circuit(seed=1)
    c.add_population("retina", 5)
    c.add_population("cortex", 4, activation="relu")
    c.add_population("motor", 2, activation="linear")
    c.connect("retina", "cortex", init=bp.init.uniform(0.1), bias=True)
    c.connect("cortex", "motor", weight=torch.ones(2, 4))
    assert c.input == "retina" and c.output == "motor"
    assert c(torch.ones(3, 5)).shape == (3, 2)


def test_unknown_population_is_a_clear_error():
    c = bp.Circuit()
    c.add_population("a", 3)
    with pytest.raises(ValueError, match=r"unknown population 'b'.*the circuit has a"):
        c.connect("a", "b")


def test_wrong_weight_shape_names_the_expected_shape():
    c = bp.Circuit()
    c.add_population("a", 3)
    c.add_population("b", 2)
    with pytest.raises(ValueError, match=r"\(2, 3\) \(post x pre\), got \(3, 2\)"):
        c.connect("a", "b", weight=torch.zeros(3, 2))


def test_feedforward_cycle_is_refused_for_a_sweep():
    c = bp.Circuit()
    for n in "abc":
        c.add_population(n, 2)
    c.connect("a", "b")
    c.connect("b", "c")
    with pytest.raises(ValueError, match=r"closes a cycle \(c -> a -> b -> c\).*role='lateral'"):
        c.connect("c", "a")
    # the same connection as a lateral pathway is fine
    c.connect("c", "a", role="lateral")


def test_duplicate_pathway_and_population_are_refused():
    c = bp.Circuit.layered([3, 2])
    with pytest.raises(ValueError, match="already exists"):
        c.connect("input", "output")
    with pytest.raises(ValueError, match="already exists"):
        c.add_population("input", 3)


def test_bad_population_parameters_are_refused():
    with pytest.raises(ValueError, match="size must be a positive integer"):
        bp.Population("x", 0)
    with pytest.raises(ValueError, match="unknown activation 'sigmoidal'"):
        bp.Population("x", 3, activation="sigmoidal")
    with pytest.raises(ValueError, match="dynamics must be one of"):
        bp.Population("x", 3, dynamics="spiky")


def test_wrong_input_width_is_a_clear_error():
    c = bp.Circuit.layered([3, 2])
    with pytest.raises(ValueError, match=r"input must have shape \(batch, 3\)"):
        c(torch.zeros(4, 5))


def test_activations_match_their_derivatives():
    u = torch.linspace(-2, 2, 41, dtype=torch.float64).requires_grad_()
    for name in bp.activations.names():
        act = bp.activations.get(name)
        r = act(u)
        (g,) = torch.autograd.grad(r.sum(), u)
        fp = act.fprime(u.detach(), r.detach())
        keep = (u.detach().abs() > 1e-3) & ((u.detach() - 1).abs() > 1e-3)  # kinks
        assert torch.allclose(g[keep], fp[keep]), name
