"""Copy / repeat-copy tasks and the length curriculum."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import gen

import bioprop as bp
from bioprop.recurrent import (
    CopyTask,
    Curriculum,
    SequenceData,
    bits_per_character,
    get_task,
    sequence_loss,
)
from bioprop.recurrent.tasks import BITS, RepeatCopyTask


def test_copy_shapes_delimiter_and_targets():
    b = CopyTask().sample(5, 7, gen())
    assert b.x.shape == (11, 7, BITS + 1) and b.y.shape == (11, 7, BITS)
    assert b.mask.tolist() == [0.0] * 6 + [1.0] * 5
    # the delimiter channel is on at t = N only, and the data bits are off there and after
    assert b.x[:, :, BITS].sum(1).tolist() == [0.0] * 5 + [7.0] + [0.0] * 5
    assert b.x[5:, :, :BITS].abs().sum() == 0
    torch.testing.assert_close(b.y[6:], b.x[:5, :, :BITS])
    assert b.y[:6].abs().sum() == 0
    assert set(b.x[:5, :, :BITS].unique().tolist()) == {0.0, 1.0}


def test_repeat_copy_encodes_R_and_ends_with_the_marker():
    task = RepeatCopyTask(r_max=4)
    b = task.sample(3, 5, gen(), repeats=2)
    n, r = 3, 2
    assert b.length == n + 1 + r * n + 1 and b.repeats == 2
    assert b.x.shape == (b.length, 5, BITS + 2) and b.y.shape == (b.length, 5, BITS + 1)
    assert torch.all(b.x[n, :, BITS] == 1) and torch.all(b.x[n, :, BITS + 1] == r / 4)
    assert b.x[:n, :, BITS:].abs().sum() == 0 and b.x[n + 1 :].abs().sum() == 0
    chars = b.x[:n, :, :BITS]
    torch.testing.assert_close(b.y[n + 1 : n + 1 + n, :, :BITS], chars)
    torch.testing.assert_close(b.y[n + 1 + n : n + 1 + 2 * n, :, :BITS], chars)
    # the end marker: on at the last step only, with no data bits there
    assert b.y[:, :, BITS].sum(1).tolist() == [0.0] * (b.length - 1) + [5.0]
    assert b.y[-1, :, :BITS].abs().sum() == 0
    assert b.mask.tolist() == [0.0] * (n + 1) + [1.0] * (r * n + 1)


def test_repeat_counts_are_drawn_from_one_to_r_max():
    task = RepeatCopyTask(r_max=3)
    g = gen(4)
    seen = {task.sample(2, 1, g).repeats for _ in range(60)}
    assert seen == {1, 2, 3}


@pytest.mark.parametrize("name", ["copy", "repeat-copy"])
def test_tasks_are_reproducible_from_the_seed(name):
    task = get_task(name)
    a, b, c = task.sample(4, 3, gen(1)), task.sample(4, 3, gen(1)), task.sample(4, 3, gen(2))
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x[:4], c.x[:4])


def test_bits_per_character_is_8_for_chance_and_0_for_a_perfect_guess():
    b = CopyTask().sample(4, 16, gen())
    assert bits_per_character(torch.zeros_like(b.y), b.y, b.mask) == pytest.approx(8.0)
    perfect = (2 * b.y - 1) * 50.0
    assert bits_per_character(perfect, b.y, b.mask) < 1e-12
    # the loss counts only masked steps: garbage elsewhere changes nothing
    garbage = perfect.clone()
    garbage[: b.n + 1] = 123.0
    assert bits_per_character(garbage, b.y, b.mask) < 1e-12
    assert sequence_loss(garbage, b.y, b.mask) < 1e-12
    expected = 8 * math.log(2) * 4  # chance: ln 2 per bit, 8 bits, N = 4 masked steps
    assert float(sequence_loss(torch.zeros_like(b.y), b.y, b.mask)) == pytest.approx(expected)


def test_curriculum_grows_N_when_the_recent_error_is_below_threshold():
    cur = Curriculum(n_start=1, threshold=0.15, window=3)
    assert not cur.update(0.1) and not cur.update(0.1)  # window not full yet
    assert cur.n == 1 and cur.max_solved == 0
    assert cur.update(0.1)  # mean 0.1 < 0.15
    assert cur.n == 2 and cur.max_solved == 1
    for e in (0.1, 0.1, 0.3):  # mean 0.167: not yet
        assert not cur.update(e)
    assert cur.n == 2
    assert not cur.update(0.1)  # the last three: 0.1, 0.3, 0.1 → 0.167
    assert not cur.update(0.05)  # 0.3, 0.1, 0.05 → 0.15, not below 0.15
    assert cur.update(0.01)  # 0.1, 0.05, 0.01 → 0.053
    assert cur.n == 3 and cur.max_solved == 2
    assert [n for n, _ in cur.history] == [1, 1, 1, 2, 2, 2, 2, 2, 2]


def test_curriculum_stops_at_n_max_but_keeps_counting_solved():
    cur = Curriculum(n_start=4, window=1, n_max=4)
    assert cur.update(0.0)
    assert cur.n == 4 and cur.max_solved == 4


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: CopyTask().sample(0, 4, gen()), "N must be a positive integer"),
        (lambda: CopyTask().sample(3, 0, gen()), "batch size must be a positive integer"),
        (lambda: RepeatCopyTask(r_max=0), "r_max must be a positive integer"),
        (lambda: RepeatCopyTask(r_max=2).sample(2, 2, gen(), repeats=3), "R must be in 1..2"),
        (lambda: get_task("addition"), "unknown sequence task 'addition'"),
        (lambda: Curriculum(n_start=0), "n_start must be a positive integer"),
        (lambda: Curriculum(threshold=0.0), "threshold must be > 0"),
        (lambda: Curriculum(window=0), "window must be a positive integer"),
    ],
)
def test_bad_task_and_curriculum_settings_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_sequence_data_hands_every_run_a_fresh_curriculum():
    data = SequenceData(CopyTask(), Curriculum(n_start=2, window=1))
    assert (data.name, data.n_inputs, data.n_outputs) == ("copy", BITS + 1, BITS)
    cur = data.curriculum.fresh()
    cur.update(0.0)
    assert cur.n == 3 and data.curriculum.n == 2
    again = data.curriculum.fresh()
    assert again.n == 2 and again.history == [] and again.settings()["window"] == 1
    with pytest.raises(TypeError, match="must be a sequence task"):
        SequenceData("copy")


def test_compare_runs_the_recurrent_rules_on_the_copy_task(tmp_path):
    ds = bp.compare(
        "copy", rules=["bptt", "dni"], seeds=1, quick=True, out=tmp_path, progress=False
    )
    assert list(ds["kind"].values) == ["recurrent", "recurrent"]
    assert np.isfinite(ds.final_loss.values).all()  # bits per character
    assert np.isfinite(ds.angle_to_bp.values).all()
    assert set(bp.tasks.get("copy").kinds()) == {"recurrent"}
