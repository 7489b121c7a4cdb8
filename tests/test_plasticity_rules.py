"""dp-bptt is BPTT through the episode (finite differences), dp-fa equals it where no rate
before the loss step depends on the parameters, and both refuse what they cannot train."""

from __future__ import annotations

import pytest
import torch
from conftest import short_pattern_episode

import bioprop as bp
from bioprop.plasticity import (
    ImageCompletion,
    PlasticFeedforward,
    PlasticRNN,
    episode_bptt,
    episode_loss,
)
from bioprop.plasticity.reference import trained_parameters


def _episode(n_bits=4, batch=2, seed=0):
    return short_pattern_episode(n_bits, n_patterns=2, test_steps=2, batch=batch, seed=seed)


def _finite_difference(circuit, batch, p, index, eps=1e-6):
    with torch.no_grad():
        old = p[index].item()
        p[index] = old + eps
        up = float(episode_loss(circuit(batch.x), batch))
        p[index] = old - eps
        down = float(episode_loss(circuit(batch.x), batch))
        p[index] = old
    return (up - down) / (2 * eps)


CIRCUITS = {
    "rnn-decay": lambda: PlasticRNN(4, 5, 4, bias=True, form="decay", eta=0.3),
    "rnn-oja": lambda: PlasticRNN(4, 5, 4, bias=True, form="oja", eta=0.3),
    "rnn-dense-readout-shared-alpha": lambda: PlasticRNN(
        4, 5, 4, input="dense", output="readout", alpha="shared", eta=0.2
    ),
    "feedforward-oja": lambda: PlasticFeedforward(4, 5, 4, drive="add", form="oja", eta=0.4),
}


@pytest.mark.parametrize("name", list(CIRCUITS))
def test_dp_bptt_gradients_of_w_alpha_and_eta_match_finite_differences(name):
    batch = _episode()
    torch.manual_seed(0)
    c = CIRCUITS[name]().double()
    with torch.no_grad():  # weights large enough that the trace matters
        for pw in c.hebbian_pathways():
            pw.weight.normal_(0, 0.5)
            pw.alpha.normal_(0, 0.8)
    rule = bp.rules.get("dp-bptt")
    rule.step(c, batch)
    checked = 0
    for key, p in trained_parameters(c).items():
        g = torch.Generator().manual_seed(1)
        picks = (
            [()]
            if p.dim() == 0
            else [
                tuple(int(torch.randint(0, s, (1,), generator=g)) for s in p.shape)
                for _ in range(3)
            ]
        )
        for index in picks:
            fd = _finite_difference(c, batch, p, index)
            assert p.grad[index].item() == pytest.approx(fd, rel=1e-6, abs=1e-9), (key, index)
            checked += 1
    assert {"alpha", "eta"} <= {k.split(".")[1] for k in trained_parameters(c)}
    assert checked >= 7


def _clamped_episode(batch=2):
    """Every unit clamped at every step before the loss step (no blanks, non-zero pixels):
    nothing the loss step reads depends on the parameters except through that step."""
    g = torch.Generator().manual_seed(4)
    images = torch.rand(10, 16, generator=g, dtype=torch.float64) * 1.8 - 0.9 + 0.05
    task = ImageCompletion(
        images, n_images=2, presentations=1, present_steps=2, blank_steps=0, test_steps=1
    )
    return task.sample(1, batch, torch.Generator().manual_seed(2)).to(torch.float64)


@pytest.mark.parametrize("form", ["decay", "oja"])
def test_dp_fa_equals_bptt_when_every_rate_before_the_loss_step_is_clamped(form):
    batch = _clamped_episode()
    c = PlasticRNN(
        17,
        17,
        16,
        drive="clamp",
        form=form,
        eta=0.3,
        bias=True,
        weight_init=bp.init.normal(0.3),
        alpha_init=bp.init.normal(0.5),
    ).double()
    ref = episode_bptt(c, batch)[0]
    rule = bp.rules.get("dp-fa")
    rule.step(c, batch)
    for key, p in trained_parameters(c).items():
        assert torch.allclose(p.grad, ref.grads[key], atol=1e-12), key
    assert ref.grads["hidden->hidden.eta"].abs() > 1e-6  # not a vacuous equality


def test_dp_fa_on_a_plastic_output_layer_equals_bptt_with_a_fixed_hidden_layer():
    batch = _clamped_episode()
    c = PlasticFeedforward(
        17,
        6,
        16,
        drive="clamp",
        eta=0.4,
        alpha_init=bp.init.normal(0.5),
        weight_init=bp.init.normal(0.3),
    ).double()
    c.pathways["input->hidden"].plastic = False
    rule = bp.rules.get("dp-fa").attach(c)
    assert not rule.feedback  # nothing upstream is trained: no B
    ref = episode_bptt(c, batch)[0]
    rule.step(c, batch)
    for key, p in trained_parameters(c).items():
        assert torch.allclose(p.grad, ref.grads[key], atol=1e-12), key


def test_dp_fa_teaches_a_trained_hidden_layer_through_fa_feedback_b():
    """α fixed at 0 and B := wᵀ: the hidden layer's update is bp's; with the random B that
    dp-fa installs it is not (the error travels through B, never through w)."""
    batch = _clamped_episode()
    c = PlasticFeedforward(
        17,
        6,
        16,
        drive="clamp",
        alpha_init=0.0,
        learn_alpha=False,
        learn_eta=False,
        weight_init=bp.init.normal(0.3),
    ).double()
    rule = bp.rules.get("dp-fa").attach(c)
    fb = c.pathways["output->hidden"]
    assert fb.role == "feedback" and fb.mirrors == "hidden->output" and not fb.plastic
    ref = episode_bptt(c, batch)[0]
    rule.step(c, batch)
    w1 = c.pathways["input->hidden"].weight
    assert not torch.allclose(w1.grad, ref.grads["input->hidden.weight"], atol=1e-6)
    with torch.no_grad():
        fb.weight.copy_(c.pathways["hidden->output"].weight.t())
    rule.step(c, batch)
    assert torch.allclose(w1.grad, ref.grads["input->hidden.weight"], atol=1e-12)


def test_dp_fa_updates_w_and_alpha_by_bptt_truncated_to_the_loss_step():
    """No backprop through time: dp-fa's ĝ_w, ĝ_α are the gradients of the loss step alone,
    its rates h_{T−1} and trace Hebb(T−1) held fixed — and full BPTT differs from that."""
    batch = _episode(n_bits=5, batch=2)
    c = PlasticRNN(
        5, 5, 5, eta=0.3, bias=True, alpha_init=bp.init.normal(0.5), weight_init=bp.init.normal(0.5)
    ).double()
    bp.rules.get("dp-fa").step(c, batch)
    last = batch.length - 1
    with torch.no_grad():
        state = c.unroll(c.initial_state(2), batch.x[:last])[0]
    with torch.enable_grad():
        out = c.unroll(state, batch.x[last:])[1]
        sub = type(batch)(batch.x[last:], batch.y[last:], batch.mask[last:], 1)
        params = [c.recurrent.weight, c.recurrent.alpha, c.recurrent.bias]
        truncated = torch.autograd.grad(episode_loss(out, sub), params)
    for p, want in zip(params, truncated, strict=True):
        assert torch.allclose(p.grad, want, atol=1e-12)
    full = episode_bptt(c, batch)[0].grads["hidden->hidden.weight"]
    assert not torch.allclose(c.recurrent.weight.grad, full, atol=1e-6)


def test_the_rules_refuse_a_wrong_call_with_what_to_pass():
    c = PlasticRNN(4, 4, 4)
    rule = bp.rules.get("dp-bptt")
    with pytest.raises(TypeError, match="batch of episodes.*EpisodeBatch"):
        rule.step(c, torch.zeros(3, 1, 4))
    with pytest.raises(ValueError, match="pass y=None and loss=None"):
        rule.step(c, _episode().to(torch.float32), torch.zeros(1), "mse")
    with pytest.raises(ValueError, match="hebb_samples must be an integer >= 0"):
        bp.rules.get("dp-fa", hebb_samples=-1)
    with pytest.raises(bp.rules.UnsupportedCircuitError, match="run through episodes"):
        rule.attach(bp.Circuit.layered([3, 4, 2]))


def test_dp_bptt_names_itself_the_familys_reference():
    text = dict((n, d) for n, _, d in bp.rules.entries())
    assert "reference is this rule itself" in text["dp-bptt"]
    assert bp.rules.get("dp-bptt").is_reference and not bp.rules.get("dp-fa").is_reference
    assert bp.rules.kinds_of("dp-bptt") == ["recurrent"] == bp.rules.kinds_of("dp-fa")
