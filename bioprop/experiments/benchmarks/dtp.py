"""Difference target propagation's cost per epoch, against backprop on the same circuit.

``dtp_over_bp_epoch``
    One Fashion-MNIST epoch (60 000 samples; 6 000 with ``--quick``; random data of that
    shape when the files are absent) of ``dtp`` in the parallel schedule on Bartunov et al.'s
    784-256×5-10 tanh circuit (softmax cross-entropy, Adam, batch 64) through the trainer ÷
    one ``bp`` epoch of the same circuit.  Median of interleaved repeats.  Target ≤ 3.

Per batch dtp runs the forward sweep, carries the first target down through g_l twice per
layer (g_l(ĥ_l) and g_l(h_l)), forms the layers' updates, and trains every inverse on
noise-corrupted activity (f_l(h̃), g_l and its gradient); bp runs the sweep and autograd's
backward pass.
"""

from __future__ import annotations

import torch

from bioprop.experiments import bench
from bioprop.experiments.benchmarks.datasets import _fmnist

BATCH = 64
SIZES = [784, 256, 256, 256, 256, 256, 10]
TARGET = 3.0


def _epoch(rule: str, data, device: str):
    from bioprop.core import init
    from bioprop.core.circuit import Circuit
    from bioprop.training.train import train

    def go():
        c = Circuit.layered(
            SIZES,
            activation="tanh",
            output_activation="linear",
            init=init.xavier_uniform(),
            seed=0,
        )
        train(
            c,
            rule,
            data,
            loss="cross-entropy",
            optimizer=("adam", {"lr": 1e-4}),
            epochs=1,
            batch_size=BATCH,
            seed=0,
            progress=False,
            device=device,
            evaluate_every_epoch=False,
        )

    return go


def _dtp_over_bp_epoch(quick: bool, repeats: int, device: str) -> dict:
    data = _fmnist(quick, device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small GEMMs: threads only add overhead on a shared machine
    try:
        return bench.interleaved_ratio(
            _epoch("dtp", data, device), _epoch("bp", data, device), repeats
        )
    finally:
        torch.set_num_threads(threads)


bench.register(
    "dtp_over_bp_epoch",
    "dtp trainer epoch (parallel schedule, 784-256x5-10 tanh, batch 64) / bp epoch, same circuit",
    _dtp_over_bp_epoch,
    target=TARGET,
)
