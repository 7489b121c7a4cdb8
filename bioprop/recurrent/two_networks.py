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

Methods — rule objects for the two-network system (:data:`METHODS`, :func:`train_step`):

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

The parameters of both networks and the modules are updated once per batch of streams, by
one optimizer from :func:`bioprop.training.optim.make_optimizer` (the networks in the group
``circuit``, the modules in ``module``); :func:`fit` is the loop, recordings included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from bioprop.core import init as _init
from bioprop.core import seeding
from bioprop.recurrent.circuit import RecurrentCircuit
from bioprop.recurrent.module import BoundarySyntheticGradient, fit_module, inject
from bioprop.recurrent.unroll import check_truncation, windows

__all__ = [
    "StreamTask",
    "TwoNetworks",
    "Method",
    "FullBPTT",
    "Truncated",
    "TwoNetworkDNI",
    "METHODS",
    "get_method",
    "train_step",
    "evaluate",
    "message_gradients",
]


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

    def plastic_parameters(self) -> list[torch.nn.Parameter]:
        """Networks and modules (for :func:`bioprop.training.optim.make_optimizer`)."""
        return [*self.network_parameters(), *self.module_parameters()]

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


class Method:
    """How the two networks learn, as a rule object: ``step(net, streams)`` writes ``.grad``
    and returns the losses; ``parameter_groups`` puts the modules in the optimizer group
    ``"module"``.  (Not in :mod:`bioprop.rules`: these train a pair of circuits joined by a
    message, not one circuit.)"""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    kind: ClassVar[str] = "recurrent"

    def hyperparameters(self) -> dict[str, Any]:
        return {}

    def parameter_groups(self, net: TwoNetworks) -> list[dict[str, Any]]:
        return [{"name": "module", "params": net.module_parameters()}]

    def step(self, net: TwoNetworks, s: Streams) -> dict[str, Any]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class FullBPTT(Method):
    """Full BPTT through both networks over the whole stream (the reference)."""

    name = "bptt"
    description = "full BPTT through both networks and the whole stream"

    def step(self, net: TwoNetworks, s: Streams) -> dict[str, Any]:
        la, lb, *_ = net.forward_full(s)
        (la + lb).backward()  # L = L_A + L_B
        return {"loss_a": float(la.detach()), "loss_b": float(lb.detach())}


class Truncated(Method):
    """A block by block, B in windows of T ticks; no synthetic gradient (the control)."""

    name = "truncated"
    description = "windows of T steps (A) and T ticks (B), no synthetic gradients"

    def temporal(self, module: BoundarySyntheticGradient, s_end: torch.Tensor):
        """δ̂ = M(s) at a window's end state (None: no boundary term)."""
        return None

    def message(self, net: TwoNetworks, m: torch.Tensor):
        """ĝ_j = M_m(m_j) ≈ ∂L_B/∂m_j (None: the message gets no gradient)."""
        return None

    def step(self, net: TwoNetworks, s: Streams) -> dict[str, Any]:
        T, n_b, K = net.T, s.x.shape[1], s.a.shape[0]
        A, B = net.A, net.B
        # -- network A, block by block --------------------------------------------------------
        state, prev, msgs, msg_pred = A.initial_state(n_b), None, [], []
        loss_a = lm_a = 0.0
        for j, (a, b) in enumerate(windows(K * T, T)):
            s0 = A.flat(state).detach().requires_grad_(j > 0)
            end, logit, m = net.run_a(A.unflat(s0), s.x[a:b])
            lj = F.cross_entropy(logit, s.a[j])
            J, ghat = lj, None
            if j < K - 1:
                s_end = A.flat(end)
                ghat = self.temporal(net.M_A, s_end.detach())
                if ghat is not None:  # J^A_j += ⟨sg δ̂^A(s^A_{j+1}), s^A_{j+1}⟩ / B
                    J = J + inject(ghat, s_end, n_b)
            gm = self.message(net, m.detach())
            if gm is not None:  # J^A_j += ⟨sg M_m(m_j), m_j⟩ / B
                J = J + inject(gm, m, n_b)
            J.backward()
            lm_a += fit_module(prev, _target(s0, n_b), n_b)
            prev, state = ghat, tuple(t.detach() for t in end)
            msgs.append(m.detach())
            msg_pred.append(gm)
            loss_a += float(lj.detach())
        # -- network B, in windows of T ticks (T² steps) ----------------------------------------
        state, prev = B.initial_state(n_b), None
        loss_b = lm_b = lm_m = 0.0
        for w0, w1 in windows(K, T):
            taught = any(msg_pred[t] is not None for t in range(w0, w1))
            m_in = torch.stack(msgs[w0:w1]).requires_grad_(taught)
            s0 = B.flat(state).detach().requires_grad_(w0 > 0)
            end, lb, _ = B.unroll(B.unflat(s0), m_in)
            lw = _ce(lb, s.b[w0:w1])
            J, ghat = lw, None
            if w1 < K:
                s_end = B.flat(end)
                ghat = self.temporal(net.M_B, s_end.detach())
                if ghat is not None:
                    J = J + inject(ghat, s_end, n_b)
            J.backward()
            lm_b += fit_module(prev, _target(s0, n_b), n_b)
            if taught:  # B·∂J^B/∂m_j: the bootstrapped target of M_m(m_j)
                target = m_in.grad * n_b
                for i, t in enumerate(range(w0, w1)):
                    lm_m += fit_module(msg_pred[t], target[i], n_b)
            prev, state = ghat, tuple(t.detach() for t in end)
            loss_b += float(lw.detach())
        return {
            "loss_a": loss_a,
            "loss_b": loss_b,
            "module_loss_a": lm_a,
            "module_loss_b": lm_b,
            "module_loss_m": lm_m,
            "message_synthetic": [g.detach() for g in msg_pred if g is not None],
        }


class TwoNetworkDNI(Truncated):
    """The same windows with temporal modules M_A, M_B and the message module M_m."""

    name = "dni"
    description = "windows with temporal synthetic gradients and a message synthetic gradient"

    def temporal(self, module: BoundarySyntheticGradient, s_end: torch.Tensor) -> torch.Tensor:
        return module.predict(s_end)

    def message(self, net: TwoNetworks, m: torch.Tensor) -> torch.Tensor:
        return net.M_m.predict(m)


#: the methods by name
METHODS: dict[str, type[Method]] = {c.name: c for c in (FullBPTT, TwoNetworkDNI, Truncated)}


def _target(s0: torch.Tensor, n_b: int) -> torch.Tensor | None:
    """B·∂J/∂s_b at a window's start state (None where nothing reached it)."""
    return None if s0.grad is None else s0.grad * n_b


def get_method(method: str | Method) -> Method:
    """A method by name (``bptt``, ``dni``, ``truncated``), or a :class:`Method` as is."""
    if isinstance(method, Method):
        return method
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    return METHODS[method]()


def train_step(net: TwoNetworks, s: Streams, method: str | Method) -> dict[str, Any]:
    """Write ``.grad`` of both networks (and modules) for one batch of streams."""
    method = get_method(method)
    for p in net.plastic_parameters():
        p.grad = None
    return method.step(net, s)


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
