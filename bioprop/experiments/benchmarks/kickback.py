"""Kickback's cost per epoch, against backprop on the same regression circuit.

``kickback_over_bp_epoch``
    One trainer epoch of ``kickback`` on the task ``arm``'s circuit (6-10-100-200-2
    rectilinear, coherent initial weights; planar-arm inverse dynamics, 44 484 samples, 6 000
    with ``--quick``; SGD, batch 16) ÷ one trainer epoch of ``bp`` (autograd) on a copy of the
    same circuit, same data order.  Median of interleaved repeats.  Target ≤ 1.0: kickback
    does one matrix product per hidden population where bp backpropagates through every
    layer, and needs no autograd graph.
"""

from __future__ import annotations

import copy

import torch

from bioprop.experiments import bench

TARGET = 1.0


def _epoch(rule: str, circuit, data, device: str):
    from bioprop.training.train import train

    def go():
        train(
            copy.deepcopy(circuit),
            rule,
            data,
            loss="mse",
            optimizer=("sgd", {"lr": 0.01}),
            epochs=1,
            batch_size=16,
            seed=0,
            progress=False,
            device=device,
            evaluate_every_epoch=False,
        )

    return go


def _kickback_over_bp_epoch(quick: bool, repeats: int, device: str) -> dict:
    from bioprop import data as _data
    from bioprop.experiments import tasks

    task = tasks.get("arm")
    data = _data.load("planar-arm", n_train=6000 if quick else 44_484, n_test=100)
    circuit = task.circuit(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small GEMMs: threads only add overhead on a shared machine
    try:
        return bench.interleaved_ratio(
            _epoch("kickback", circuit, data, device), _epoch("bp", circuit, data, device), repeats
        )
    finally:
        torch.set_num_threads(threads)


bench.register(
    "kickback_over_bp_epoch",
    "kickback trainer epoch (6-10-100-200-2 rectilinear, planar-arm inverse dynamics, batch 16) "
    "/ bp epoch on the same circuit",
    _kickback_over_bp_epoch,
    target=TARGET,
)
