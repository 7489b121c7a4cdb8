"""Character-level language modelling (Jaderberg et al. 2017, Table 1): corpora, the stream
task, the categorical sequence loss, state carried across batches, and DNI on a stream."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import bioprop as bp
from bioprop.core import seeding
from bioprop.data.mnist import MissingDataError
from bioprop.data.text import CharCorpus, corpus, ptb_chars, pydoc_chars
from bioprop.recurrent import RecurrentCircuit, bits_per_character, full_bptt, sequence_loss
from bioprop.recurrent.language import CharLMTask, language_data
from bioprop.recurrent.reference import core_named

TEXT = "the cat sat on the mat. " * 40


def small_task() -> CharLMTask:
    return CharLMTask(CharCorpus("toy", TEXT, "the mat sat on the cat. ", "a cat on the mat. "))


def stream(task, n, batch, count, seed=0):
    gen, out, last = seeding.generator(seed, "data"), [], None
    for _ in range(count):
        last = task.sample(n, batch, gen, after=last)
        out.append(last)
    return out


# -- the loss ----------------------------------------------------------------------------------
def test_class_index_targets_give_the_softmax_cross_entropy_summed_over_steps():
    logits = torch.randn(5, 3, 7, dtype=torch.float64)
    y = torch.randint(0, 7, (5, 3))
    mask = torch.tensor([1.0, 1, 0, 1, 1], dtype=torch.float64)
    expected = (
        sum(float(mask[t]) * F.cross_entropy(logits[t], y[t], reduction="sum") for t in range(5))
        / 3
    )
    assert math.isclose(float(sequence_loss(logits, y, mask)), float(expected), rel_tol=1e-12)
    assert math.isclose(
        bits_per_character(logits, y, mask), float(expected) * 3 / (4 * 3 * math.log(2))
    )


def test_uniform_prediction_costs_log2_of_the_vocabulary_in_bits_per_character():
    y = torch.randint(0, 50, (10, 4))
    bpc = bits_per_character(torch.zeros(10, 4, 50), y, torch.ones(10))
    assert math.isclose(bpc, math.log2(50), rel_tol=1e-6)


# -- corpora -----------------------------------------------------------------------------------
def test_ptb_files_are_read_as_characters_with_underscores_as_spaces(tmp_path):
    for split, line in (("train", "a _ c a t\nt h e _ m a t"), ("valid", "a"), ("test", "b")):
        (tmp_path / f"ptb.char.{split}.txt").write_text(line + "\n")
    c = ptb_chars(tmp_path)
    assert c.train == "a cat\nthe mat\n" and c.valid == "a\n" and c.name == "ptb-char"
    assert corpus("ptb", root=tmp_path).test == "b\n"


def test_missing_ptb_files_name_the_files_the_folder_and_the_offline_corpus(tmp_path):
    with pytest.raises(MissingDataError, match=r"ptb\.char\.train\.txt.*" + str(tmp_path)) as e:
        ptb_chars(tmp_path)
    assert "simple-examples" in str(e.value) and "'pydoc'" in str(e.value)


def test_the_offline_corpus_is_cut_into_contiguous_disjoint_parts():
    c = pydoc_chars()
    assert c.train + c.valid + c.test == pydoc_chars().train + pydoc_chars().valid + c.test
    assert len(c.train) > 300_000 and len(c.valid) > 10_000 and len(c.test) > 10_000
    with pytest.raises(ValueError, match="fractions"):
        pydoc_chars(valid=0.6)
    with pytest.raises(ValueError, match="unknown text corpus 'wiki'"):
        corpus("wiki")


# -- the stream task ---------------------------------------------------------------------------
def test_each_batch_continues_every_stream_where_the_last_one_stopped():
    task = small_task()
    b0, b1, b2 = stream(task, n=5, batch=3, count=3)
    assert not b0.follows and b1.follows and b2.follows and b0.continues
    assert b1.position == b0.position + 5
    assert torch.equal(b0.y[-1], b1.x[0].argmax(dim=1))  # the target of the last step is next
    assert torch.equal(b0.y[:-1], b0.x[1:].argmax(dim=2))  # y_t = c_{t+1}
    assert b0.y.dtype == torch.int64 and b0.x.shape == (5, 3, task.n_in)
    seg = len(task.codes["train"]) // 3
    first = task.codes["train"][torch.arange(3) * seg + b0.position]
    assert torch.equal(b0.x[0].argmax(dim=1), first)  # stream b reads segment b


def test_streams_restart_from_the_segment_start_when_used_up_and_seeds_reproduce():
    task = small_task()
    seg = len(task.codes["train"]) // 2
    batches = stream(task, n=50, batch=2, count=2 * seg // 50 + 2)
    restarts = [b for b in batches[1:] if not b.follows]
    assert restarts and all(b.position == 0 for b in restarts)
    again = stream(task, n=50, batch=2, count=3)
    assert all(torch.equal(a.x, b.x) for a, b in zip(batches, again, strict=False))
    assert stream(task, 50, 2, 1, seed=1)[0].position != batches[0].position or seg < 60


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda t: t.sample(0, 2, torch.Generator()), "unroll length n"),
        (lambda t: t.sample(5, 0, torch.Generator()), "batch size"),
        (lambda t: t.sample(500, 4, torch.Generator()), "fewer than one unroll"),
        (lambda t: t.encode("§"), "'§' is not in the vocabulary"),
        (lambda t: language_data(t, 0), "unroll must be a positive integer"),
        (lambda t: t.evaluate(None, "dev"), "split must be one of"),
    ],
)
def test_bad_stream_requests_are_refused_with_a_clear_message(call, message):
    with pytest.raises(ValueError, match=message):
        call(small_task())


def test_held_out_bpc_of_a_silent_read_out_is_log2_of_the_vocabulary():
    task = small_task()
    c = RecurrentCircuit(task.n_in, 8, task.n_out, seed=0)
    with torch.no_grad():
        c.pathways["hidden->output"].weight.zero_()
        c.pathways["hidden->output"].bias.zero_()
    assert math.isclose(task.evaluate(c, "valid"), math.log2(task.n_in), rel_tol=1e-6)


# -- rules on a stream -------------------------------------------------------------------------
def test_bptt_over_a_whole_batch_that_starts_from_the_carried_state_is_full_bptt_from_it():
    task = small_task()
    c = RecurrentCircuit(task.n_in, 6, task.n_out, seed=0).double()
    b0, b1 = (b.to(torch.float64) for b in stream(task, n=6, batch=2, count=2))
    rule = bp.rules.get("bptt", kind="recurrent", T=6)
    carry = rule.step(c, b0).extra["final_state"]
    b1.state = carry
    ref = full_bptt(c, b1).grads
    rule.step(c, b1)
    got = {n: p.grad for n, p in core_named(c).items()}
    assert max(float((ref[n] - got[n]).abs().max()) for n in ref) < 1e-12
    b1.state = None  # from s = 0 the gradient differs: the carried state is used
    other = full_bptt(c, b1).grads
    assert max(float((ref[n] - other[n]).abs().max()) for n in ref) > 1e-6


def test_dni_fits_its_module_at_the_boundary_the_previous_batch_left_open():
    """One window per batch (T = n): the only boundary is between batches.  Batch 1's M
    gradient is that of ½‖M(s_end of batch 0) − B·∂J_0/∂s_0‖²/B, with J_0 batch 1's loss
    plus its own injected κ·δ̂."""
    task = small_task()
    c = RecurrentCircuit(task.n_in, 6, task.n_out, seed=0).double()
    b0, b1 = (b.to(torch.float64) for b in stream(task, n=4, batch=3, count=2))
    rule = bp.rules.get("dni", kind="recurrent", T=4, scale=0.5)
    rule.attach(c, seeding.generator(0, "feedback"))
    with torch.no_grad():  # a non-zero M, so that δ̂ matters
        for p in rule.module.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    s0 = rule.step(c, b0)
    open_state = c.flat(s0.extra["final_state"]).detach()
    assert torch.equal(rule._open, open_state)
    b1.state = s0.extra["final_state"]
    rule.step(c, b1)
    got = [p.grad.clone() for p in rule.module.parameters()]
    # by hand
    s = c.flat(b1.state).detach().requires_grad_(True)
    end, out, _ = c.unroll(c.unflat(s), b1.x)
    s_end = c.flat(end)
    injected = (0.5 * rule.module.predict(s_end).detach() * s_end).sum() / 3
    j = sequence_loss(out, b1.y, b1.mask) + injected
    (g,) = torch.autograd.grad(j, s)
    for p in rule.module.parameters():
        p.grad = None
    lm = 0.5 * ((rule.module.predict(open_state) - 3 * g) ** 2).sum() / 3
    want = torch.autograd.grad(lm, list(rule.module.parameters()))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_the_scale_multiplies_the_injected_synthetic_gradient():
    task = small_task()
    b = stream(task, n=6, batch=2, count=1)[0].to(torch.float64)
    grads = {}
    for scale, factor in ((0.25, 1.0), (1.0, 0.25)):
        c = RecurrentCircuit(task.n_in, 5, task.n_out, seed=0).double()
        rule = bp.rules.get("dni", kind="recurrent", T=2, scale=scale)
        rule.attach(c)
        rule.synthetic = lambda k, s, f=factor: f * torch.ones_like(s)
        rule.step(c, b)
        grads[scale] = {n: p.grad.clone() for n, p in core_named(c).items()}
    assert all(torch.allclose(grads[0.25][n], grads[1.0][n]) for n in grads[1.0])
    with pytest.raises(ValueError, match=r"scale κ .* must be in \(0, 1\]"):
        bp.rules.get("dni", kind="recurrent", scale=0)


def test_train_carries_the_state_and_scores_only_the_splits_asked_for():
    task = small_task()
    c = RecurrentCircuit(task.n_in, 16, task.n_out, seed=0)
    before = task.evaluate(c, "valid")
    run = bp.train(
        c,
        bp.rules.get("bptt", kind="recurrent", T=5),
        language_data(task, 10),
        steps=60,
        batch_size=4,
        optimizer=("adam", {"lr": 1e-2}),
        evaluate=("valid",),
        progress=False,
    )
    assert "test_loss" in run.history and "valid_loss" in run.history
    assert run.history["valid_loss"][0] < before - 0.5  # it learned the toy text's letters
    with pytest.raises(ValueError, match="evaluate= is a tuple of held-out splits"):
        bp.train(c, "bptt", language_data(task, 10), steps=1, evaluate=("dev",), progress=False)
