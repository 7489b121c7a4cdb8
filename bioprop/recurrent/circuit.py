"""Recurrent circuits: a recurrent population (LSTM or tanh RNN) unrolled in time.

Populations: ``input`` (linear, clamped to x_t), ``hidden`` (the recurrent population's rate
h_t), for the LSTM a ``cell`` population (the memory c_t) and ``output`` (linear read-out,
logits).  Pathways, all post × pre like every bioprop pathway:

* tanh RNN: ``input->hidden`` (feedforward, W_x, bias b), ``hidden->hidden`` (lateral, W_h)
  and ``hidden->output`` (feedforward, W_y, bias)::

      h_t = tanh(W_x x_t + W_h h_{t-1} + b),      y_t = W_y h_t + b_y

* LSTM: one pathway per gate and source, ``input->hidden:G`` (feedforward, bias) and
  ``hidden->hidden:G`` (lateral) for G ∈ {i, f, g, o}::

      a^G_t = W^G_x x_t + W^G_h h_{t-1} + b^G
      c_t = σ(a^f_t) ⊙ c_{t-1} + σ(a^i_t) ⊙ tanh(a^g_t),   h_t = σ(a^o_t) ⊙ tanh(c_t)

The *state* carried across steps (and across truncation windows) is s_t = h_t (RNN) or
s_t = h_t ⊕ c_t (LSTM, as in Jaderberg et al. 2017, whose synthetic gradient is a function of
both); :meth:`RecurrentCircuit.flat` concatenates it, :meth:`RecurrentCircuit.unflat` splits
it.  Everything is plain torch on the circuit's parameters, so full BPTT is autograd on the
very object the truncated rules train.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from bioprop.core import init as _init
from bioprop.core.circuit import Circuit

__all__ = ["RecurrentCircuit", "CELLS", "GATES"]

CELLS = ("lstm", "rnn")
GATES = ("i", "f", "g", "o")

State = tuple[torch.Tensor, ...]


class RecurrentCircuit(Circuit):
    """A circuit whose ``hidden`` population is recurrent and is unrolled in time.

    Parameters
    ----------
    n_in, n_hidden, n_out
        Sizes of the input, recurrent and output populations.
    cell
        ``"lstm"`` or ``"rnn"`` (tanh).
    seed
        Seed of the initial weights.
    forget_bias
        Initial bias of the LSTM forget gate (1 keeps memories by default).

    Weights are drawn U(±1/√n_hidden) (torch's RNN default) from the circuit's generator;
    the read-out is drawn the same way and its bias is zero.
    """

    def __init__(
        self,
        n_in: int,
        n_hidden: int,
        n_out: int,
        cell: str = "lstm",
        seed: int = 0,
        forget_bias: float = 1.0,
    ):
        if cell not in CELLS:
            raise ValueError(f"unknown cell type {cell!r}; choose one of {list(CELLS)}")
        for what, n in (("n_in", n_in), ("n_hidden", n_hidden), ("n_out", n_out)):
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ValueError(f"RecurrentCircuit: {what} must be a positive integer, got {n!r}")
        super().__init__(seed=seed)
        self.cell = cell
        self.n_hidden = n_hidden
        w = _init.uniform(1.0 / n_hidden**0.5)
        self.add_population("input", n_in)
        self.add_population("hidden", n_hidden, activation="tanh")
        if cell == "lstm":
            self.add_population("cell", n_hidden)
        self.add_population("output", n_out)
        if cell == "rnn":
            self.connect("input", "hidden", init=w, bias=True)
            self.connect("hidden", "hidden", init=w, role="lateral")
        else:
            for g in GATES:
                b = torch.full((n_hidden,), float(forget_bias)) if g == "f" else True
                self.connect("input", "hidden", init=w, bias=b, name=f"input->hidden:{g}")
                self.connect("hidden", "hidden", init=w, role="lateral", name=f"hidden->hidden:{g}")
        self.connect("hidden", "output", init=w, bias=True)
        self.input, self.output = "input", "output"
        self._shared: tuple[torch.Tensor, ...] | None = None  # see shared_gate_weights

    # -- structure -------------------------------------------------------------------------
    def order(self) -> list[str]:
        """Populations in the order of one time step (input, hidden, [cell], output).  The
        hidden population is reached through recurrent (lateral) pathways, which a layered
        circuit's topological order does not follow."""
        first = [n for n in ("input", "hidden", "cell", "output") if n in self.populations]
        return first + [n for n in self.populations if n not in first]

    @property
    def kind(self) -> str:
        """``"recurrent"``: trained over sequences cut into windows of T steps."""
        return "recurrent"

    def core_parameters(self) -> list[nn.Parameter]:
        """Parameters of the forward circuit (input, recurrent and read-out pathways)."""
        return [
            p for pw in self.pathways.values() if pw.role != "feedback" for p in pw.own_parameters()
        ]

    @property
    def state_size(self) -> int:
        """Size of the flat state s = h (RNN) or h ⊕ c (LSTM)."""
        return self.n_hidden * (2 if self.cell == "lstm" else 1)

    def state_names(self) -> list[str]:
        """Populations whose rates make up the state, in :meth:`flat` order."""
        return ["hidden", "cell"] if self.cell == "lstm" else ["hidden"]

    def initial_state(self, batch: int) -> State:
        """s_0 = 0 for a batch of ``batch`` sequences."""
        ref = self.pathways["hidden->output"].weight
        z = torch.zeros(batch, self.n_hidden, dtype=ref.dtype, device=ref.device)
        return (z, z.clone()) if self.cell == "lstm" else (z,)

    @staticmethod
    def flat(state: State) -> torch.Tensor:
        """The state as one (batch, state_size) tensor, h ⊕ c."""
        return state[0] if len(state) == 1 else torch.cat(state, dim=1)

    def unflat(self, s: torch.Tensor) -> State:
        """Inverse of :meth:`flat`."""
        if self.cell == "lstm":
            return (s[:, : self.n_hidden], s[:, self.n_hidden :])
        return (s,)

    # -- running -----------------------------------------------------------------------------
    def _weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(W_x, W_h, b) with the gates stacked along the first axis (LSTM: 4H rows)."""
        if self._shared is not None:
            return self._shared
        if self.cell == "rnn":
            pw = self.pathways
            return pw["input->hidden"].weight, pw["hidden->hidden"].weight, pw["input->hidden"].bias
        wx, wh, b = (torch.cat(ps) for ps in self._gate_parameters())
        return wx, wh, b

    def _gate_parameters(self) -> list[list[nn.Parameter]]:
        """The LSTM's per-gate W_x, W_h and b, each a list in gate order (i, f, g, o)."""
        pw = self.pathways
        return [
            [pw[f"input->hidden:{g}"].weight for g in GATES],
            [pw[f"hidden->hidden:{g}"].weight for g in GATES],
            [pw[f"input->hidden:{g}"].bias for g in GATES],
        ]

    @contextlib.contextmanager
    def shared_gate_weights(self) -> Iterator[None]:
        """Within the block every :meth:`unroll` reads one stacked copy of the LSTM's gate
        weights (W_x, W_h, b), made once, instead of stacking the pathways' weights anew;
        on leaving it, the gradient accumulated on the copy is split by gate and added to
        the pathways' ``.grad`` — the same ``.grad`` as without the block.

        For a rule that unrolls several windows between two updates (the weights do not
        change inside the block): one stacking and one split per update instead of one per
        window.  Inside the block the pathways' ``.grad`` lags behind (it is written on
        leaving), so code that reads it per window must not use the block.  A tanh RNN's
        weights need no stacking: the block changes nothing there.
        """
        if self.cell != "lstm" or self._shared is not None:
            yield
            return
        owners = self._gate_parameters()
        with torch.no_grad():
            copies = tuple(
                torch.cat(ps).requires_grad_(any(p.requires_grad for p in ps)) for ps in owners
            )
        self._shared = copies
        try:
            yield
        finally:
            self._shared = None
            for copy, ps in zip(copies, owners, strict=True):
                if copy.grad is None:
                    continue
                for p, g in zip(ps, copy.grad.chunk(len(GATES)), strict=True):
                    if p.requires_grad:
                        p.grad = g.clone() if p.grad is None else p.grad.add_(g)

    def unroll(
        self, state: State, xs: torch.Tensor, keep_states: bool = False
    ) -> tuple[State, torch.Tensor, list[State]]:
        """Run the recurrent population over ``xs`` (time, batch, n_in) from ``state``.

        Returns the final state, the output logits y_t (time, batch, n_out) and, with
        ``keep_states``, the state after every step (a list of length time; else empty).

        The arithmetic is torch's fused recurrent kernel (``torch.lstm`` /
        ``torch.rnn_tanh``, the kernels of ``nn.LSTM`` / ``nn.RNN``, whose gate order
        i, f, g, o is ours) on the weights the pathways hold, so autograd reaches every
        pathway as before; with ``keep_states`` the same equations run step by step in
        Python (the input projection W_x x_t + b of all steps as one matrix product).
        """
        if xs.dim() != 3 or xs.shape[2] != self.populations["input"].size:
            raise ValueError(
                f"inputs must have shape (time, batch, {self.populations['input'].size}), "
                f"got {tuple(xs.shape)}"
            )
        wx, wh, b = self._weights()
        n_t, n_b = xs.shape[0], xs.shape[1]
        if not keep_states and n_t > 0:
            return self._fused(state, xs, wx, wh, b)
        ax = torch.addmm(b, xs.reshape(n_t * n_b, -1), wx.t()).reshape(n_t, n_b, -1)
        whT = wh.t()
        states: list[State] = []
        if self.cell == "rnn":
            (h,) = state
            for t in range(n_t):
                h = torch.tanh(torch.addmm(ax[t], h, whT))
                states.append((h,))
        else:
            h, c = state
            for t in range(n_t):
                a = torch.addmm(ax[t], h, whT)
                i, f, g, o = a.chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                states.append((h, c))
        hs = torch.stack([s[0] for s in states]) if states else xs.new_zeros(0, n_b, self.n_hidden)
        y = self.pathways["hidden->output"](hs.reshape(n_t * n_b, -1)).reshape(n_t, n_b, -1)
        return (states[-1] if states else state), y, states

    def _fused(self, state, xs, wx, wh, b) -> tuple[State, torch.Tensor, list[State]]:
        """:meth:`unroll` through torch's fused kernel (no per-step Python)."""
        n_t, n_b = xs.shape[0], xs.shape[1]
        params = [wx, wh, b, torch.zeros_like(b)]  # one bias: b_hh = 0
        hx = tuple(s[None] for s in state)
        if self.cell == "lstm":
            hs, h, c = torch.lstm(xs, hx, params, True, 1, 0.0, self.training, False, False)
            final: State = (h[0], c[0])
        else:
            hs, h = torch.rnn_tanh(xs, hx[0], params, True, 1, 0.0, self.training, False, False)
            final = (h[0],)
        y = self.pathways["hidden->output"](hs.reshape(n_t * n_b, -1)).reshape(n_t, n_b, -1)
        return final, y, []

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        """Output logits (time, batch, n_out) of the sequences ``xs`` from s_0 = 0."""
        return self.unroll(self.initial_state(xs.shape[1]), xs)[1]
