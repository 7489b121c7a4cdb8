"""Circuits: populations joined by pathways, as a ``torch.nn.Module``.

A layered circuit (all populations ``instant``) runs a feedforward *sweep*
in topological order of its feedforward pathways::

    u_q = Σ_{p -> q feedforward} W_{q p} r_p + b_q,      r_q = f_q(u_q)

and because the circuit is an ``nn.Module`` whose sweep is plain torch, the
backprop reference is autograd on this very object.  Feedback pathways
(installed by rules) are listed beside the forward ones but take no part in
the sweep.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from bioprop.core import init as _init
from bioprop.core import seeding
from bioprop.core.pathway import Pathway
from bioprop.core.population import Population

__all__ = ["Circuit", "SweepState", "layer_names"]


@dataclass
class SweepState:
    """What one forward sweep leaves behind: pre-activations ``u`` and rates ``r``
    per population (batch-first tensors).  Inputs have ``r`` only."""

    u: dict[str, torch.Tensor]
    r: dict[str, torch.Tensor]


def layer_names(sizes: Sequence[int]) -> list[str]:
    """Population names of a layered chain: ``input``, ``hidden`` (one hidden layer) or
    ``hidden1 … hiddenK``, ``output``; refuses fewer than two sizes."""
    if len(sizes) < 2:
        raise ValueError(f"layered circuit needs at least 2 sizes (input, output), got {sizes}")
    n_hidden = len(sizes) - 2
    hidden = ["hidden"] if n_hidden == 1 else [f"hidden{i + 1}" for i in range(n_hidden)]
    return ["input", *hidden, "output"]


class Circuit(nn.Module):
    """Populations + pathways + designated input and output populations.

    Parameters
    ----------
    seed
        Seed of the generator that draws initial weights, so a circuit built
        twice with the same seed has the same weights.

    Examples
    --------
    >>> c = Circuit(seed=0)
    >>> c.add_population("input", 30)
    >>> c.add_population("hidden", 20, activation="tanh")
    >>> c.add_population("output", 10)
    >>> c.connect("input", "hidden", init=bioprop.core.init.uniform(0.01))
    >>> c.connect("hidden", "output", init=bioprop.core.init.uniform(0.01))
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        self.populations: dict[str, Population] = {}
        self.pathways = nn.ModuleDict()
        self.seed = int(seed)
        self.generator = seeding.generator(self.seed, "weights")
        self._input: str | None = None
        self._output: str | None = None
        self._order: list[str] | None = None

    # -- building -------------------------------------------------------------------------
    @classmethod
    def layered(
        cls,
        sizes: Sequence[int],
        activation: str = "tanh",
        output_activation: str | None = None,
        init: _init.Init | str | None = None,
        bias: bool = True,
        seed: int = 0,
        dynamics: str = "instant",
        tau: float = 1.0,
    ) -> Circuit:
        """A chain ``input -> hidden1 -> ... -> output`` of populations.

        With one hidden layer it is called ``hidden``.  ``output_activation``
        defaults to ``activation``.  ``init`` defaults to ``kaiming_uniform()``.
        ``dynamics``/``tau`` apply to every population but the input, which is
        always ``instant`` (clamped); subclasses get an instance of their own class.
        """
        sizes = list(sizes)
        names = layer_names(sizes)
        c = cls(seed=seed)
        for i, (name, n) in enumerate(zip(names, sizes, strict=True)):
            if i == 0:
                c.add_population(name, n, activation="linear")
                continue
            act = (output_activation or activation) if i == len(sizes) - 1 else activation
            c.add_population(name, n, activation=act, dynamics=dynamics, tau=tau)
        for a, b in zip(names[:-1], names[1:], strict=True):
            c.connect(a, b, init=init, bias=bias)
        return c

    def add_population(
        self,
        name: str,
        size: int,
        activation: str = "linear",
        dynamics: str = "instant",
        tau: float = 1.0,
        model: object | None = None,
        signs=None,
    ) -> Population:
        """Add a population; returns it.

        Without ``model`` it is a rate population (``signs``: a sign per unit of a
        ``"rectilinear"`` one, see :class:`Population`).  With a spiking neuron model or encoder
        from :mod:`bioprop.spiking` (``model=bioprop.spiking.LIF()``,
        ``PoissonEncoder(...)``) it is a :class:`bioprop.spiking.SpikingPopulation`,
        simulated by brian2 (:func:`bioprop.spiking.run`), not by :meth:`sweep`.
        """
        if name in self.populations:
            raise ValueError(f"population {name!r} already exists in this circuit")
        if model is not None:
            from bioprop.spiking.neurons import SpikingPopulation  # brian2: import on demand

            pop = SpikingPopulation(name, size, model)
        else:
            pop = Population(
                name, size, activation=activation, dynamics=dynamics, tau=tau, signs=signs
            )
        self.populations[name] = pop
        self._order = None
        return pop

    def _check_population(self, name: str, what: str) -> Population:
        if name not in self.populations:
            known = ", ".join(self.populations) or "(none yet: call add_population first)"
            raise ValueError(f"{what}: unknown population {name!r}; the circuit has {known}")
        return self.populations[name]

    def connect(
        self,
        source: str,
        target: str,
        *,
        weight: torch.Tensor | None = None,
        init: _init.Init | str | None = None,
        bias: bool | torch.Tensor = False,
        role: str = "feedforward",
        plastic: bool = True,
        mirrors: str | None = None,
        name: str | None = None,
    ) -> Pathway:
        """Add a pathway ``source -> target`` with weight (target.size x source.size).

        Give either an explicit ``weight`` or an ``init`` (default
        ``kaiming_uniform()``).  Raises ``ValueError`` for unknown populations,
        a weight of the wrong shape, a duplicate name, or a feedforward
        pathway that closes a cycle among instant populations (a sweep needs
        an acyclic graph).
        """
        src = self._check_population(source, f"connect({source!r}, {target!r})")
        dst = self._check_population(target, f"connect({source!r}, {target!r})")
        shape = (dst.size, src.size)
        if weight is not None:
            if init is not None:
                raise ValueError(f"connect({source!r}, {target!r}): give weight or init, not both")
            weight = torch.as_tensor(weight, dtype=torch.float32)
            if tuple(weight.shape) != shape:
                raise ValueError(
                    f"connect({source!r}, {target!r}): weight must have shape "
                    f"(target.size, source.size) = {shape} (post x pre), got {tuple(weight.shape)}"
                )
            used_init = None
        else:
            used_init = _init.resolve(init, _init.kaiming_uniform())
            weight = used_init(shape, self.generator)
        if isinstance(bias, torch.Tensor):
            b = bias
        else:
            b = torch.zeros(dst.size) if bias else None
        p = Pathway(
            source,
            target,
            weight,
            b,
            role=role,
            plastic=plastic,
            mirrors=mirrors,
            init=used_init,
            name=name,
        )
        return self.add_pathway(p)

    def add_pathway(self, pathway: Pathway) -> Pathway:
        """Add a ready-made pathway (rules use this to install feedback pathways)."""
        for end in (pathway.source, pathway.target):
            self._check_population(end, f"pathway {pathway.name!r}")
        if pathway.name in self.pathways:
            raise ValueError(
                f"pathway {pathway.name!r} already exists; pass name=... to connect() to add a "
                "second pathway between the same populations"
            )
        n_post, n_pre = pathway.shape
        want = (self.populations[pathway.target].size, self.populations[pathway.source].size)
        if (n_post, n_pre) != want:
            raise ValueError(
                f"pathway {pathway.name!r}: weight shape {(n_post, n_pre)} does not match "
                f"(target.size, source.size) = {want}"
            )
        if pathway.mirrors is not None and pathway.mirrors not in self.pathways:
            raise ValueError(
                f"pathway {pathway.name!r} mirrors {pathway.mirrors!r}, which this circuit does "
                f"not have; its pathways: {sorted(self.pathways)}"
            )
        if pathway.role == "feedforward":
            src, dst = self.populations[pathway.source], self.populations[pathway.target]
            if src.dynamics == "instant" and dst.dynamics == "instant":
                cycle = self._path(pathway.target, pathway.source)
                if cycle is not None:
                    loop = " -> ".join([pathway.source, *cycle])
                    raise ValueError(
                        f"feedforward pathway {pathway.name!r} closes a cycle ({loop}); a "
                        "feedforward sweep needs an acyclic graph. Use role='lateral' or "
                        "populations with dynamics='leaky' for a settling circuit"
                    )
        ref = next(self.parameters(), None)
        if ref is not None:  # new pathways follow the circuit's dtype and device
            pathway.to(device=ref.device, dtype=ref.dtype)
        self.pathways[pathway.name] = pathway
        self._order = None
        return pathway

    def remove_pathway(self, name: str) -> None:
        """Remove a pathway (rules detaching their feedback pathways use this)."""
        if name not in self.pathways:
            raise KeyError(f"no pathway {name!r}")
        del self.pathways[name]
        self._order = None

    def _path(self, start: str, goal: str) -> list[str] | None:
        """A list of populations from start to goal along feedforward pathways, or None."""
        stack = [(start, [start])]
        seen = set()
        while stack:
            node, path = stack.pop()
            if node == goal:
                return path
            if node in seen:
                continue
            seen.add(node)
            for p in self.feedforward_pathways():
                if p.source == node:
                    stack.append((p.target, [*path, p.target]))
        return None

    # -- structure -----------------------------------------------------------------------
    def feedforward_pathways(self) -> Iterator[Pathway]:
        return (p for p in self.pathways.values() if p.role == "feedforward")

    def feedback_pathways(self) -> Iterator[Pathway]:
        return (p for p in self.pathways.values() if p.role == "feedback")

    def incoming(self, population: str, role: str = "feedforward") -> list[Pathway]:
        return [p for p in self.pathways.values() if p.target == population and p.role == role]

    def outgoing(self, population: str, role: str = "feedforward") -> list[Pathway]:
        return [p for p in self.pathways.values() if p.source == population and p.role == role]

    def _endpoint(which: str, doc: str) -> property:  # noqa: N805 (a property factory)
        attr = f"_{which}"  # read on every step by the rules: build the name once

        def get(self) -> str:
            value = getattr(self, attr)
            if value is None:
                self._resolve_io()
                value = getattr(self, attr)
            return value

        def set(self, name: str) -> None:
            self._check_population(name, which)
            setattr(self, attr, name)
            self._order = None

        return property(get, set, doc=doc)

    input = _endpoint(
        "input", "Name of the input population (the one no feedforward pathway reaches)."
    )
    output = _endpoint(
        "output", "Name of the output population (the one no feedforward pathway leaves)."
    )
    del _endpoint

    def _resolve_io(self) -> None:
        if not self.populations:
            raise ValueError("the circuit has no populations yet")
        ff = list(self.feedforward_pathways())
        targets = {p.target for p in ff}
        sources = {p.source for p in ff}
        if self._input is None:
            cands = [n for n in self.populations if n not in targets]
            if len(cands) != 1:
                raise ValueError(
                    f"cannot tell the input population: candidates {cands}; set circuit.input"
                )
            self._input = cands[0]
        if self._output is None:
            cands = [n for n in self.populations if n not in sources and n != self._input]
            if len(cands) != 1:
                raise ValueError(
                    f"cannot tell the output population: candidates {cands}; set circuit.output"
                )
            self._output = cands[0]

    def order(self) -> list[str]:
        """Populations in sweep (topological) order, input first."""
        if self._order is None:
            ff = list(self.feedforward_pathways())
            indeg = {n: 0 for n in self.populations}
            for p in ff:
                indeg[p.target] += 1
            ready = [n for n in self.populations if indeg[n] == 0]
            out = []
            while ready:
                n = ready.pop(0)
                out.append(n)
                for p in ff:
                    if p.source == n:
                        indeg[p.target] -= 1
                        if indeg[p.target] == 0:
                            ready.append(p.target)
            if len(out) != len(self.populations):
                raise ValueError("feedforward pathways form a cycle; this circuit cannot sweep")
            reached = {p.target for p in ff}
            unreached = [n for n in out if n not in reached and n != self.input]
            if unreached:
                raise ValueError(
                    f"populations {unreached} receive no feedforward input and are not the "
                    f"input population {self.input!r}; connect them or remove them"
                )
            self._order = out
            self._incoming = {n: self.incoming(n) for n in out}
            self._spiking = [n for n in out if self.populations[n].kind == "spiking"]
        return self._order

    @property
    def kind(self) -> str:
        """The circuit kind, which decides the rules that can train it and the loop that
        runs them: ``"spiking"`` (a population simulated by brian2), ``"settling"`` (a
        ``leaky`` population: the circuit relaxes to a fixed point), else ``"layered"``
        (a feedforward sweep).  :class:`bioprop.recurrent.RecurrentCircuit` is
        ``"recurrent"``."""
        pops = self.populations.values()
        if any(p.kind == "spiking" for p in pops):
            return "spiking"
        if any(getattr(p, "dynamics", "instant") == "leaky" for p in pops):
            return "settling"
        return "layered"

    def hidden(self) -> list[str]:
        """Populations that are neither input nor output, in sweep order."""
        return [n for n in self.order() if n not in (self.input, self.output)]

    def plastic_parameters(self) -> list[nn.Parameter]:
        """Every parameter a rule may write ``.grad`` into (for the optimizer)."""
        return [p for p in self.parameters() if p.requires_grad]

    # -- running -------------------------------------------------------------------------
    def sweep(self, x: torch.Tensor, noise: dict[str, torch.Tensor] | None = None) -> SweepState:
        """Feedforward sweep; returns ``u`` and ``r`` of every population.

        ``noise`` adds a perturbation ξ_p to the pre-activation of the named
        populations, u_p ← u_p + ξ_p (node perturbation uses this).
        """
        order = self.order()
        inp = self.input
        if getattr(self, "_spiking", None):
            raise ValueError(
                f"populations {self._spiking} are spiking: simulate this circuit with "
                "bioprop.spiking.run (brian2), not with sweep()"
            )
        if x.dim() != 2 or x.shape[1] != self.populations[inp].size:
            raise ValueError(
                f"input must have shape (batch, {self.populations[inp].size}) for population "
                f"{inp!r}, got {tuple(x.shape)}"
            )
        u: dict[str, torch.Tensor] = {}
        r: dict[str, torch.Tensor] = {inp: x}
        for name in order:
            if name == inp:
                continue
            total = None
            for p in self._incoming[name]:
                contribution = p.forward(r[p.source])
                total = contribution if total is None else total + contribution
            if noise is not None and name in noise:
                total = total + noise[name]
            u[name] = total
            r[name] = self.populations[name].act.f(total)
        return SweepState(u, r)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Output rates for a batch of inputs."""
        return self.sweep(x).r[self.output]

    def describe(self) -> str:
        lines = [f"Circuit(seed={self.seed}): input={self.input!r}, output={self.output!r}"]
        for name in self.order():
            p = self.populations[name]
            lines.append(f"  population {name:<10} {p.size:>6} units  {p.activation}")
        for p in self.pathways.values():
            n_post, n_pre = p.shape
            lines.append(
                f"  pathway    {p.name:<20} {n_post}x{n_pre}  {p.role:<11} "
                f"{'plastic' if p.plastic else 'fixed'}"
                + (f"  mirrors {p.mirrors}" if p.mirrors else "")
            )
        return "\n".join(lines)
