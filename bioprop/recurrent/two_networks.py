"""Two recurrent networks joined by a decoupled neural interface (Jaderberg et al. 2017, §3.3).

A stream of images x_t with classes c_t (Fashion-MNIST classes, or MNIST-1D) is read one per
step by **network A** (an LSTM).  Every T steps — at the end of block j (steps jT … jT+T−1) —

* A outputs the number of *odd* classes in the block, a_j = Σ_{t ∈ block j} [c_t odd] ∈ {0…T};
* A sends a message m_j = W_m h^A_{jT+T−1} + b_m to **network B** (an LSTM ticking once per
  block), which outputs the number of class-3 items over the last T² steps,
  b_j = Σ_{t ∈ blocks j−T+1 … j} [c_t = 3] ∈ {0…T²}.

Nothing in A's own task asks it to encode 3s; only B's error can teach A's messages that.
Losses: softmax cross-entropy, summed over blocks/ticks and averaged over the batch,
L = L_A + L_B.

Methods (:func:`train_step`):

* ``bptt`` — full BPTT through both networks over the whole stream (the reference);
* ``dni`` — A learns block by block (truncation T) with a temporal synthetic gradient
  δ̂^A = M_A(s^A) at its block boundaries *and* a message synthetic gradient
  ĝ_j = M_m(m_j) ≈ ∂L_B/∂m_j, so it updates without waiting for B:

      J^A_j = L_{A,j} + (1/B)Σ_n ⟨sg δ̂^A(s^A_{j+1}), s^A_{j+1}⟩ + (1/B)Σ_n ⟨sg M_m(m_j), m_j⟩

  B learns in windows of T ticks (T² steps) with its own temporal synthetic gradient M_B;
  its backward pass delivers B·∂J^B/∂m_j, the bootstrapped target of M_m(m_j).  Each
  module is trained on ½‖M(·) − target‖² like the recurrent ``dni`` rule.
* ``truncated`` — the same windows without any synthetic gradient: A's messages get no
  gradient at all (the control: what B can do with untaught messages).

The parameters of both networks and the modules are updated once per batch of streams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bioprop.core import init as _init
from bioprop.core import seeding
from bioprop.recurrent.circuit import RecurrentCircuit
from bioprop.recurrent.rules import BoundarySyntheticGradient
from bioprop.recurrent.unroll import check_truncation

__all__ = ["StreamTask", "TwoNetworks", "METHODS", "train_step", "evaluate", "message_gradients"]

METHODS = ("bptt", "dni", "truncated")


@dataclass
class Streams:
    """A batch of streams: images (time, batch, n_in), A's targets (blocks, batch), B's
    targets (blocks, batch)."""

    x: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor


class StreamTask:
    """Streams of ``blocks`` × T images drawn from (x, classes); targets as in the module doc.

    Parameters
    ----------
    x, classes
        Images (samples, features) and their classes 0…9.
    T
        Block length (A reports every T steps; B counts over T² steps).
    blocks
        Blocks per stream (the stream has blocks·T steps).
    """

    def __init__(self, x: torch.Tensor, classes: torch.Tensor, T: int, blocks: int):
        self.T = check_truncation(T)
        if not isinstance(blocks, int) or blocks < 1:
            raise ValueError(f"blocks must be a positive integer, got {blocks!r}")
        if x.shape[0] != classes.shape[0] or x.shape[0] == 0:
            raise ValueError("StreamTask needs as many classes as images, and at least one")
        self.x, self.c, self.blocks = x, classes.long(), blocks

    @property
    def n_in(self) -> int:
        return self.x.shape[1]

    def sample(self, batch: int, generator: torch.Generator) -> Streams:
        steps = self.blocks * self.T
        idx = torch.randint(0, self.x.shape[0], (steps, batch), generator=generator)
        x, c = self.x[idx], self.c[idx]
        odd = (c % 2 == 1).long().reshape(self.blocks, self.T, batch).sum(1)
        threes = (c == 3).long().reshape(self.blocks, self.T, batch).sum(1)
        cum = torch.cat([torch.zeros(1, batch, dtype=torch.long), threes.cumsum(0)])
        j = torch.arange(self.blocks)
        b = cum[j + 1] - cum[(j + 1 - self.T).clamp(min=0)]
        return Streams(x, odd, b)


class TwoNetworks(torch.nn.Module):
    """Networks A (reader, with a ``message`` population) and B (ticks every T steps), and —
    for ``dni`` — the modules M_A, M_B (temporal) and M_m (message)."""

    def __init__(
        self,
        n_in: int,
        T: int,
        hidden_a: int = 64,
        hidden_b: int = 32,
        message: int = 16,
        seed: int = 0,
        cell: str = "lstm",
    ):
        super().__init__()
        self.T = check_truncation(T)
        self.A = RecurrentCircuit(
            n_in, hidden_a, T + 1, cell=cell, seed=seeding.derive(seed, "A") % 2**31
        )
        self.A.add_population("message", message)
        self.A.connect(
            "hidden",
            "message",
            bias=True,
            init=_init.uniform(1.0 / hidden_a**0.5),
        )
        self.B = RecurrentCircuit(
            message, hidden_b, T * T + 1, cell=cell, seed=seeding.derive(seed, "B") % 2**31
        )
        g = seeding.generator(seed, "modules")
        self.M_A = BoundarySyntheticGradient(hidden_a, self.A.state_size, generator=g)
        self.M_B = BoundarySyntheticGradient(hidden_b, self.B.state_size, generator=g)
        self.M_m = BoundarySyntheticGradient(message, message, generator=g)

    def network_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.A.core_parameters(), *self.B.core_parameters()]

    def module_parameters(self) -> list[torch.nn.Parameter]:
        return [*self.M_A.parameters(), *self.M_B.parameters(), *self.M_m.parameters()]

    # -- forward pieces ------------------------------------------------------------------------
    def run_a(self, state, x):
        """A over one block: (end state, count logits at the block's last step, message)."""
        end, out, _ = self.A.unroll(state, x)
        return end, out[-1], self.A.pathways["hidden->message"](end[0])

    def forward_full(self, s: Streams):
        """Everything with one graph: (L_A, L_B, messages, A logits, B logits)."""
        T, n_b = self.T, s.x.shape[1]
        state, msgs, la = self.A.initial_state(n_b), [], []
        for j in range(s.a.shape[0]):
            state, logit, m = self.run_a(state, s.x[j * T : (j + 1) * T])
            la.append(logit)
            msgs.append(m)
        la = torch.stack(la)
        _, lb, _ = self.B.unroll(self.B.initial_state(n_b), torch.stack(msgs))
        return _ce(la, s.a), _ce(lb, s.b), msgs, la, lb


def _ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Σ_ticks mean_batch cross-entropy."""
    return (
        F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum")
        / logits.shape[1]
    )


def _module_step(module, prev_pred, s0, n_b):
    """½‖M(s_b) − B·∂J/∂s_b‖² / B for the previous boundary's prediction (backward now)."""
    if prev_pred is None or s0.grad is None:
        return 0.0
    lm = 0.5 * ((prev_pred - s0.grad * n_b) ** 2).sum() / n_b
    if lm.requires_grad:  # (an oracle prediction in the tests has no graph)
        lm.backward()
    return float(lm.detach())


def train_step(net: TwoNetworks, s: Streams, method: str) -> dict:
    """Write ``.grad`` of both networks (and modules) for one batch of streams."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    for p in [*net.network_parameters(), *net.module_parameters()]:
        p.grad = None
    if method == "bptt":
        la, lb, *_ = net.forward_full(s)
        (la + lb).backward()
        return {"loss_a": float(la.detach()), "loss_b": float(lb.detach())}
    sg = method == "dni"
    T, n_b, K = net.T, s.x.shape[1], s.a.shape[0]
    A, B = net.A, net.B
    # -- network A, block by block ----------------------------------------------------------
    state, prev, msgs, msg_pred = A.initial_state(n_b), None, [], []
    loss_a = lm_a = 0.0
    for j in range(K):
        s0 = A.flat(state).detach().requires_grad_(j > 0)
        end, logit, m = net.run_a(A.unflat(s0), s.x[j * T : (j + 1) * T])
        lj = F.cross_entropy(logit, s.a[j])
        J, ghat, gm = lj, None, None
        if sg:
            if j < K - 1:
                s_end = A.flat(end)
                ghat = net.M_A.predict(s_end.detach())
                J = J + (ghat.detach() * s_end).sum() / n_b
            gm = net.M_m.predict(m.detach())
            J = J + (gm.detach() * m).sum() / n_b
        J.backward()
        lm_a += _module_step(net.M_A, prev, s0, n_b) if sg else 0.0
        prev, state = ghat, tuple(t.detach() for t in end)
        msgs.append(m.detach())
        msg_pred.append(gm)
        loss_a += float(lj.detach())
    # -- network B, in windows of T ticks (T² steps) --------------------------------------------
    state, prev = B.initial_state(n_b), None
    loss_b = lm_b = lm_m = 0.0
    for w in range(0, K, T):
        ticks = range(w, min(w + T, K))
        m_in = torch.stack([msgs[t] for t in ticks]).requires_grad_(sg)
        s0 = B.flat(state).detach().requires_grad_(w > 0)
        end, lb, _ = B.unroll(B.unflat(s0), m_in)
        lw = _ce(lb, s.b[w : w + len(ticks)])
        J, ghat = lw, None
        if sg and ticks[-1] < K - 1:
            s_end = B.flat(end)
            ghat = net.M_B.predict(s_end.detach())
            J = J + (ghat.detach() * s_end).sum() / n_b
        J.backward()
        if sg:
            lm_b += _module_step(net.M_B, prev, s0, n_b)
            target = m_in.grad * n_b  # B·∂J^B/∂m_j: the bootstrapped target of M_m(m_j)
            lm = sum(
                0.5 * ((msg_pred[t] - target[i]) ** 2).sum() / n_b for i, t in enumerate(ticks)
            )
            if lm.requires_grad:
                lm.backward()
            lm_m += float(lm.detach())
        prev, state = ghat, tuple(t.detach() for t in end)
        loss_b += float(lw.detach())
    return {
        "loss_a": loss_a,
        "loss_b": loss_b,
        "module_loss_a": lm_a,
        "module_loss_b": lm_b,
        "module_loss_m": lm_m,
        "message_synthetic": [g.detach() for g in msg_pred] if sg else [],
    }


def message_gradients(net: TwoNetworks, s: Streams) -> list[torch.Tensor]:
    """True B·∂L_B/∂m_j through full BPTT (for comparing M_m's predictions); no ``.grad``."""
    with torch.enable_grad():
        _, lb, msgs, _, _ = net.forward_full(s)
        grads = torch.autograd.grad(lb, msgs)
    return [g.detach() * s.x.shape[1] for g in grads]


@torch.no_grad()
def evaluate(net: TwoNetworks, s: Streams) -> dict[str, float]:
    """Accuracy of A's odd counts and B's 3-counts (argmax) on the streams ``s``."""
    la, lb, _, a_logits, b_logits = net.forward_full(s)
    return {
        "acc_a": float((a_logits.argmax(-1) == s.a).float().mean()),
        "acc_b": float((b_logits.argmax(-1) == s.b).float().mean()),
        "loss_a": float(la),
        "loss_b": float(lb),
        "chance_b": float((s.b == s.b.flatten().mode().values).float().mean()),
    }


def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """∠(a, b) in degrees (NaN if either is zero)."""
    na, nb = float(a.norm()), float(b.norm())
    if na == 0 or nb == 0:
        return math.nan
    return math.degrees(math.acos(max(-1.0, min(1.0, float((a * b).sum()) / (na * nb)))))
