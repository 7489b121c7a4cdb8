"""Circuits with Hebbian plastic pathways, run step by step through an episode.

Miconi et al. 2018, §3–4.1: a fully recurrent tanh network whose recurrent connections are
plastic (Figure 1)::

    x_i(t) = tanh( Σ_j (w_ij + α_ij Hebb_ij(t)) x_j(t−1) + input_i(t) )
    Hebb_ij(t+1) = (1 − η) Hebb_ij(t) + η x_i(t) x_j(t−1)

(post i, pre j — bioprop's post × pre order; the paper's code stores the transpose).  The
input pattern reaches unit i of the recurrent population one-to-one, added to its input
(``drive="add"``, the binary-pattern task) or clamping its rate (``drive="clamp"``, the
image task: units with a non-zero input take the input's value), and the output is read
from the same units (``output="units"``).  A dense trained input projection and a linear
read-out are options, so the same circuit with α = 0 is exactly bioprop's tanh
:class:`~bioprop.recurrent.RecurrentCircuit` (``tests/test_plasticity_circuits.py``).

:class:`EpisodeCircuit` is what every plastic circuit shares (the circuit kind
``"recurrent"``: it runs in time, over episodes whose traces restart at zero), and the
per-step :class:`Step` a rule without backprop through time reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from bioprop.core import init as _init
from bioprop.core.circuit import Circuit
from bioprop.core.pathway import Pathway
from bioprop.plasticity.pathway import HebbianPathway, OneToOnePathway

__all__ = ["EpisodeCircuit", "PlasticRNN", "Step", "check_size", "plastic_step", "step_record"]

INPUTS = ("one-to-one", "dense")
DRIVES = ("add", "clamp")
OUTPUTS = ("units", "readout")


def check_size(what: str, n) -> int:
    """``n`` if it is a positive integer, else a ``ValueError`` naming ``what``."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{what} must be a positive integer, got {n!r}")
    return n


def _choice(what: str, value: str, options: tuple[str, ...]) -> str:
    if value not in options:
        raise ValueError(f"{what} must be one of {list(options)}, got {value!r}")
    return value


@dataclass
class Step:
    """What one step of an episode leaves for a rule that learns without BPTT.

    ``t`` the step; ``x`` the input (batch, n_in); ``r`` and ``u`` the rates and
    pre-activations of the populations computed at this step; ``clamped`` the units whose
    rate the input set (batch, n) per population (absent: none); per Hebbian pathway,
    ``pre`` the rate it multiplied and ``hebb`` its trace *before* this step's update (the
    one in the effective weight w + α ⊙ Hebb of this step)."""

    t: int
    x: torch.Tensor
    r: dict[str, torch.Tensor]
    u: dict[str, torch.Tensor]
    clamped: dict[str, torch.Tensor] = field(default_factory=dict)
    pre: dict[str, torch.Tensor] = field(default_factory=dict)
    hebb: dict[str, torch.Tensor] = field(default_factory=dict)
    post: dict[str, torch.Tensor] = field(default_factory=dict)


OnStep = Callable[[Step], None]


class EpisodeCircuit(Circuit):
    """Base of circuits with Hebbian pathways, unrolled through episodes.

    The state carried from step to step is a tuple whose last entries are the traces of
    the *active* Hebbian pathways (:meth:`active_pathways`, in that order); every episode
    starts from :meth:`initial_state` (rates 0, Hebb 0) — traces never cross episodes, and
    each sample of the batch has its own.
    """

    n_hidden: int = 0

    @property
    def kind(self) -> str:
        """``"recurrent"``: run in time, over episodes."""
        return "recurrent"

    def order(self) -> list[str]:
        first = [n for n in ("input", "hidden", "output") if n in self.populations]
        return first + [n for n in self.populations if n not in first]

    @property
    def state_size(self) -> int:
        """Units of the rate state (the traces are synaptic state, not counted)."""
        return self.n_hidden

    def hebbian_pathways(self) -> list[HebbianPathway]:
        """Every Hebbian pathway, in insertion order."""
        return [pw for pw in self.pathways.values() if isinstance(pw, HebbianPathway)]

    def active_pathways(self) -> list[HebbianPathway]:
        """The Hebbian pathways whose trace matters (α trained or non-zero)."""
        return [pw for pw in self.hebbian_pathways() if pw.active]

    def traces(self, state: tuple) -> dict[str, torch.Tensor]:
        """``{pathway name: Hebb (batch, post, pre)}`` of a state (its last entries)."""
        active = self.active_pathways()
        return dict(zip([pw.name for pw in active], state[len(state) - len(active) :], strict=True))

    def core_parameters(self) -> list[nn.Parameter]:
        """Every trained parameter of the forward circuit: w, b, α, η (each once)."""
        seen, out = set(), []
        for pw in self.pathways.values():
            if pw.role == "feedback":
                continue
            for p in pw.own_parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
        return out

    def named_core(self) -> dict[str, nn.Parameter]:
        """``{"<pathway>.weight" | ".bias" | ".alpha" | ".eta": parameter}`` of every trained
        parameter (a shared η appears under each pathway that uses it)."""
        out = {}
        for pw in self.pathways.values():
            if pw.role == "feedback":
                continue
            for part in ("weight", "bias", "alpha", "eta"):
                p = getattr(pw, part, None)
                if isinstance(p, nn.Parameter) and p.requires_grad:
                    out[f"{pw.name}.{part}"] = p
        return out

    def _ref(self) -> torch.Tensor:
        return self.pathways["hidden->output"].weight

    def flat(self, state):  # the truncated rules' boundary API: refused with the reason
        raise TypeError(
            f"a {type(self).__name__} carries Hebbian traces through the episode; rules that "
            "cut the state at window boundaries (bptt, dni) cannot carry them: train it "
            "with 'dp-bptt' or 'dp-fa'"
        )

    unflat = flat

    def unroll(self, state, xs: torch.Tensor, on_step: OnStep | None = None):
        raise NotImplementedError

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        """Outputs (time, batch, n_out) of episodes ``xs`` (time, batch, n_in) from rest."""
        return self.unroll(self.initial_state(xs.shape[1]), xs)[1]

    def _check_inputs(self, xs: torch.Tensor) -> None:
        n_in = self.populations["input"].size
        if xs.dim() != 3 or xs.shape[2] != n_in:
            raise ValueError(
                f"episode inputs must have shape (time, batch, {n_in}), got {tuple(xs.shape)}"
            )

    def _check_options(self, sizes: dict[str, int], drive: str | None) -> None:
        """Refuse a non-positive size or an unknown drive, naming the option."""
        who = type(self).__name__
        for what, n in sizes.items():
            check_size(f"{who}: {what}", n)
        if drive is not None:
            _choice(f"{who}: drive", drive, DRIVES)

    def add_hebbian(
        self,
        pre: str,
        post: str,
        *,
        role: str,
        bias: bool,
        alpha: str = "per-synapse",
        alpha_init: _init.Init | float | None = None,
        weight_init: _init.Init | None = None,
        **trace,
    ) -> HebbianPathway:
        """Add the Hebbian pathway ``pre → post`` (the plastic circuits' ``**plasticity``
        options, defined here once).

        Parameters
        ----------
        alpha
            ``"per-synapse"`` (default) or ``"shared"`` (one α for the pathway).
        alpha_init, weight_init
            Initial α and w (default N(0, 0.01²) each, the paper's code); a number sets
            every α to it.
        **trace
            ``eta``, ``learn_alpha``, ``learn_eta``, ``form``: as :class:`HebbianPathway`
            (η = 0.01, learned, decay form by default).
            ``alpha_init=0, learn_alpha=False`` is the non-plastic twin (no trace at all).
        """
        _choice(f"{type(self).__name__}: alpha", alpha, ("per-synapse", "shared"))
        n_post, n_pre = self.populations[post].size, self.populations[pre].size
        w_init = _init.resolve(weight_init, _init.normal(0.01))
        shape = (n_post, n_pre) if alpha == "per-synapse" else ()
        g = self.generator
        return self.add_pathway(
            HebbianPathway(
                pre,
                post,
                w_init((n_post, n_pre), g),
                torch.zeros(n_post) if bias else None,
                alpha=_alpha(alpha_init, shape, g),
                role=role,
                init=w_init,
                **trace,
            )
        )


class PlasticRNN(EpisodeCircuit):
    """A tanh RNN whose recurrent pathway ``hidden->hidden`` is Hebbian (Miconi et al. 2018).

    Parameters
    ----------
    n_in, n_hidden, n_out
        Input channels, recurrent units, outputs (``n_in`` and ``n_out`` ≤ ``n_hidden``
        for the one-to-one input and output).
    input
        ``"one-to-one"`` (input i drives unit i; the paper) or ``"dense"`` (a trained
        ``input->hidden`` projection with bias, as :class:`RecurrentCircuit`).
    drive
        ``"add"``: the input joins the unit's sum; ``"clamp"`` (one-to-one only): units
        with a non-zero input take its value instead of tanh(·) (the image task).
    output
        ``"units"``: the rates of the first ``n_out`` units (the paper); ``"readout"``: a
        trained linear read-out with bias.
    bias
        A trained bias on the recurrent units (default False: the paper has none).
    seed
        Seed of the initial weights.
    **plasticity
        The recurrent pathway's ``alpha`` layout, ``alpha_init``, ``weight_init``, ``eta``,
        ``learn_alpha``, ``learn_eta``, ``form`` (:meth:`EpisodeCircuit.add_hebbian`).
    """

    def __init__(
        self,
        n_in: int,
        n_hidden: int,
        n_out: int,
        *,
        input: str = "one-to-one",
        drive: str = "add",
        output: str = "units",
        bias: bool = False,
        seed: int = 0,
        **plasticity,
    ):
        self._check_options(dict(n_in=n_in, n_hidden=n_hidden, n_out=n_out), drive)
        self.input_mode = _choice("PlasticRNN: input", input, INPUTS)
        self.drive = drive
        self.output_mode = _choice("PlasticRNN: output", output, OUTPUTS)
        if input == "one-to-one" and n_in > n_hidden:
            raise ValueError(
                f"PlasticRNN: {n_in} input channels cannot drive {n_hidden} units one to one "
                f"(patterns longer than the population); use n_hidden >= {n_in} or "
                "input='dense'"
            )
        if output == "units" and n_out > n_hidden:
            raise ValueError(
                f"PlasticRNN: {n_out} outputs cannot be read from {n_hidden} units; use "
                f"n_hidden >= {n_out} or output='readout'"
            )
        if drive == "clamp" and input != "one-to-one":
            raise ValueError("PlasticRNN: drive='clamp' needs input='one-to-one'")
        super().__init__(seed=seed)
        self.n_hidden = n_hidden
        self.add_population("input", n_in)
        self.add_population("hidden", n_hidden, activation="tanh")
        self.add_population("output", n_out)
        if input == "one-to-one":
            self.add_pathway(OneToOnePathway("input", "hidden", n_in, n_hidden))
        else:
            self.connect("input", "hidden", init=_init.uniform(n_hidden**-0.5), bias=True)
        self.add_hebbian("hidden", "hidden", role="lateral", bias=bias, **plasticity)
        if output == "units":
            self.add_pathway(OneToOnePathway("hidden", "output", n_hidden, n_out))
        else:
            self.connect("hidden", "output", init=_init.uniform(n_hidden**-0.5), bias=True)
        self.input, self.output = "input", "output"

    @property
    def recurrent(self) -> HebbianPathway:
        return self.pathways["hidden->hidden"]

    def initial_state(self, batch: int) -> tuple:
        """(h_0 = 0, Hebb_0 = 0) for ``batch`` episodes (no trace when α is fixed at 0)."""
        h = self._ref().new_zeros(batch, self.n_hidden)
        rec = self.recurrent
        return (h, rec.initial_trace(batch)) if rec.active else (h,)

    def unroll(self, state, xs: torch.Tensor, on_step: OnStep | None = None):
        """Run the episode ``xs`` (time, batch, n_in) from ``state``.

        Returns (final state, outputs (time, batch, n_out), rates h_t (time, batch,
        n_hidden)).  ``on_step(Step)`` is called after every step.
        """
        self._check_inputs(xs)
        rec, inp = self.recurrent, self.pathways["input->hidden"]
        h, hebb = state[0], (state[1] if len(state) > 1 else None)
        n_t = xs.shape[0]
        drive = over_time(inp, xs, self.n_hidden)
        clamp = drive != 0 if self.drive == "clamp" else None
        hs = []
        for t in range(n_t):
            pre, before = h, hebb
            h, u, hebb = plastic_step(rec, pre, hebb, torch.tanh, drive[t], clamp_t(clamp, t))
            hs.append(h)
            if on_step is not None:
                on_step(step_record(t, xs[t], "hidden", h, u, clamp_t(clamp, t), rec, pre, before))
        rates = torch.stack(hs) if hs else xs.new_zeros(0, xs.shape[1], self.n_hidden)
        out = over_time(self.pathways["hidden->output"], rates, self.populations["output"].size)
        final = (h, hebb) if hebb is not None else (h,)
        return final, out, rates


def clamp_t(clamp: torch.Tensor | None, t: int) -> torch.Tensor | None:
    return None if clamp is None else clamp[t]


def plastic_step(
    pw: HebbianPathway,
    pre: torch.Tensor,
    hebb: torch.Tensor | None,
    f: Callable[[torch.Tensor], torch.Tensor],
    drive: torch.Tensor | None = None,
    clamp: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One step of a population fed through the Hebbian pathway ``pw`` (Miconi et al. eq. 1)::

        u = w pre + b + (α ⊙ Hebb) pre   [+ drive, unless clamped]
        r = f(u),  or r = drive on the units where ``clamp`` is True
        Hebb' = (1 − η) Hebb + η r preᵀ   (pw.step_trace; None stays None: α fixed at 0)

    Returns (r, u, Hebb')."""
    u = pw(pre, hebb)
    if clamp is None:
        if drive is not None:
            u = u + drive
        r = f(u)
    else:
        r = torch.where(clamp, drive, f(u))
    return r, u, (pw.step_trace(hebb, pre, r) if hebb is not None else None)


def step_record(
    t: int,
    x: torch.Tensor,
    population: str,
    r: torch.Tensor,
    u: torch.Tensor,
    clamp: torch.Tensor | None,
    pw: HebbianPathway,
    pre: torch.Tensor,
    hebb: torch.Tensor | None,
    rates: dict[str, torch.Tensor] | None = None,
    currents: dict[str, torch.Tensor] | None = None,
) -> Step:
    """The :class:`Step` of :func:`plastic_step` on ``population`` (plus any other
    populations' ``rates`` and ``currents`` computed at this step)."""
    return Step(
        t,
        x,
        {**(rates or {}), population: r},
        {**(currents or {}), population: u},
        {population: clamp} if clamp is not None else {},
        {pw.name: pre},
        {pw.name: hebb} if hebb is not None else {},
        {pw.name: r},
    )


def _alpha(spec, shape: tuple, generator: torch.Generator) -> torch.Tensor:
    """Initial α: an Init (drawn), a number (every α equal to it), None (N(0, 0.01²))."""
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        return torch.full(shape, float(spec))
    return _init.resolve(spec, _init.normal(0.01))(shape, generator)


def over_time(pathway: Pathway, r: torch.Tensor, n_target: int) -> torch.Tensor:
    """A pathway applied to rates of every step at once, (time, batch, n) -> (time, batch,
    n_target): one matrix product for all steps."""
    n_t, n_b = r.shape[0], r.shape[1]
    if n_t == 0:
        return r.new_zeros(0, n_b, n_target)
    return pathway(r.reshape(n_t * n_b, -1)).reshape(n_t, n_b, n_target)
