"""Equilibrium propagation's cost per epoch, against backprop on the same architecture.

``ep_over_bp_epoch``
    One trainer epoch of the ``ep`` rule on the 784-500-10 hard-sigmoid dynamical
    circuit (Scellier & Bengio's settings: ε = 0.5, 20 free and 4 nudged Euler steps,
    batch 20, random sign of β) ÷ one trainer epoch of ``bp`` (autograd) on its layered
    twin (the same weights as a feedforward circuit), random data of MNIST shape
    (6 000 samples with ``--quick``, 60 000 without).  Median of interleaved repeats.

EP does 24 batched Euler steps per batch on top of the one input drive W₁x and the
Hebbian outer products that cost about what bp's forward and backward GEMMs cost, so the
ratio measures mostly the settling loop's per-step overhead.
"""

from __future__ import annotations

from bioprop.experiments import bench
from bioprop.rules import get
from bioprop.settling import DynamicalCircuit, layered_twin, presets

BATCH = presets.BATCH
TARGET = 3.0


def ep_circuit(seed: int = 0) -> DynamicalCircuit:
    """784-500-10 hard-sigmoid, ε = 0.5, 20 free steps, Glorot-uniform weights
    (:func:`bioprop.settling.presets.circuit`)."""
    return presets.circuit(seed)


def _ep_over_bp_epoch(quick: bool, repeats: int, device: str) -> dict:
    data = bench.mnist_shaped(6000 if quick else 60000, device=device)
    options = dict(loss="mse", optimizer=("sgd", {"lr": 0.1}), batch_size=BATCH)
    ep = bench.train_epoch(
        ep_circuit,
        lambda: get("ep", beta=1.0, nudged_steps=4, random_sign=True),
        data,
        device,
        **options,
    )
    bp = bench.train_epoch(lambda: layered_twin(ep_circuit()), "bp", data, device, **options)
    with bench.one_thread():
        return bench.interleaved_ratio(ep, bp, repeats)


bench.register(
    "ep_over_bp_epoch",
    "ep trainer epoch (784-500-10 hard-sigmoid, 20+4 Euler steps, batch 20) / bp epoch on "
    "its layered twin",
    _ep_over_bp_epoch,
    target=TARGET,
)
