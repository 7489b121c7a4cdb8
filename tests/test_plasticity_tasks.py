"""Episode tasks: the paper's episode structure, seeding, degradation, and their errors."""

from __future__ import annotations

import pytest
import torch
from conftest import gen

import bioprop as bp
from bioprop.plasticity import (
    EpisodeBatch,
    ImageCompletion,
    PatternMemorisation,
    episode_data,
    episode_error,
    prepare_images,
)


def test_pattern_memorisation_lays_out_miconis_default_episode():
    task = PatternMemorisation()
    b = task.sample(1, 3, gen())
    assert isinstance(b, EpisodeBatch) and task.steps == 106 == b.length
    assert b.x.shape == (106, 3, 1000) and b.y.shape == (106, 3, 1000)
    assert b.mask.tolist() == [0.0] * 105 + [1.0]  # the loss at the last step only
    x = b.x / 20.0
    for n in range(3):
        shown = [x[t, n] for t in range(100) if x[t, n].abs().sum() > 0]
        assert len(shown) == 2 * 5 * 6  # twice, 6 steps each
        for c in range(2):  # each cycle shows all 5 patterns once, 6 steps then 4 blank
            cycle = x[c * 50 : (c + 1) * 50, n]
            firsts = [cycle[i * 10] for i in range(5)]
            assert all(((cycle[i * 10 : i * 10 + 6] == firsts[i]).all()) for i in range(5))
            assert (cycle.reshape(5, 10, -1)[:, 6:] == 0).all()
            assert sorted(map(tuple, torch.stack(firsts).tolist())) == sorted(
                map(tuple, b.patterns[n].tolist())
            )
        test = x[100:, n]
        assert (test == test[0]).all()
        target = b.y[-1, n]
        assert any(torch.equal(target, p) for p in b.patterns[n])
        zeroed = test[0] == 0
        assert int(zeroed.sum()) == 500 and torch.equal(b.probe[n].bool(), zeroed)
        assert torch.equal(test[0][~zeroed], target[~zeroed])
    assert set(b.patterns.unique().tolist()) == {-1.0, 1.0}


def test_episodes_come_from_the_generator_alone():
    task = PatternMemorisation(n_bits=50)
    a, b = task.sample(1, 2, gen(7)), task.sample(1, 2, gen(7))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, task.sample(1, 2, gen(8)).x)


def test_image_completion_shows_three_images_three_times_then_one_half_erased():
    images = prepare_images(torch.rand(20, 784, generator=gen()), 28, pool=2)
    assert images.shape == (20, 196)
    assert torch.allclose(images.mean(1), torch.zeros(20), atol=1e-6)
    assert torch.allclose(images.abs().amax(1), torch.ones(20))
    task = ImageCompletion(images)
    b = task.sample(1, 8, gen(1))
    assert task.steps == 3 * 3 * 22 + 3 == b.length and b.x.shape[2] == 197
    assert (b.x[:, :, 196] == 1).all()  # the bias unit
    test = b.x[-1, :, :196]
    top = (test[:, :98] == 0).all(1)
    bottom = (test[:, 98:] == 0).all(1)
    assert bool((top ^ bottom).all()) and top.any() and bottom.any()
    assert torch.equal(b.probe.bool(), test == 0)
    assert b.metric == "squared"


def test_the_metric_counts_wrong_signs_on_the_zeroed_bits_only():
    b = PatternMemorisation(n_bits=10).sample(1, 2, gen())
    out = b.y.clone()
    assert episode_error(out, b) == 0.0
    out[-1] = torch.where(b.probe.bool(), -b.y[-1], b.y[-1])  # every zeroed bit wrong
    assert episode_error(out, b) == 1.0
    out[-1] = torch.where(b.probe.bool(), b.y[-1], -b.y[-1])  # only kept bits wrong
    assert episode_error(out, b) == 0.0


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(present_steps=-1), "presentation length must be a positive integer"),
        (dict(blank_steps=-2), "blank steps between presentations must be a non-negative"),
        (dict(test_steps=0), "test length must be a positive integer"),
        (dict(n_patterns=0), "number of patterns per episode must be a positive"),
        (dict(degrade=1.5), r"degrade must be a fraction in \[0, 1\]"),
        (dict(gain=0), "gain must be > 0"),
    ],
)
def test_bad_episode_options_are_refused(kwargs, words):
    with pytest.raises(ValueError, match=words):
        PatternMemorisation(**kwargs)


def test_a_task_the_circuit_does_not_fit_is_refused_before_training():
    data = episode_data(PatternMemorisation(n_bits=30))
    c = bp.plasticity.PlasticRNN(20, 20, 20)
    with pytest.raises(ValueError, match="30 input and 30 output channels but the circuit"):
        bp.train(c, "dp-bptt", data, steps=1, progress=False)
    with pytest.raises(ValueError, match="images must be square with an even side"):
        ImageCompletion(torch.zeros(3, 15))
    with pytest.raises(TypeError, match="episode task"):
        episode_data(bp.recurrent.CopyTask())


def test_the_tasks_are_in_the_task_registry():
    assert {"pattern-memorisation", "image-completion"} <= set(bp.tasks.names())
    t = bp.tasks.get("pattern-memorisation")
    assert t.kinds() == ["recurrent"] and t.kind_for("dp-fa") == "recurrent"
    c = t.circuit(0, "recurrent")
    assert c.populations["hidden"].size == 1000
