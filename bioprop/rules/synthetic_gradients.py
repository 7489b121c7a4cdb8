"""Synthetic gradients: decoupled neural interfaces (DNI, cDNI) and virtual forward-backward
networks (VFBN) on feedforward circuits.

Notation as in ``docs/rules.md``: population l has pre-activation u_l and rate
h_l = r_l = f_l(u_l); ℓ_n is the per-sample loss.  An *interface* is a hidden population
l whose layer below learns from a **synthetic gradient** instead of the gradient
backpropagated from above:

* **dni** (Jaderberg et al. 2017, ICML, "Decoupled neural interfaces using synthetic
  gradients")::

      ĝ_l = M_l(h_l)                        ≈ ∂ℓ/∂h_l         (M_l linear or an MLP,
                                                                last layer zero-initialised)
      δ_l = f_l'(u_l) ⊙ ĝ_l                                   (the layer below updates at once)
      δ̃_l = Σ_{l->q} W_{q l}ᵀ δ_q                             (backprop across the layer above,
                                                                δ_q built on ĝ_q: bootstrapping;
                                                                the true error e at the top)
      L_M = ⟨½ ‖ĝ_l − δ̃_l‖²⟩                                  (trains M_l)

* **cdni**: M_l also sees the label, ĝ_l = M_l(h_l ⊕ y) with y one-hot (or the regression
  target itself).

* **vfbn** (Miyato, Okanohara, Maeda & Koyama 2017, ICLR workshop, "Synthetic gradient
  methods with virtual forward-backward networks")::

      ĝ_l = v_f'(h_l)ᵀ ∂ℓ(y, f_out(v_f(h_l)))/∂r_out         (a small virtual forward network
                                                                v_f: h_l -> output, and its own
                                                                backward pass)

  v_f is fitted to imitate the real upper network: ``fit="gradient"`` (default) regresses
  ĝ_l on δ̃_l (L_M above, by double backprop), ``fit="output"`` regresses v_f(h_l) on the
  real output pre-activation u_out, ``fit="both"`` adds the two; ``fit="task"`` instead
  trains v_f on the task loss ℓ(y, f_out(v_f(h_l))) itself — the *local supervised head*
  baseline.

**Update probability** ``p_update`` (Jaderberg et al., the stochastic-update experiment): on
each step every layer (the pathways into a non-input population) updates with probability
p, independently.  A layer that does not update gets ``.grad = None`` (``torch.optim``
skips it entirely, momentum and weight decay included).  A module M_l is trained on the
steps on which the layer above its interface updates (that layer's backward pass is what
delivers the target δ̃_l).

Between interfaces the teaching signal is ordinary backprop (δ_p = f'(u_p) ⊙ Σ Wᵀ δ_q), so
with ``interfaces=[one population]`` a circuit splits into a bottom and a top block.  The
layer below an interface never reads a weight above it: that is the locality the tests
check.

The modules are feedback pathways (:class:`SyntheticGradientPathway`, :class:`VFBNPathway`)
listed in ``circuit.pathways`` with ``role="feedback"`` and ``plastic=True``, named
``sg:<population>`` / ``vfbn:<population>``, with source = target = the interface
population.  The rule writes their parameters' ``.grad`` so the trainer's optimizer trains
them with the circuit.  On recording steps the rule records, per interface, the synthetic
gradient ĝ_l, the true ∂ℓ_n/∂h_l (autograd, same batch and weights) and the bootstrapped
target δ̃_l in the group ``interfaces/<population>`` (see :mod:`bioprop.analysis.dni`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from bioprop.core import activations as _activations
from bioprop.core import init as _init
from bioprop.core.circuit import Circuit, SweepState
from bioprop.core.losses import Loss
from bioprop.core.pathway import Pathway
from bioprop.rules.contract import Rule, Signals, write_pathway_grads
from bioprop.rules.registry import register

__all__ = [
    "MODULE_KINDS",
    "VFBN_FITS",
    "SyntheticGradientPathway",
    "VFBNPathway",
    "DNI",
    "ConditionalDNI",
    "VFBN",
    "true_rate_gradients",
    "module_parameters",
    "optimizer",
]

MODULE_KINDS = ("linear", "mlp")
VFBN_FITS = ("gradient", "output", "both", "task")


# ---------------------------------------------------------------------------------------------
# modules as pathways
# ---------------------------------------------------------------------------------------------
class _ModulePathway(Pathway):
    """A feedback pathway whose map is a small network ``net`` rather than one matrix.

    ``weight`` is not a parameter here but a *view*: :meth:`effective_weight` (post x pre =
    interface x interface), recomputed from ``net`` when read, with ``.grad`` set to its
    first-order change along the parameters' current ``.grad`` (dE for dθ = ``.grad``),
    so a recording's ``weight_update`` (−``weight.grad``) is the change of the effective
    weight per unit learning rate, to first order.  The module's biases live in ``net``;
    ``bias`` is None.
    """

    columns: int | None = None  # how many of the first layer's input columns belong to h

    def __init__(self, population: str, name: str, net: nn.Module) -> None:
        nn.Module.__init__(self)
        self.source = population
        self.target = population
        self.interface = population
        self.role = "feedback"
        self.mirrors = None
        self.init = None
        self.name = name
        self._plastic = True
        self.bias = None
        self.net = net

    # -- the Pathway interface --------------------------------------------------------------
    def own_parameters(self) -> list[nn.Parameter]:
        return list(self.net.parameters())

    def _linear_weights(self) -> list[nn.Parameter]:
        return [m.weight for m in self.net if isinstance(m, nn.Linear)]

    def _chain(self, tangent: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """P = W_L ⋯ W_1 (first layer restricted to the h columns) and, with ``tangent``,
        its change dP = Σ_k W_L ⋯ dW_k ⋯ W_1 along the parameters' ``.grad``."""
        ws = self._linear_weights()
        cols = slice(None) if self.columns is None else slice(0, self.columns)

        def grad(w):
            return w.grad.detach() if w.grad is not None else torch.zeros_like(w)

        with torch.no_grad():
            p = ws[0].detach()[:, cols].clone()
            dp = grad(ws[0])[:, cols].clone() if tangent else None
            for w in ws[1:]:
                wd = w.detach()
                if tangent:
                    dp = grad(w) @ p + wd @ dp  # d(W P) = dW P + W dP
                p = wd @ p
        return p, dp

    def _effective(self, p: torch.Tensor, dp: torch.Tensor | None):
        """(effective weight, its change) from the chain (P, dP)."""
        return p, dp

    def effective_weight(self) -> torch.Tensor:
        return self._effective(*self._chain(False))[0]

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        """The effective weight, with ``.grad`` = its change along the parameters' ``.grad``."""
        has_grad = any(p.grad is not None for p in self.net.parameters())
        w, dw = self._effective(*self._chain(has_grad))
        if dw is not None:
            w.grad = dw
        return w

    def forward(self, r_source: torch.Tensor) -> torch.Tensor:
        raise TypeError(
            f"{type(self).__name__} {self.name!r} is a synthetic-gradient module: call "
            "predict(h, y, loss) (it needs the label), not forward()"
        )

    def predict(
        self, h: torch.Tensor, y: torch.Tensor, loss: Loss, create_graph: bool = False
    ) -> torch.Tensor:
        """ĝ = ∂ℓ/∂h predicted from the interface's rates ``h`` (sample x neuron)."""
        raise NotImplementedError

    def describe(self) -> dict:
        d = super().describe()
        d["interface"] = self.interface
        return d


def _linear(n_in: int, n_out: int, generator: torch.Generator, zero: bool) -> nn.Linear:
    """A linear layer drawn from ``generator``: kaiming-uniform (gain √2, for ReLU) or zeros."""
    layer = nn.Linear(n_in, n_out)
    with torch.no_grad():
        if zero:
            layer.weight.zero_()
        else:
            layer.weight.copy_(_init.kaiming_uniform(math.sqrt(2.0))((n_out, n_in), generator))
        layer.bias.zero_()
    return layer


def _check_hidden(hidden: Sequence[int], what: str) -> tuple[int, ...]:
    try:
        out = tuple(int(h) for h in hidden)
    except TypeError:
        raise TypeError(
            f"{what}: hidden must be a sequence of layer sizes, got {hidden!r}"
        ) from None
    if any(h < 1 for h in out) or any(h != float(x) for h, x in zip(out, hidden, strict=True)):
        raise ValueError(f"{what}: hidden layer sizes must be positive integers, got {hidden!r}")
    return out


def _labels(y: torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    """One-hot rows for integer labels; float targets pass through (cast like ``like``)."""
    if y.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8):
        return torch.nn.functional.one_hot(y.long(), n).to(like.dtype)
    if y.dim() != 2 or y.shape[1] != n:
        raise ValueError(f"labels of shape {tuple(y.shape)} do not have {n} columns")
    return y.to(like.dtype)


class SyntheticGradientPathway(_ModulePathway):
    """A DNI synthetic-gradient module M_l at interface population l (Jaderberg et al. 2017).

    ĝ_l = M_l(h_l)  (dni)  or  M_l(h_l ⊕ y)  (cdni, ``n_label > 0``).

    ``kind="linear"``: ĝ = A h (+ C y) + b, all zero at start.  ``kind="mlp"``: Linear →
    ReLU → … → Linear with ``hidden`` sizes, the last layer zero-initialised (so ĝ = 0 at
    start, as in the paper; the paper's batch norm inside M is left out).

    Effective weight (recorded as ``weight``, interface x interface): for ``linear`` the
    matrix A itself; for ``mlp`` the product W_L ⋯ W_1[:, :n] of its linear maps — the map
    the MLP applies to h where all its ReLUs are active.  The label columns (cdni) and the
    biases are not part of it.
    """

    def __init__(
        self,
        population: str,
        size: int,
        *,
        kind: str = "linear",
        hidden: Sequence[int] = (1024, 1024),
        n_label: int = 0,
        generator: torch.Generator | None = None,
        name: str | None = None,
    ) -> None:
        if kind not in MODULE_KINDS:
            raise ValueError(
                f"unknown synthetic-gradient module {kind!r}; choose one of "
                f"{', '.join(repr(k) for k in MODULE_KINDS)}"
            )
        generator = generator or torch.Generator().manual_seed(0)
        hidden = _check_hidden(hidden, f"synthetic-gradient module at {population!r}")
        if kind == "linear":
            hidden = ()
        sizes = [size + n_label, *hidden, size]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            last = i == len(sizes) - 2
            layers.append(_linear(a, b, generator, zero=last))
            if not last:
                layers.append(nn.ReLU())
        super().__init__(population, name or f"sg:{population}", nn.Sequential(*layers))
        self.kind = kind
        self.hidden = hidden
        self.size = size
        self.n_label = n_label
        self.columns = size

    def predict(self, h, y, loss=None, create_graph=False):
        """ĝ_l = M_l(h_l) or M_l(h_l ⊕ y)."""
        if self.n_label:
            h = torch.cat([h, _labels(y, self.n_label, h)], dim=1)
        return self.net(h)

    def describe(self) -> dict:
        d = super().describe()
        d.update(
            module=self.kind,
            hidden=list(self.hidden),
            conditioned=int(self.n_label > 0),
            effective_weight=(
                "A (the h columns)"
                if self.kind == "linear"
                else "W_L...W_1[:, :n], the MLP's map where all ReLUs are active"
            ),
        )
        return d


class VFBNPathway(_ModulePathway):
    """A virtual forward-backward network at interface population l (Miyato et al. 2017).

    v_f: h_l -> u_v (output size) is Linear → act → … → Linear (``hidden`` sizes, last layer
    zero-initialised), r_v = f_out(u_v) with the circuit's output activation, and

        ĝ_l = ∂ℓ(y, r_v)/∂h_l = v_f'(h_l)ᵀ ∂ℓ/∂u_v        (autograd through v_f only)

    Effective weight (recorded as ``weight``, interface x interface): PᵀP, where
    P = W_L ⋯ W_1 is v_f's linear-equivalent map (n_out x n) — with a linear v_f and squared
    error, ĝ = PᵀP h + Pᵀ(c − y), so PᵀP is exactly the weight h enters ĝ with.
    """

    def __init__(
        self,
        population: str,
        size: int,
        n_out: int,
        *,
        hidden: Sequence[int] = (),
        activation: str = "relu",
        output_activation: str = "linear",
        generator: torch.Generator | None = None,
        name: str | None = None,
    ) -> None:
        generator = generator or torch.Generator().manual_seed(0)
        hidden = _check_hidden(hidden, f"VFBN at {population!r}")
        self_act = _activations.get(activation)
        sizes = [size, *hidden, n_out]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            last = i == len(sizes) - 2
            layers.append(_linear(a, b, generator, zero=last))
            if not last:
                layers.append(_Act(self_act))
        super().__init__(population, name or f"vfbn:{population}", nn.Sequential(*layers))
        self.hidden = hidden
        self.size = size
        self.n_out = n_out
        self.activation = self_act.name
        self.out_act = _activations.get(output_activation)

    def linear_layers(self) -> list[nn.Linear]:
        """v_f's linear layers, bottom first (to copy an upper network into, for example)."""
        return [m for m in self.net if isinstance(m, nn.Linear)]

    def copy_from(self, pathways: Sequence[Pathway]) -> None:
        """Make v_f a copy of a chain of forward pathways (bottom first), e.g. the real upper
        network — then ĝ_l is backprop's ∂ℓ/∂h_l exactly (the sanity limit of the tests)."""
        layers = self.linear_layers()
        if len(layers) != len(pathways):
            raise ValueError(
                f"{self.name}: v_f has {len(layers)} linear layers, got {len(pathways)} pathways"
            )
        with torch.no_grad():
            for layer, pw in zip(layers, pathways, strict=True):
                w = pw.effective_weight()
                if layer.weight.shape != w.shape:
                    raise ValueError(
                        f"{self.name}: layer of shape {tuple(layer.weight.shape)} cannot copy "
                        f"{pw.name!r} of shape {tuple(w.shape)}"
                    )
                layer.weight.copy_(w)
                if pw.bias is not None:
                    layer.bias.copy_(pw.bias)
                else:
                    layer.bias.zero_()

    def _effective(self, p, dp):
        """E = PᵀP, dE = dPᵀP + PᵀdP."""
        e = p.t() @ p
        return e, (None if dp is None else dp.t() @ p + p.t() @ dp)

    def virtual_output(self, h: torch.Tensor) -> torch.Tensor:
        """u_v = v_f(h): the virtual output pre-activation."""
        return self.net(h)

    def predict(self, h, y, loss, create_graph=False):
        """ĝ_l = ∂ℓ_n(y, f_out(v_f(h_l)))/∂h_l per sample (not divided by the batch size)."""
        return self.predict_with_output(h, y, loss, create_graph)[0]

    def predict_with_output(
        self,
        h: torch.Tensor,
        y: torch.Tensor,
        loss: Loss,
        create_graph: bool = False,
        keep_output_graph: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(ĝ_l, u_v): the synthetic gradient and the virtual output it came from
        (``keep_output_graph``: u_v stays differentiable in v_f's parameters)."""
        with torch.enable_grad():
            hh = h.detach().requires_grad_(True)
            u_v = self.net(hh)
            ell = loss.per_sample(self.out_act.f(u_v), y).sum()  # Σ_n ℓ_n: ∂/∂h_n = ∂ℓ_n/∂h_n
            (g,) = torch.autograd.grad(
                ell, hh, create_graph=create_graph, retain_graph=create_graph or keep_output_graph
            )
        return g, u_v

    def describe(self) -> dict:
        d = super().describe()
        d.update(
            module="vfbn",
            hidden=list(self.hidden),
            activation=self.activation,
            output_activation=self.out_act.name,
            effective_weight="P^T P, P = W_L...W_1 the virtual forward network's linear map",
        )
        return d


class _Act(nn.Module):
    """An activation from :mod:`bioprop.core.activations` as an ``nn.Module``."""

    def __init__(self, act: _activations.Activation) -> None:
        super().__init__()
        self.act = act

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.act.f(u)

    def extra_repr(self) -> str:
        return self.act.name


# ---------------------------------------------------------------------------------------------
# the rules
# ---------------------------------------------------------------------------------------------
def true_rate_gradients(
    circuit: Circuit, x: torch.Tensor, y: torch.Tensor, loss: Loss, populations: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Backprop's ∂ℓ_n/∂h_l per sample for the named populations (autograd on a fresh
    sweep; ``.grad`` untouched) — the gradient a synthetic gradient stands in for."""
    with torch.enable_grad():
        state = circuit.sweep(x.detach().requires_grad_(True))  # a graph even if all is frozen
        hs = [state.r[p] for p in populations]
        L = loss(state.r[circuit.output], y)
        grads = torch.autograd.grad(L, hs, allow_unused=True)
    n = x.shape[0]
    return {
        p: (g * n if g is not None else torch.zeros_like(h))
        for p, g, h in zip(populations, grads, hs, strict=True)
    }


def module_parameters(circuit: Circuit) -> list[nn.Parameter]:
    """The parameters of the circuit's synthetic-gradient / VFBN modules."""
    return [
        p
        for pw in circuit.feedback_pathways()
        if isinstance(pw, _ModulePathway)
        for p in pw.own_parameters()
        if p.requires_grad
    ]


def optimizer(
    name: str = "adam", lr: float = 1e-4, module_lr: float | None = None, **kwargs: Any
) -> Callable[[Circuit], torch.optim.Optimizer]:
    """An optimizer spec for :func:`bioprop.train` with its own learning rate for the modules.

    One ``torch.optim`` optimizer with two parameter groups: the circuit's other plastic
    parameters at ``lr`` and the synthetic-gradient / VFBN modules at ``module_lr``
    (default ``lr``).  Modules start at zero and must learn before the layers below can,
    so a larger ``module_lr`` helps on short budgets.

    >>> opt = optimizer("adam", lr=1e-4, module_lr=1e-3)
    >>> # bp.train(circuit, "cdni", data, optimizer=opt, ...)
    """
    classes = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "sgd": torch.optim.SGD,
        "rmsprop": torch.optim.RMSprop,
    }
    if name not in classes:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {list(classes)}")

    def make(circuit: Circuit) -> torch.optim.Optimizer:
        mods = module_parameters(circuit)
        ids = {id(p) for p in mods}
        rest = [p for p in circuit.plastic_parameters() if id(p) not in ids]
        groups = [{"params": rest, "lr": lr}]
        if mods:
            groups.append({"params": mods, "lr": lr if module_lr is None else module_lr})
        return classes[name](groups, lr=lr, **kwargs)

    make.__name__ = f"{name}(lr={lr}, module_lr={module_lr})"
    return make


def _check_probability(p: Any) -> float:
    ok = isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 <= float(p) <= 1.0
    if not ok:
        raise ValueError(
            f"p_update must be a probability in [0, 1] (each layer updates on a step with "
            f"probability p_update), got {p!r}"
        )
    return float(p)


class _InterfaceRule(Rule):
    """Shared machinery of dni, cdni and vfbn: interfaces, update masks, bootstrapped targets."""

    module_prefix = "sg"

    def __init__(self, interfaces: Sequence[str] | None = None, p_update: float = 1.0) -> None:
        super().__init__()
        self.p_update = _check_probability(p_update)
        if isinstance(interfaces, str):
            interfaces = [interfaces]
        self.interfaces_requested = list(interfaces) if interfaces is not None else None
        self.modules: dict[str, _ModulePathway] = {}
        self.update_counts: dict[str, int] = {}
        self.steps = 0
        self._mask_generator = torch.Generator().manual_seed(0)

    # -- attaching ---------------------------------------------------------------------------
    def install(self, circuit: Circuit, generator: torch.Generator) -> None:
        hidden = circuit.hidden()
        chosen = hidden if self.interfaces_requested is None else self.interfaces_requested
        for pop in chosen:
            if pop not in hidden:
                raise ValueError(
                    f"rule {self.name!r}: interface {pop!r} is not a hidden population of the "
                    f"circuit; choose from {hidden} (the input has no layer below it, the "
                    "output gets the true error)"
                )
            if not circuit.outgoing(pop):
                raise ValueError(
                    f"rule {self.name!r}: interface {pop!r} has no forward pathway leaving it"
                )
        self.interfaces = [p for p in hidden if p in chosen]  # sweep order
        self.modules = {}
        for pop in self.interfaces:
            module = self._make_module(circuit, pop, generator)
            self._add(circuit, module)
            self.modules[pop] = module
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        self._mask_generator = torch.Generator().manual_seed(seed)
        self.layers = [p for p in circuit.order() if p != circuit.input]
        self.update_counts = {p: 0 for p in self.layers}
        self.steps = 0

    def _make_module(self, circuit: Circuit, pop: str, generator: torch.Generator):
        raise NotImplementedError

    # -- one step ----------------------------------------------------------------------------
    def _draw_updates(self) -> dict[str, bool]:
        """Which layers update this step: each independently with probability p_update."""
        if self.p_update >= 1.0:
            flags = [True] * len(self.layers)
        elif self.p_update <= 0.0:
            flags = [False] * len(self.layers)
        else:
            draws = torch.rand(len(self.layers), generator=self._mask_generator)
            flags = (draws < self.p_update).tolist()
        updated = dict(zip(self.layers, flags, strict=True))
        self.steps += 1
        for p, f in updated.items():
            self.update_counts[p] += int(f)
        return updated

    def _needed(self, circuit: Circuit, updated: dict[str, bool]) -> dict[str, bool]:
        """Whether δ_l (or ĝ_l) is needed this step: its layer updates, its module learns
        (the layer above updates), a non-interface population below backpropagates through
        it to a layer that needs it, or the step is recorded.  Skipping the rest saves the
        work of layers that do not update when p_update < 1."""
        needed: dict[str, bool] = {}
        for name in circuit.order():  # bottom up
            if name == circuit.input:
                needed[name] = False
                continue
            module_learns = name in self.modules and any(
                updated.get(pw.target, False) for pw in circuit.outgoing(name)
            )
            below = [
                pw.source
                for pw in circuit.incoming(name)
                if pw.source != circuit.input and pw.source not in self.modules
            ]
            needed[name] = (
                bool(updated.get(name, False))
                or module_learns
                or (self.recording and name in self.modules)
                or any(needed[p] for p in below)
            )
        return needed

    def _synthetic(self, module, h, y, loss, state, train: bool):
        """(ĝ with a graph to the module's parameters when ``train``, extra for the fit)."""
        if train:
            with torch.enable_grad():
                return module.predict(h, y, loss, create_graph=True), None
        with torch.no_grad():
            return module.predict(h, y, loss), None

    def _module_loss(self, module, pred, extra, target, state, y, loss) -> torch.Tensor:
        """L_M = ⟨½ ‖ĝ − δ̃‖²⟩ over the batch."""
        return 0.5 * ((pred - target) ** 2).sum(dim=1).mean()

    def teach(self, circuit: Circuit, state: SweepState, y: torch.Tensor, loss: Loss) -> Signals:
        out, inp = circuit.output, circuit.input
        updated = self._draw_updates()
        with torch.no_grad():
            act_out = circuit.populations[out].act
            e = loss.output_error(state.u[out], state.r[out], y, act_out)  # e = ∂ℓ/∂u_out
        delta: dict[str, torch.Tensor] = {out: e}
        synthetic: dict[str, torch.Tensor] = {}
        target: dict[str, torch.Tensor] = {}
        preds: dict[str, tuple[torch.Tensor, Any]] = {}
        needed = self._needed(circuit, updated)
        for name in reversed(circuit.order()):
            if name in (out, inp) or not needed[name]:
                continue
            module = self.modules.get(name)
            above = circuit.outgoing(name)
            # M_l learns on the steps on which the layer above runs its backward pass
            trains = module is not None and any(updated.get(pw.target, False) for pw in above)
            bp_part = None
            if module is None or trains:
                with torch.no_grad():  # δ̃_l = Σ_{l->q} W_{q l}ᵀ δ_q  (batch: δ_q W)
                    for pw in above:
                        d = delta.get(pw.target)
                        if d is None:
                            continue
                        back = d @ pw.effective_weight()
                        bp_part = back if bp_part is None else bp_part + back
            if module is not None:
                pred, extra = self._synthetic(module, state.r[name], y, loss, state, trains)
                preds[name] = (pred, extra)
                g = pred.detach()  # ĝ_l: reads h_l, y and M_l only
                synthetic[name] = g
                if trains and bp_part is not None:
                    target[name] = bp_part
            else:
                g = bp_part
            if g is None:
                continue
            pop = circuit.populations[name]
            with torch.no_grad():
                if pop.act.name != "linear":
                    g = g * pop.act.fprime(state.u[name], state.r[name])  # δ_l = f'(u_l) ⊙ ĝ_l
            delta[name] = g
        only = {pw.name for pw in circuit.feedforward_pathways() if updated.get(pw.target, False)}
        with torch.no_grad():
            write_pathway_grads(circuit, state, delta, only=only)
        module_loss: dict[str, float] = {}
        for name, module in self.modules.items():
            params = module.own_parameters()
            if name not in target or not module.plastic:
                for p in params:
                    p.grad = None
                continue
            pred, extra = preds[name]
            with torch.enable_grad():
                lm = self._module_loss(module, pred, extra, target[name], state, y, loss)
                if lm.requires_grad:
                    grads = torch.autograd.grad(lm, params, allow_unused=True)
                else:  # a prediction that does not depend on the parameters (an oracle)
                    grads = [None] * len(params)
            for p, gr in zip(params, grads, strict=True):
                p.grad = gr if gr is not None else torch.zeros_like(p)
            module_loss[name] = float(lm.detach())
        with torch.no_grad():
            L = loss(state.r[out], y)
        signals = Signals(
            L,
            state.r[out],
            delta,
            extra={
                "synthetic": synthetic,
                "target": target,
                "updated": updated,
                "module_loss": module_loss,
            },
        )
        if self.recording:
            signals.records = self._records(
                circuit, state, y, loss, synthetic, target, updated, module_loss
            )
        return signals

    # -- recording ---------------------------------------------------------------------------
    record_samples = 16

    def record_variables(self, circuit: Circuit, samples: int) -> dict[str, dict[str, Any]]:
        """``interfaces/<population>``: ``synthetic`` ĝ_l, ``true`` ∂ℓ_n/∂h_l (backprop),
        ``target`` δ̃_l (bootstrapped; NaN on steps the module does not learn) of dims
        ``(sample, neuron)``; scalars ``module_loss`` and ``updated`` (the layer below)."""
        from bioprop.recording.writer import ExtraVariable

        self.record_samples = samples
        out: dict[str, dict[str, Any]] = {}
        for pop in self.modules:
            n = circuit.populations[pop].size
            group: dict[str, Any] = {}
            if samples > 0:
                for var, long in (
                    ("synthetic", "synthetic gradient g_hat = M(h) ~ dl/dh per sample"),
                    ("true", "backprop's dl/dh per sample, same batch and weights"),
                    ("target", "bootstrapped target delta_tilde the module regresses on"),
                ):
                    group[var] = ExtraVariable(("sample", "neuron"), (samples, n), long)
            group["module_loss"] = ExtraVariable(
                (), (), "module loss L_M on this step (NaN when it did not learn)"
            )
            group["updated"] = ExtraVariable((), (), "1 if the layer below updated this step")
            out[f"interfaces/{pop}"] = group
        return out

    def _records(self, circuit, state, y, loss, synthetic, target, updated, module_loss):
        k = self.record_samples
        x = state.r[circuit.input]
        true = true_rate_gradients(circuit, x[:k], y[:k], loss, list(self.modules))
        recs: dict[str, dict[str, Any]] = {}
        for pop in self.modules:
            group: dict[str, Any] = {
                "module_loss": module_loss.get(pop, float("nan")),
                "updated": float(updated.get(pop, False)),
            }
            if k > 0:
                n = circuit.populations[pop].size
                nan = torch.full((k, n), float("nan"))
                for var, src in (("synthetic", synthetic), ("true", true), ("target", target)):
                    v = src.get(pop)
                    group[var] = _pad(v[:k], k) if v is not None else nan
            recs[f"interfaces/{pop}"] = group
        return recs

    # -- bookkeeping -------------------------------------------------------------------------
    def update_fraction(self) -> dict[str, float]:
        """Fraction of steps on which each layer updated (→ p_update over many steps)."""
        n = self.steps
        return {p: c / n if n else math.nan for p, c in self.update_counts.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "mask_generator": self._mask_generator.get_state(),
            "update_counts": dict(self.update_counts),
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "mask_generator" in state:
            self._mask_generator.set_state(state["mask_generator"])
        self.update_counts = dict(state.get("update_counts", self.update_counts))
        self.steps = int(state.get("steps", self.steps))

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "interfaces": (
                self.interfaces_requested if self.interfaces_requested is not None else "all hidden"
            ),
            "p_update": self.p_update,
        }


def _pad(t: torch.Tensor, k: int) -> torch.Tensor:
    t = t.detach().to("cpu", torch.float32)
    if t.shape[0] < k:
        t = torch.cat([t, torch.full((k - t.shape[0], t.shape[1]), float("nan"))])
    return t


@register
class DNI(_InterfaceRule):
    """Decoupled neural interfaces: every chosen interface h_l gets a synthetic-gradient
    module M_l, ĝ_l = M_l(h_l); the layer below learns from δ_l = f'(u_l) ⊙ ĝ_l at once, and
    M_l regresses on δ̃_l = Σ W_{q l}ᵀ δ_q (bootstrapped from the layer above's synthetic
    gradient, the true error at the top): L_M = ⟨½‖ĝ_l − δ̃_l‖²⟩.

    Parameters
    ----------
    module
        ``"linear"`` (ĝ = A h + b) or ``"mlp"`` (ReLU MLP with ``hidden`` sizes); the last
        layer is zero-initialised, so ĝ = 0 at the start.
    hidden
        Hidden layer sizes of an ``"mlp"`` module (Jaderberg et al.: two of 1024; ignored
        for ``"linear"``).
    interfaces
        Hidden populations that get a module (default: every hidden population, "DNI
        between every layer").  Between interfaces errors are backpropagated.
    p_update
        Probability that a layer updates on a step, independently per layer and step.
    """

    name = "dni"
    description = "decoupled neural interfaces: learned synthetic gradients M(h) at each layer"
    conditioned = False

    def __init__(
        self,
        module: str = "linear",
        hidden: Sequence[int] = (1024, 1024),
        interfaces: Sequence[str] | None = None,
        p_update: float = 1.0,
    ) -> None:
        if module not in MODULE_KINDS:
            raise ValueError(
                f"unknown synthetic-gradient module {module!r}; choose one of "
                f"{', '.join(repr(k) for k in MODULE_KINDS)}"
            )
        super().__init__(interfaces=interfaces, p_update=p_update)
        self.module = module
        self.hidden = _check_hidden(hidden, f"rule {self.name!r}")

    def _make_module(self, circuit, pop, generator):
        n_label = circuit.populations[circuit.output].size if self.conditioned else 0
        return SyntheticGradientPathway(
            pop,
            circuit.populations[pop].size,
            kind=self.module,
            hidden=self.hidden,
            n_label=n_label,
            generator=generator,
        )

    def hyperparameters(self):
        return {
            "module": self.module,
            "hidden": list(self.hidden) if self.module == "mlp" else [],
            "conditioned": self.conditioned,
            **super().hyperparameters(),
        }


@register
class ConditionalDNI(DNI):
    """cDNI: DNI whose modules also see the label, ĝ_l = M_l(h_l ⊕ y) (y one-hot, or the
    regression target).  Parameters as for :class:`DNI`."""

    name = "cdni"
    description = "conditional DNI: synthetic gradients M(h, y) that also see the label"
    conditioned = True


@register
class VFBN(_InterfaceRule):
    """Virtual forward-backward networks: ĝ_l = v_f'(h_l)ᵀ ∂ℓ(y, f_out(v_f(h_l)))/∂r, the
    backward pass of a small virtual forward network v_f from h_l to the output.

    Parameters
    ----------
    hidden
        Hidden layer sizes of v_f (default ``()``: a linear map h_l -> output).
    activation
        Activation of v_f's hidden layers.
    fit
        How v_f learns.  ``"gradient"`` (default): L_M = ⟨½‖ĝ_l − δ̃_l‖²⟩ by double backprop,
        the DNI objective — v_f imitates the upper network's backward pass.  ``"output"``:
        v_f imitates the upper network's output, L_M = ⟨½‖v_f(h_l) − u_out‖²⟩.  ``"both"``:
        the sum.  ``"task"``: the task loss ⟨ℓ(y, f_out(v_f(h_l)))⟩ itself — a local
        supervised head, not an imitation.  (On Fashion-MNIST, 4 layers, interface at the
        middle, 705 steps: ∠(ĝ, ∂ℓ/∂h) ≈ 12–17° for "gradient", ≈ 20° for "both", ≈ 45°
        for "output", ≈ 57° for "task"; see ``circuits/vfbn.py``.)
    interfaces, p_update
        As for :class:`DNI`.
    """

    name = "vfbn"
    description = "virtual forward-backward network: a small net's own backward pass as δ"

    def __init__(
        self,
        hidden: Sequence[int] = (),
        activation: str = "relu",
        fit: str = "gradient",
        interfaces: Sequence[str] | None = None,
        p_update: float = 1.0,
    ) -> None:
        if fit not in VFBN_FITS:
            raise ValueError(
                f"unknown VFBN fit {fit!r}; choose one of {', '.join(repr(f) for f in VFBN_FITS)}"
            )
        _activations.get(activation)
        super().__init__(interfaces=interfaces, p_update=p_update)
        self.hidden = _check_hidden(hidden, f"rule {self.name!r}")
        self.activation = activation
        self.fit = fit

    def _make_module(self, circuit, pop, generator):
        out = circuit.populations[circuit.output]
        return VFBNPathway(
            pop,
            circuit.populations[pop].size,
            out.size,
            hidden=self.hidden,
            activation=self.activation,
            output_activation=out.activation,
            generator=generator,
        )

    def _synthetic(self, module, h, y, loss, state, train):
        graph = train and self.fit in ("gradient", "both")
        keep = train and self.fit in ("output", "both", "task")
        return module.predict_with_output(h, y, loss, create_graph=graph, keep_output_graph=keep)

    def _module_loss(self, module, pred, u_v, target, state, y, loss):
        terms = []
        if self.fit in ("gradient", "both"):
            terms.append(0.5 * ((pred - target) ** 2).sum(dim=1).mean())
        if self.fit in ("output", "both"):
            u_out = state.u[self.circuit.output].detach()
            terms.append(0.5 * ((u_v - u_out) ** 2).sum(dim=1).mean())
        if self.fit == "task":
            terms.append(loss(module.out_act.f(u_v), y))
        return sum(terms)

    def hyperparameters(self):
        return {
            "hidden": list(self.hidden),
            "activation": self.activation,
            "fit": self.fit,
            **super().hyperparameters(),
        }
