"""`bioprop bench` reports ratios (no timing assertions: speed lives in benchmarks)."""

import json

import pytest
from conftest import train_quietly

from bioprop.experiments import bench
from bioprop.experiments.cli import main


def test_bench_json_prints_one_object_of_numeric_ratios(capsys):
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
    assert set(res) == {"fa_over_handloop", "recording_overhead"}
    assert all(isinstance(v, float) and v > 0 for v in res.values())


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
