"""A feedforward circuit whose output layer is plastic, run through an episode.

input → hidden (tanh, an ordinary trained pathway) → output, where ``hidden->output`` is a
:class:`~bioprop.plasticity.pathway.HebbianPathway` (Miconi et al. 2018, eq. 1, on a
feedforward connection: the pre-synaptic rate is this step's hidden rate)::

    h(t) = tanh(W₁ x(t) + b₁)
    o(t) = f( (w + α ⊙ Hebb(t)) h(t) + b [+ x(t), the optional one-to-one drive] )
    Hebb(t+1) = (1 − η) Hebb(t) + η o(t) h(t)ᵀ          (or the Oja form)

With ``drive="add"`` (or ``"clamp"``) input i also reaches output i one to one, as the
recurrent network's input reaches its units: shown a pattern, the output layer expresses
it, and the trace stores the association from the hidden code to the pattern; shown a
degraded pattern, (α ⊙ Hebb) h(t) recalls it.  The non-plastic hidden layer is what a
local rule such as fa trains (``dp-fa``).
"""

from __future__ import annotations

import torch

from bioprop.core import init as _init
from bioprop.plasticity.circuit import (
    EpisodeCircuit,
    OnStep,
    _choice,
    clamp_t,
    over_time,
    plastic_step,
    step_record,
)
from bioprop.plasticity.pathway import HebbianPathway, OneToOnePathway

__all__ = ["PlasticFeedforward"]


class PlasticFeedforward(EpisodeCircuit):
    """input → hidden → output with a Hebbian output pathway, unrolled over an episode.

    Parameters
    ----------
    n_in, n_hidden, n_out
        Population sizes.
    output_activation
        Activation of the output units (``"tanh"`` default, or ``"linear"``).
    drive
        None (default), ``"add"`` or ``"clamp"``: the input also reaches the first
        ``min(n_in, n_out)`` outputs one to one.
    hidden_init
        Initial W₁ (default U(±1/√n_in)).
    bias, seed, **plasticity
        As for :class:`~bioprop.plasticity.PlasticRNN`, for the output pathway (``bias``
        True by default here).
    """

    def __init__(
        self,
        n_in: int,
        n_hidden: int,
        n_out: int,
        *,
        output_activation: str = "tanh",
        drive: str | None = None,
        hidden_init: _init.Init | None = None,
        bias: bool = True,
        seed: int = 0,
        **plasticity,
    ):
        self._check_options(dict(n_in=n_in, n_hidden=n_hidden, n_out=n_out), drive)
        _choice("PlasticFeedforward: output_activation", output_activation, ("tanh", "linear"))
        super().__init__(seed=seed)
        self.drive, self.n_hidden = drive, n_hidden
        self.add_population("input", n_in)
        self.add_population("hidden", n_hidden, activation="tanh")
        self.add_population("output", n_out, activation=output_activation)
        self.connect(
            "input",
            "hidden",
            init=_init.resolve(hidden_init, _init.uniform(n_in**-0.5)),
            bias=True,
        )
        self.add_hebbian("hidden", "output", role="feedforward", bias=bias, **plasticity)
        if drive is not None:
            self.add_pathway(OneToOnePathway("input", "output", n_in, n_out))
        self.input, self.output = "input", "output"

    @property
    def plastic_layer(self) -> HebbianPathway:
        return self.pathways["hidden->output"]

    def initial_state(self, batch: int) -> tuple:
        """(Hebb_0 = 0,) for ``batch`` episodes (empty when α is fixed at 0)."""
        pw = self.plastic_layer
        return (pw.initial_trace(batch),) if pw.active else ()

    def unroll(self, state, xs: torch.Tensor, on_step: OnStep | None = None):
        """Run the episode ``xs`` (time, batch, n_in) from ``state``.

        Returns (final state, outputs (time, batch, n_out), hidden rates (time, batch,
        n_hidden)).  ``on_step(Step)`` is called after every step.
        """
        self._check_inputs(xs)
        pw, act = self.plastic_layer, self.populations["output"].act
        hebb = state[0] if state else None
        n_out = self.populations["output"].size
        uh = over_time(self.pathways["input->hidden"], xs, self.n_hidden)
        hs = torch.tanh(uh)  # the hidden layer has no state: every step at once
        drive = None
        if self.drive is not None:
            drive = over_time(self.pathways["input->output"], xs, n_out)
        clamp = drive != 0 if self.drive == "clamp" else None
        outs = []
        for t in range(xs.shape[0]):
            h, before = hs[t], hebb
            d = drive[t] if drive is not None else None
            o, u, hebb = plastic_step(pw, h, hebb, act.f, d, clamp_t(clamp, t))
            outs.append(o)
            if on_step is not None:
                on_step(
                    step_record(
                        t,
                        xs[t],
                        "output",
                        o,
                        u,
                        clamp_t(clamp, t),
                        pw,
                        h,
                        before,
                        rates={"hidden": h},
                        currents={"hidden": uh[t]},
                    )
                )
        out = torch.stack(outs) if outs else xs.new_zeros(0, xs.shape[1], n_out)
        return ((hebb,) if hebb is not None else ()), out, hs
