"""Differentiable plasticity's cost: one outer (meta-training) step on an episode.

``plastic_episode_over_handloop``
    One meta-training step — the forward pass through a pattern-memorisation episode
    (Miconi et al.'s defaults: 5 patterns of 1000 bits, 106 steps), BPTT through it and an
    Adam step — of the 1000-unit plastic RNN, through the ``dp-bptt`` rule
    (:class:`bioprop.plasticity.PlasticRNN`), ÷ the same step in a minimal hand-written
    torch loop (:func:`handloop_step`: the paper's arithmetic, one episode, no batch axis).
    Median of interleaved repeats.  Target ≤ 1.2.
``plastic_episode_ms``
    The candidate's absolute time per step, in milliseconds (its ``ratio`` field).
"""

from __future__ import annotations

import torch

from bioprop.core import seeding
from bioprop.experiments import bench

N = 1000
TARGET = 1.2


def _episode(n: int = N):
    from bioprop.plasticity import PatternMemorisation

    return PatternMemorisation(n_bits=n).sample(1, 1, seeding.generator(0, "bench episode"))


def candidate_step(n: int = N, device: str = "cpu"):
    """``go()``: one ``dp-bptt`` step and one Adam step of a PlasticRNN(n, n, n)."""
    from bioprop.plasticity import PlasticRNN
    from bioprop.rules import get
    from bioprop.training.optim import make_optimizer

    circuit = PlasticRNN(n, n, n, seed=0).to(device)
    rule = get("dp-bptt").attach(circuit)
    opt = make_optimizer(("adam", {"lr": 3e-4}), circuit, rule)
    batch = _episode(n).to(device=device)

    def go():
        opt.zero_grad(set_to_none=True)
        float(rule.step(circuit, batch).loss)
        opt.step()

    return go


def handloop_step(n: int = N, device: str = "cpu", keep: bool = False):
    """``go()``: the same step written directly in torch (Miconi et al.'s ``simplest.py``
    arithmetic in bioprop's post × pre order)::

        y(t) = tanh((w + α ⊙ Hebb) y(t−1) + x(t)),  Hebb ← (1 − η) Hebb + η y(t) y(t−1)ᵀ
        L = Σ_i (y_i(T) − p_i)²,  backward, Adam

    ``keep=True`` makes ``go`` return (L, w, α, η) after the step (tests compare them)."""
    from bioprop.plasticity import PlasticRNN

    c = PlasticRNN(n, n, n, seed=0)
    rec = c.recurrent
    w = rec.weight.detach().clone().to(device).requires_grad_()
    a = rec.alpha.detach().clone().to(device).requires_grad_()
    eta = rec.eta.detach().clone().to(device).requires_grad_()
    opt = torch.optim.Adam([w, a, eta], lr=3e-4)
    batch = _episode(n)
    xs, target = batch.x[:, 0].to(device), batch.y[-1, 0].to(device)

    def go():
        opt.zero_grad(set_to_none=True)
        y = torch.zeros(n, device=device)
        hebb = torch.zeros(n, n, device=device)
        for t in range(xs.shape[0]):
            y_new = torch.tanh((w + a * hebb) @ y + xs[t])
            hebb = (1 - eta) * hebb + eta * torch.outer(y_new, y)
            y = y_new
        loss = ((y - target) ** 2).sum()
        loss.backward()
        opt.step()
        if keep:
            return loss.item(), w.detach(), a.detach(), eta.detach()
        loss.item()

    return go


def _plastic_episode_over_handloop(quick: bool, repeats: int, device: str) -> dict:
    n = 300 if quick else N
    with bench.one_thread():  # one core, like the experiments
        return bench.interleaved_ratio(candidate_step(n, device), handloop_step(n, device), repeats)


def _plastic_episode_ms(quick: bool, repeats: int, device: str) -> dict:
    import statistics
    import time

    with bench.one_thread():
        go = candidate_step(300 if quick else N, device)
        go()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            go()
            times.append(time.perf_counter() - t0)
    ms = 1000.0 * statistics.median(times)
    return {"ratio": ms, "candidate_s": ms / 1000.0, "baseline_s": float("nan"), "repeats": repeats}


bench.register(
    "plastic_episode_over_handloop",
    "dp-bptt meta-training step (1000-unit plastic RNN, 106-step pattern episode) / the "
    "same step in a hand-written torch loop",
    _plastic_episode_over_handloop,
    target=TARGET,
)
bench.register(
    "plastic_episode_ms",
    "ms per dp-bptt meta-training step of the 1000-unit plastic RNN (absolute)",
    _plastic_episode_ms,
)
