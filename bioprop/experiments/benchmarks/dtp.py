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

from bioprop.core import init
from bioprop.core.circuit import Circuit
from bioprop.experiments import bench
from bioprop.experiments.benchmarks.datasets import _fmnist

BATCH = 64
SIZES = [784, 256, 256, 256, 256, 256, 10]
TARGET = 3.0


def _circuit() -> Circuit:
    return Circuit.layered(
        SIZES, activation="tanh", output_activation="linear", init=init.xavier_uniform(), seed=0
    )


def _dtp_over_bp_epoch(quick: bool, repeats: int, device: str) -> dict:
    data = _fmnist(quick, device)
    options = dict(loss="cross-entropy", optimizer=("adam", {"lr": 1e-4}), batch_size=BATCH)
    with bench.one_thread():
        return bench.interleaved_ratio(
            bench.train_epoch(_circuit, "dtp", data, device, **options),
            bench.train_epoch(_circuit, "bp", data, device, **options),
            repeats,
        )


bench.register(
    "dtp_over_bp_epoch",
    "dtp trainer epoch (parallel schedule, 784-256x5-10 tanh, batch 64) / bp epoch, same circuit",
    _dtp_over_bp_epoch,
    target=TARGET,
)
