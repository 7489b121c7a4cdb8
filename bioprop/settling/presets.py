"""Scellier & Bengio 2017's MNIST settings, in bioprop's conventions: one source for
``circuits/ep_mnist.py``, the ``settling`` circuit of the image tasks of ``bioprop compare``
and the ``ep_over_bp_epoch`` benchmark.

From their code (``train_model.py``, net1 / net2): Glorot-uniform weights, zero biases,
hard-sigmoid populations, Euler step ε = 0.5, 20 free / 4 nudged steps (two hidden layers:
150 / 6), batch 20, random sign of β, persistent particles, per-layer learning rates.
Their cost is C = ‖u_out − y‖² (no ½); bioprop's is ½‖u_out − y‖², so their β = 0.5,
α = (0.1, 0.05) (two hidden layers: β = 1, α = (0.4, 0.1, 0.01)) are bioprop's β = 1.0,
lr = (0.2, 0.1) (β = 2, lr = (0.8, 0.2, 0.02)): the same nudging force β(y − u) and the
same weight steps.  The symmetric estimate (Laborieux et al. 2021) uses β = 0.5: its −β
phase needs |β| < 1 (at β = −1 the nudge cancels the output's leak and the phase has no
fixed point).
"""

from __future__ import annotations

from typing import Any

from bioprop.core import init as _init
from bioprop.core.circuit import layer_names
from bioprop.settling.circuit import DynamicalCircuit, layered_dynamical

__all__ = ["ARCHS", "EPSILON", "BATCH", "circuit", "rule_options", "optimizer"]

#: per number of hidden layers: sizes, free / nudged Euler steps, β (one-sided and
#: symmetric), per-layer learning rates (input side first), the paper's epochs
ARCHS: dict[int, dict[str, Any]] = {
    1: {
        "sizes": [784, 500, 10],
        "free": 20,
        "nudged": 4,
        "beta": 1.0,
        "beta_sym": 0.5,
        "lrs": [0.2, 0.1],
        "paper_epochs": 25,
    },
    2: {
        "sizes": [784, 500, 500, 10],
        "free": 150,
        "nudged": 6,
        "beta": 2.0,
        "beta_sym": 0.5,
        "lrs": [0.8, 0.2, 0.02],
        "paper_epochs": 60,
    },
}
EPSILON = 0.5
BATCH = 20


def _arch(hidden_layers: int) -> dict[str, Any]:
    if hidden_layers not in ARCHS:
        raise ValueError(f"hidden_layers must be one of {sorted(ARCHS)}, got {hidden_layers!r}")
    return ARCHS[hidden_layers]


def circuit(
    seed: int = 0, hidden_layers: int = 1, output_activation: str | None = None
) -> DynamicalCircuit:
    """784-500-10 (``hidden_layers=2``: 784-500-500-10) leaky hard-sigmoid populations,
    Glorot-uniform weights, zero biases, ε = 0.5 and the free-phase step budget."""
    arch = _arch(hidden_layers)
    return layered_dynamical(
        arch["sizes"],
        activation="hard-sigmoid",
        output_activation=output_activation,
        init=_init.xavier_uniform(),
        seed=seed,
        epsilon=EPSILON,
        steps=arch["free"],
    )


def rule_options(hidden_layers: int = 1, symmetric: bool = False) -> dict[str, Any]:
    """Options of ``bioprop.rules.get("ep", ...)``: S&B's random-sign β with persistent
    particles, or (``symmetric=True``) Laborieux et al.'s ±β estimate."""
    arch = _arch(hidden_layers)
    if symmetric:
        return {
            "beta": arch["beta_sym"],
            "nudged_steps": arch["nudged"],
            "symmetric": True,
            "persistent": True,
        }
    return {
        "beta": arch["beta"],
        "nudged_steps": arch["nudged"],
        "random_sign": True,
        "persistent": True,
    }


def optimizer(hidden_layers: int = 1, scale: float = 1.0) -> tuple[str, dict[str, float]]:
    """Plain SGD with S&B's per-layer learning rates (times ``scale``), as a spec of
    :func:`bioprop.training.optim.make_optimizer` (``"<pathway>_lr"`` per layer)."""
    arch = _arch(hidden_layers)
    if not (isinstance(scale, (int, float)) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    names = layer_names(arch["sizes"])
    lrs = [lr * scale for lr in arch["lrs"]]
    spec: dict[str, float] = {"lr": lrs[-1]}
    for a, b, lr in zip(names[:-1], names[1:], lrs, strict=True):
        spec[f"{a}->{b}_lr"] = lr
    return ("sgd", spec)
