"""Plastic circuits: α = 0 is the non-plastic circuit, traces restart every episode and
never mix samples, a hand-set α and η recall a pattern untrained, bad options are refused."""

from __future__ import annotations

import pytest
import torch

import bioprop as bp
from bioprop.plasticity import (
    PatternMemorisation,
    PlasticFeedforward,
    PlasticRNN,
    episode_bptt,
    episode_error,
)
from bioprop.recurrent import RecurrentCircuit


def _episode(n_bits=6, batch=2, seed=0, **kw):
    opts = dict(
        n_patterns=2, presentations=1, present_steps=2, blank_steps=1, test_steps=2, gain=1.0
    )
    opts.update(kw)
    task = PatternMemorisation(n_bits=n_bits, **opts)
    return task.sample(1, batch, torch.Generator().manual_seed(seed)).to(torch.float64)


def _grads(circuit, batch):
    ref = episode_bptt(circuit, batch)[0]
    return ref.grads, ref.loss


@pytest.mark.parametrize("shape", [dict(), dict(input="dense", output="readout", bias=True)])
def test_alpha_zero_gives_exactly_the_non_plastic_circuits_outputs_and_gradients(shape):
    batch = _episode()
    plastic = PlasticRNN(
        6, 8, 6, alpha_init=0.0, weight_init=bp.init.normal(0.4), seed=2, **shape
    ).double()
    twin = PlasticRNN(
        6,
        8,
        6,
        alpha_init=0.0,
        learn_alpha=False,
        learn_eta=False,
        weight_init=bp.init.normal(0.4),
        seed=2,
        **shape,
    ).double()
    assert plastic.recurrent.active and not twin.recurrent.active  # one computes a trace
    assert len(plastic.initial_state(2)) == 2 and len(twin.initial_state(2)) == 1
    assert torch.equal(plastic(batch.x), twin(batch.x))  # bit for bit
    g, loss = _grads(plastic, batch)
    g0, loss0 = _grads(twin, batch)
    assert torch.equal(loss, loss0)
    for key, value in g0.items():
        assert torch.equal(g[key], value), key
    assert g["hidden->hidden.alpha"].abs().sum() > 0  # α = 0 still learns


def test_a_plastic_rnn_with_alpha_zero_is_the_toolkits_tanh_rnn():
    """Dense input, read-out, bias: the same weights give RecurrentCircuit(cell='rnn')'s
    outputs and BPTT gradients."""
    batch = _episode()
    c = PlasticRNN(
        6, 8, 6, input="dense", output="readout", bias=True, alpha_init=0.0, seed=0
    ).double()
    rnn = RecurrentCircuit(6, 8, 6, cell="rnn", seed=0).double()
    with torch.no_grad():
        rnn.pathways["input->hidden"].weight.copy_(c.pathways["input->hidden"].weight)
        rnn.pathways["input->hidden"].bias.copy_(
            c.pathways["input->hidden"].bias + c.recurrent.bias + 0.1
        )
        c.recurrent.bias.add_(0.1)  # the RNN has one bias; split it any way
        rnn.pathways["hidden->hidden"].weight.copy_(c.recurrent.weight)
        for part in ("weight", "bias"):
            getattr(rnn.pathways["hidden->output"], part).copy_(
                getattr(c.pathways["hidden->output"], part)
            )
    assert torch.allclose(c(batch.x), rnn(batch.x), atol=1e-13)
    g, _ = _grads(c, batch)
    g_rnn, _ = _grads(rnn, batch)
    for key in ("hidden->hidden.weight", "input->hidden.weight", "hidden->output.weight"):
        assert torch.allclose(g[key], g_rnn[key], atol=1e-12), key


def test_alpha_zero_in_a_plastic_output_layer_is_the_plain_feedforward_layer():
    batch = _episode()
    c = PlasticFeedforward(6, 5, 6, alpha_init=0.0, drive="add", seed=1).double()
    out = c(batch.x)
    with torch.no_grad():
        h = torch.tanh(c.pathways["input->hidden"](batch.x.reshape(-1, 6)))
        want = torch.tanh(c.pathways["hidden->output"](h) + batch.x.reshape(-1, 6))
    assert torch.allclose(out, want.reshape(out.shape), atol=1e-14)


def test_traces_start_at_zero_in_every_episode_and_episodes_do_not_carry_over():
    batch = _episode(batch=1)
    c = PlasticRNN(6, 6, 6, alpha_init=0.5, eta=0.5, seed=0).double()
    first = []
    c.unroll(c.initial_state(1), batch.x, on_step=lambda s: first.append(s) if s.t == 0 else None)
    assert torch.equal(first[0].hebb["hidden->hidden"], torch.zeros(1, 6, 6, dtype=torch.float64))
    other = _episode(batch=1, seed=5)
    alone = c(batch.x)
    c(other.x)  # another episode in between changes nothing
    assert torch.equal(c(batch.x), alone)
    rule = bp.rules.get("dp-bptt")
    losses = [float(rule.step(c, batch).loss) for _ in range(2)]
    assert losses[0] == losses[1]  # two steps on one batch, no trace carried between them


@pytest.mark.parametrize(
    "make",
    [
        lambda: PlasticRNN(6, 7, 6, alpha_init=0.5, eta=0.3, seed=0),
        lambda: PlasticFeedforward(6, 5, 6, alpha_init=0.5, eta=0.3, drive="add", seed=0),
    ],
)
def test_traces_never_leak_across_the_samples_of_a_batch(make):
    batch = _episode(batch=3)
    c = make().double()
    together = c(batch.x)
    for b in range(3):
        alone = c(batch.x[:, b : b + 1])
        assert torch.allclose(together[:, b : b + 1], alone, atol=1e-14)
    final = c.unroll(c.initial_state(3), batch.x)[0]
    traces = c.traces(final)
    hebb = next(iter(traces.values()))
    assert not torch.allclose(hebb[0], hebb[1])  # each sample has its own trace


def test_a_hand_set_alpha_and_eta_recall_a_pattern_with_no_training():
    """One 200-bit pattern, shown for 6 steps, then half of it zeroed: with w = 0, α = 1 and
    η = 0.5 the trace stores p pᵀ and (α ⊙ Hebb) h completes the zeroed bits."""
    task = PatternMemorisation(n_bits=200, n_patterns=1, presentations=1)
    batch = task.sample(1, 4, torch.Generator().manual_seed(3))
    c = PlasticRNN(200, 200, 200, weight_init=bp.init.zeros(), alpha_init=1.0, eta=0.5, seed=0)
    with torch.no_grad():
        out = c(batch.x)
    assert batch.probe.sum() == 4 * 100
    assert episode_error(out, batch) == 0.0
    untrained = PlasticRNN(200, 200, 200, seed=0)  # the paper's random start: near chance
    with torch.no_grad():
        assert episode_error(untrained(batch.x), batch) > 0.3


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(n_in=1000, n_hidden=500, n_out=500), "patterns longer than the population"),
        (dict(n_in=5, n_hidden=5, n_out=8), "8 outputs cannot be read from 5 units"),
        (dict(n_in=5, n_hidden=5, n_out=5, drive="clamp", input="dense"), "needs input='one-to"),
        (dict(n_in=5, n_hidden=5, n_out=5, input="sparse"), "input must be one of"),
        (dict(n_in=0, n_hidden=5, n_out=5), "n_in must be a positive integer"),
        (dict(n_in=5, n_hidden=5, n_out=5, alpha="diagonal"), "alpha must be one of"),
    ],
)
def test_bad_circuit_options_are_refused_with_what_to_do(kwargs, words):
    with pytest.raises(ValueError, match=words):
        PlasticRNN(**kwargs)


def test_rules_that_cut_the_state_at_window_boundaries_refuse_a_plastic_rnn():
    c = PlasticRNN(4, 4, 4)
    with pytest.raises(bp.rules.UnsupportedCircuitError, match="RecurrentCircuit"):
        bp.rules.get("bptt", kind="recurrent", T=3).attach(c)
    with pytest.raises(TypeError, match="Hebbian traces.*'dp-bptt' or 'dp-fa'"):
        c.flat(c.initial_state(1))
    with pytest.raises(bp.rules.UnsupportedCircuitError, match="Hebbian pathways.*'dp-bptt'"):
        bp.rules.get("dp-fa").attach(RecurrentCircuit(4, 4, 4))
    with pytest.raises(ValueError, match=r"inputs must have shape \(time, batch, 4\)"):
        c(torch.zeros(3, 1, 5))
