"""`bioprop bench` reports ratios (no timing assertions: speed lives in benchmarks)."""

import json

import pytest
from conftest import train_quietly

from bioprop.experiments import bench
from bioprop.experiments.cli import main


def test_bench_json_prints_each_ratio_with_its_spread_and_the_machine_state(capsys):
    assert (
        main(
            [
                "bench",
                "--json",
                "--quick",
                "--repeats",
                "1",
                "--only",
                "fa_over_handloop,recording_overhead",
            ]
        )
        == 0
    )
    res = json.loads(capsys.readouterr().out)
    keys = ("fa_over_handloop", "recording_overhead")
    assert all(isinstance(res[k], float) and res[k] > 0 for k in keys)
    assert all(res[f"{k}_iqr"] >= 0 and isinstance(res[f"{k}_noisy"], bool) for k in keys)
    assert res["torch_threads"] >= 1 and res["load_average"] >= 0


def test_interleaved_ratio_is_the_median_of_candidate_over_baseline():
    import time

    res = bench.interleaved_ratio(lambda: time.sleep(0.02), lambda: time.sleep(0.01), 3)
    assert 1.3 < res["ratio"] < 3.0


def test_unknown_benchmark_key_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown benchmark.*fa_over_bp_b32"):
        bench.run_bench(only=["fa_over_nothing"])


def test_the_hand_loop_does_the_same_arithmetic_as_the_fa_trainer():
    # same data, same initial weights, B := the fa rule's B: identical weights after an epoch
    import torch

    import bioprop as bp

    data = bench.mnist_shaped(256)
    c = bench.lillicrap_circuit()
    rule = bp.rules.get("fa", feedback_init=bp.init.uniform(0.05))
    rule.attach(c)
    g = torch.Generator().manual_seed(0)
    B = torch.rand(1000, 10, generator=g) * 0.1 - 0.05
    c.pathways["output->hidden"].weight.data.copy_(B)
    run = bench.handloop_fa(data, 32, B=B, keep=True)
    w_hand = run()
    train_quietly(c, rule, data, lr=0.1, epochs=1, batch_size=32, evaluate_every_epoch=False)
    assert torch.allclose(c.pathways["input->hidden"].weight, w_hand["w1"], atol=1e-5)
    assert torch.allclose(c.pathways["hidden->output"].weight, w_hand["w2"], atol=1e-5)


def test_interleaved_ratio_adds_repeats_until_the_spread_settles_and_flags_a_noisy_key():
    import itertools
    import time

    from bioprop.experiments.bench import interleaved_ratio

    steady = interleaved_ratio(lambda: None, lambda: None, repeats=3, max_repeats=3)
    assert steady["repeats"] == 3
    assert steady["ratio_q1"] <= steady["ratio"] <= steady["ratio_q3"]
    # a candidate whose time swings 1 ms / 20 ms never settles: repeats run to the cap and
    # the result says it is noisy instead of reporting a confident number
    swing = itertools.cycle([0.001, 0.02, 0.02, 0.001])
    noisy = interleaved_ratio(
        lambda: time.sleep(next(swing)), lambda: time.sleep(0.005), repeats=3, max_repeats=8
    )
    assert noisy["repeats"] == 8 and noisy["noisy"]
    assert noisy["ratio_q3"] - noisy["ratio_q1"] > 0.05 * noisy["ratio"]


def test_the_bench_table_names_the_machine_state_the_spread_and_noisy_keys():
    from bioprop.experiments.bench import format_bench

    row = {"ratio": 0.9, "ratio_q1": 0.8, "ratio_q3": 1.2, "repeats": 9, "noisy": True}
    res = {"k": {**row, "description": "d", "target": 1.0, "torch_threads": 1, "load_average": 0.5}}
    text = format_bench(res)
    assert "torch threads 1, load average 0.50" in text
    assert "0.800-1.200" in text and "NOISY" in text


def test_the_torch_lstm_baseline_does_the_same_arithmetic_as_the_bptt_rule():
    """With the circuit's weights copied into nn.LSTM, the baseline's truncated-BPTT
    gradient equals the bptt rule's: the ratio compares implementations, not methods."""
    import torch
    from torch import nn

    from bioprop import rules
    from bioprop.experiments.benchmarks import recurrent as rb
    from bioprop.recurrent import CopyTask, RecurrentCircuit, sequence_loss
    from bioprop.recurrent.unroll import windows

    (batch,) = rb._batches(1, "cpu")
    task = CopyTask()
    c = RecurrentCircuit(task.n_in, rb.HIDDEN, task.n_out, seed=0)
    rules.get("bptt", kind="recurrent", T=rb.T).step(c, batch)
    wx, wh, b = c._weights()
    lstm = nn.LSTM(task.n_in, rb.HIDDEN)
    read = nn.Linear(rb.HIDDEN, task.n_out)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(wx)
        lstm.weight_hh_l0.copy_(wh)
        lstm.bias_ih_l0.copy_(b)
        lstm.bias_hh_l0.zero_()
        read.weight.copy_(c.pathways["hidden->output"].weight)
        read.bias.copy_(c.pathways["hidden->output"].bias)
    h = torch.zeros(1, rb.BATCH, rb.HIDDEN)
    cc = torch.zeros_like(h)
    for a, e in windows(batch.length, rb.T):
        out, (h, cc) = lstm(batch.x[a:e], (h.detach(), cc.detach()))
        sequence_loss(read(out), batch.y[a:e], batch.mask[a:e]).backward()
    got = torch.cat([c.pathways[f"input->hidden:{g}"].weight.grad for g in "ifgo"])
    torch.testing.assert_close(lstm.weight_ih_l0.grad, got, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(read.weight.grad, c.pathways["hidden->output"].weight.grad)


def test_the_raw_record_writer_stores_each_record_whole_and_in_order(tmp_path):
    # the floor under recording_overhead stores real bytes, not a no-op
    import numpy as np
    import torch

    a, b = torch.arange(6.0).view(2, 3), torch.tensor([7.0, 8.0])
    w = bench.RawRecordWriter(tmp_path / "raw.bin", 4 * 8)
    w.write([a, b])
    w.write([a + 10, b + 10])
    w.close()
    got = np.fromfile(tmp_path / "raw.bin", np.float32)
    first = np.r_[a.flatten().numpy(), b.numpy()]
    np.testing.assert_array_equal(got, np.r_[first, first + 10])
