"""The Hebbian trace: both update forms against hand-computed closed forms, η's checks, and
the forward eligibility ∂Hebb/∂η against autograd."""

from __future__ import annotations

import pytest
import torch
from conftest import short_pattern_episode

from bioprop.plasticity import PlasticRNN
from bioprop.plasticity.pathway import HebbianPathway
from bioprop.plasticity.trace import check_eta, check_form, eligibility, update


def _rates(n_steps=4, n_post=3, n_pre=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    pre = torch.randn(n_steps, 1, n_pre, generator=g, dtype=torch.float64)
    post = torch.randn(n_steps, 1, n_post, generator=g, dtype=torch.float64)
    return pre, post


def test_decay_form_equals_its_closed_form_sum_of_discounted_outer_products():
    eta = torch.tensor(0.3, dtype=torch.float64)
    pre, post = _rates()
    h = torch.zeros(1, 3, 2, dtype=torch.float64)
    for t in range(4):
        h = update(h, pre[t], post[t], eta, "decay")
    # Hebb_T = Σ_t η (1 − η)^(T−1−t) y_t x_tᵀ
    closed = sum(0.3 * 0.7 ** (3 - t) * torch.outer(post[t, 0], pre[t, 0]) for t in range(4))
    assert torch.allclose(h[0], closed, atol=1e-14)


def test_oja_form_equals_the_rule_computed_synapse_by_synapse_in_plain_floats():
    eta = 0.2
    pre, post = _rates()
    h = torch.zeros(1, 3, 2, dtype=torch.float64)
    hand = [[0.0, 0.0] for _ in range(3)]
    for t in range(4):
        h = update(h, pre[t], post[t], torch.tensor(eta, dtype=torch.float64), "oja")
        for i in range(3):
            for j in range(2):
                y, x = float(post[t, 0, i]), float(pre[t, 0, j])
                hand[i][j] = hand[i][j] + eta * y * (x - y * hand[i][j])  # Oja
    assert torch.allclose(h[0], torch.tensor(hand, dtype=torch.float64), atol=1e-14)


@pytest.mark.parametrize("form", ["decay", "oja"])
def test_the_trace_of_a_short_episode_equals_the_rule_applied_to_the_recorded_rates(form):
    """Run a PlasticRNN through a short episode; replay the rule by hand on the rates each
    step recorded (pre h_{t−1}, post h_t): the circuit's final trace is that."""
    batch = short_pattern_episode(n_bits=3, n_patterns=1, test_steps=1)
    c = PlasticRNN(3, 3, 3, eta=0.25, form=form, alpha_init=0.5, seed=1).double()
    seen = []
    final, _, _ = c.unroll(c.initial_state(1), batch.x, on_step=seen.append)
    hand = [[0.0] * 3 for _ in range(3)]
    for s in seen:
        x, y = s.pre["hidden->hidden"][0].tolist(), s.r["hidden"][0].tolist()
        for i in range(3):
            for j in range(3):
                if form == "decay":
                    hand[i][j] = 0.75 * hand[i][j] + 0.25 * y[i] * x[j]
                else:
                    hand[i][j] = hand[i][j] + 0.25 * y[i] * (x[j] - y[i] * hand[i][j])
    assert torch.allclose(final[1][0], torch.tensor(hand, dtype=torch.float64), atol=1e-14)
    assert not torch.equal(final[1], torch.zeros_like(final[1]))


@pytest.mark.parametrize("form", ["decay", "oja"])
def test_the_eligibility_is_the_derivative_of_the_trace_with_respect_to_eta(form):
    pre, post = _rates(n_steps=5)
    eta = torch.tensor(0.15, dtype=torch.float64, requires_grad=True)
    h = torch.zeros(1, 3, 2, dtype=torch.float64)
    e = torch.zeros_like(h)
    for t in range(5):
        e = eligibility(e, h.detach(), pre[t], post[t], eta.detach(), form)
        h = update(h, pre[t], post[t], eta, form)
    want = torch.stack(
        [
            torch.autograd.grad(h[0, i, j], eta, retain_graph=True)[0]
            for i in range(3)
            for j in range(2)
        ]
    ).reshape(3, 2)
    assert torch.allclose(e[0], want, atol=1e-13)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "fast"])
def test_eta_outside_zero_one_is_refused_with_what_it_must_be(bad):
    with pytest.raises(ValueError, match=r"η \(eta\) must be .*\[0, 1\]"):
        check_eta(bad)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        PlasticRNN(4, 4, 4, eta=bad)


def test_an_unknown_form_and_an_alpha_of_the_wrong_shape_are_refused():
    with pytest.raises(ValueError, match="unknown Hebbian trace form 'bcm'.*'decay'.*'oja'"):
        check_form("bcm")
    with pytest.raises(ValueError, match=r"alpha must be a number .* shape \(3, 2\)"):
        HebbianPathway("a", "b", torch.zeros(3, 2), alpha=torch.zeros(2, 3))


def test_bounds_are_allowed_and_eta_can_be_shared_between_pathways():
    assert check_eta(0) == 0.0 and check_eta(1) == 1.0
    shared = torch.nn.Parameter(torch.tensor(0.05))
    a = HebbianPathway("a", "b", torch.zeros(3, 2), alpha=torch.zeros(()), eta=shared)
    b = HebbianPathway("b", "c", torch.zeros(2, 3), alpha=torch.zeros(()), eta=shared)
    assert a.eta is b.eta is shared
