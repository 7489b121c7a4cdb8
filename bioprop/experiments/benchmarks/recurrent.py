"""The recurrent family's cost per update, against torch's own LSTM and against bptt.

``rnn_bptt_over_torch_lstm``
    One truncated-BPTT update of the copy task's circuit (LSTM 64, batches of 32 sequences
    of N = 10, windows of T = 3; the ``bptt`` rule's step, gradient-norm clip, Adam) ÷ the
    same update written with ``torch.nn.LSTM`` + ``nn.Linear`` and autograd (each window
    from the detached state, the same loss, clip and Adam).  Target ≤ 1.3.
``dni_over_bptt_update``
    One ``dni`` update (linear synthetic-gradient module at every boundary, its fit) ÷ one
    ``bptt`` update, same circuit and batches.  Target ≤ 1.5.

Both time updates on batches drawn beforehand, so only the update is measured.
"""

from __future__ import annotations

import torch
from torch import nn

from bioprop.experiments import bench

N, BATCH, HIDDEN, T = 10, 32, 64, 3


def _batches(count: int, device: str):
    from bioprop.core import seeding
    from bioprop.recurrent import CopyTask

    gen = seeding.generator(0, "bench batches")
    return [CopyTask().sample(N, BATCH, gen).to(torch.float32, device) for _ in range(count)]


def _rule_updates(rule_name: str, batches, device: str):
    """A closure: a fresh circuit and rule, then one update per batch (rule step, clip,
    Adam) — what the recurrent loop does per step."""
    from bioprop import rules
    from bioprop.core import seeding
    from bioprop.recurrent import CopyTask, RecurrentCircuit
    from bioprop.training.optim import make_optimizer

    task = CopyTask()

    def go():
        circuit = RecurrentCircuit(task.n_in, HIDDEN, task.n_out, seed=0).to(device)
        rule = rules.get(rule_name, kind="recurrent", T=T)
        rule.attach(circuit, seeding.generator(0, "feedback"))
        opt = make_optimizer(("adam", {"lr": 1e-3}), circuit, rule)
        core = circuit.core_parameters()
        for b in batches:
            opt.zero_grad(set_to_none=True)
            rule.step(circuit, b)
            torch.nn.utils.clip_grad_norm_(core, 10.0)
            opt.step()

    return go


def _torch_lstm_updates(batches, device: str):
    """The same truncated-BPTT updates with ``nn.LSTM`` (fused kernels) and autograd."""
    from bioprop.recurrent import CopyTask, sequence_loss
    from bioprop.recurrent.unroll import windows

    task = CopyTask()

    def go():
        torch.manual_seed(0)
        lstm = nn.LSTM(task.n_in, HIDDEN).to(device)
        read = nn.Linear(HIDDEN, task.n_out).to(device)
        params = [*lstm.parameters(), *read.parameters()]
        opt = torch.optim.Adam(params, lr=1e-3, fused=True)
        for b in batches:
            opt.zero_grad(set_to_none=True)
            h = torch.zeros(1, BATCH, HIDDEN, device=device)
            c = torch.zeros_like(h)
            for a, e in windows(b.length, T):
                out, (h, c) = lstm(b.x[a:e], (h.detach(), c.detach()))
                y = read(out)
                sequence_loss(y, b.y[a:e], b.mask[a:e]).backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            opt.step()

    return go


def _rnn_bptt_over_torch_lstm(quick: bool, repeats: int, device: str) -> dict:
    batches = _batches(20 if quick else 100, device)
    with bench.one_thread():
        return bench.interleaved_ratio(
            _rule_updates("bptt", batches, device), _torch_lstm_updates(batches, device), repeats
        )


def _dni_over_bptt_update(quick: bool, repeats: int, device: str) -> dict:
    batches = _batches(20 if quick else 100, device)
    with bench.one_thread():
        return bench.interleaved_ratio(
            _rule_updates("dni", batches, device), _rule_updates("bptt", batches, device), repeats
        )


bench.register(
    "rnn_bptt_over_torch_lstm",
    "bptt update of the LSTM-64 copy circuit (N 10, batch 32, T 3, Adam) / the same update "
    "with torch.nn.LSTM and autograd",
    _rnn_bptt_over_torch_lstm,
    target=1.3,
)
bench.register(
    "dni_over_bptt_update",
    "dni update (linear module at every boundary) / bptt update, same circuit and batches",
    _dni_over_bptt_update,
    target=1.5,
)
