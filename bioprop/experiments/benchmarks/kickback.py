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

from bioprop.experiments import bench

TARGET = 1.0


def _kickback_over_bp_epoch(quick: bool, repeats: int, device: str) -> dict:
    from bioprop import data as _data
    from bioprop.experiments import tasks

    data = _data.load("planar-arm", n_train=6000 if quick else 44_484, n_test=100)
    circuit = tasks.get("arm").circuit(0)
    options = dict(loss="mse", optimizer=("sgd", {"lr": 0.01}), batch_size=16)
    with bench.one_thread():
        return bench.interleaved_ratio(
            bench.train_epoch(lambda: copy.deepcopy(circuit), "kickback", data, device, **options),
            bench.train_epoch(lambda: copy.deepcopy(circuit), "bp", data, device, **options),
            repeats,
        )


bench.register(
    "kickback_over_bp_epoch",
    "kickback trainer epoch (6-10-100-200-2 rectilinear, planar-arm inverse dynamics, batch 16) "
    "/ bp epoch on the same circuit",
    _kickback_over_bp_epoch,
    target=TARGET,
)
