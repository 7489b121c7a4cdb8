"""Synthetic-gradient modules as pathways, and the one MLP builder they are made of.

A *module* is a small network that stands in for everything above an interface population
(a DNI module M_l, a VFBN virtual network v_f, the recurrent DNI boundary module).  It is a
feedback :class:`~bioprop.core.pathway.Pathway` of the circuit (``role="feedback"``,
source = target = the interface population), so it is listed in ``circuit.pathways``,
saved in ``state_dict``, trained by the trainer's optimizer (the rule's ``"module"``
parameter group) and recorded like any other pathway.

Its map is a network ``net`` rather than one matrix, so its recorded ``weight`` is an
*effective* weight (post × pre = interface × interface) derived from the chain of its
linear layers, P = W_L ⋯ W_1 (see :meth:`ModulePathway.effective_weight`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from bioprop.core import activations as _activations
from bioprop.core import init as _init
from bioprop.core.losses import Loss
from bioprop.core.pathway import Pathway

__all__ = ["Act", "ModulePathway", "check_hidden", "mlp", "module_parameters"]


class Act(nn.Module):
    """An activation from :mod:`bioprop.core.activations` as an ``nn.Module``."""

    def __init__(self, act: _activations.Activation | str) -> None:
        super().__init__()
        self.act = _activations.get(act) if isinstance(act, str) else act

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.act.f(u)

    def extra_repr(self) -> str:
        return self.act.name


def check_hidden(hidden: Sequence[int], what: str) -> tuple[int, ...]:
    """``hidden`` as a tuple of positive layer sizes; a clear error naming ``what`` else."""
    try:
        out = tuple(int(h) for h in hidden)
    except (TypeError, ValueError):
        raise TypeError(
            f"{what}: hidden must be a sequence of layer sizes, e.g. (256,), got {hidden!r}"
        ) from None
    if any(h < 1 for h in out) or any(h != float(x) for h, x in zip(out, hidden, strict=True)):
        raise ValueError(f"{what}: hidden layer sizes must be positive integers, got {hidden!r}")
    return out


def mlp(
    sizes: Sequence[int],
    generator: torch.Generator,
    *,
    activation: str = "relu",
    zero_last: bool = True,
) -> nn.Sequential:
    """The one builder of synthetic-gradient networks: Linear → act → … → Linear.

    Layer k maps ``sizes[k]`` to ``sizes[k+1]``; its weight is drawn from ``generator``
    kaiming-uniform with gain √2 (U[±√(6/fan_in)], for ReLU), its bias is 0; the last layer
    is zero-initialised when ``zero_last`` (so the module predicts ĝ = 0 at the start, as in
    Jaderberg et al. 2017) and draws nothing from ``generator``.  ``sizes`` of length 2 is
    one linear map (ĝ = A h + b).

    Parameters
    ----------
    sizes
        Layer sizes, input first: ``[n_in, *hidden, n_out]``.
    generator
        Where the weights are drawn from (e.g. the rule's ``seeding.generator(...)``).
    activation
        Between the linear layers (a name of :mod:`bioprop.core.activations`).
    zero_last
        Zero the last layer's weight.
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or any(s < 1 for s in sizes):
        raise ValueError(f"mlp: sizes must be at least [n_in, n_out], all positive; got {sizes}")
    act = _activations.get(activation)
    draw = _init.kaiming_uniform(math.sqrt(2.0))
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        last = i == len(sizes) - 2
        layer = nn.Linear(n_in, n_out)
        with torch.no_grad():
            if last and zero_last:
                layer.weight.zero_()
            else:
                layer.weight.copy_(draw((n_out, n_in), generator))
            layer.bias.zero_()
        layers.append(layer)
        if not last:
            layers.append(Act(act))
    return nn.Sequential(*layers)


class ModulePathway(Pathway):
    """A feedback pathway whose map is a small network ``net`` rather than one matrix.

    ``weight`` is not a parameter here but a *view*: :meth:`effective_weight` (post × pre =
    interface × interface), recomputed from ``net`` when read, with ``.grad`` set to its
    first-order change along the parameters' current ``.grad`` (dE for dθ = ``.grad``), so a
    recording's ``weight_update`` (−``weight.grad``) is the change of the effective weight per
    unit learning rate, to first order.  The module's biases live in ``net``; ``bias`` is
    None.  Subclasses implement :meth:`predict` and may refine :meth:`_effective` (the
    effective weight from the chain P = W_L ⋯ W_1; default P itself).
    """

    columns: int | None = None  # how many of the first layer's input columns belong to h
    kind: str = ""  # the module's kind ("linear", "mlp", "vfbn"), for recordings
    hidden: tuple[int, ...] = ()  # its hidden layer sizes

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

    def describe(self) -> dict:
        """The pathway's description plus the module's kind, hidden sizes and what its
        :meth:`effective_weight` is (:meth:`module_facts`)."""
        d = super().describe()
        d.update(interface=self.interface, module=self.kind, hidden=list(self.hidden))
        d.update(self.module_facts())
        return d

    def module_facts(self) -> dict:
        """What a subclass adds to :meth:`describe` (e.g. ``effective_weight``)."""
        return {}

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
        """ĝ = ∂ℓ/∂h predicted from the interface's rates ``h`` (sample × neuron)."""
        raise NotImplementedError


def module_parameters(circuit) -> list[nn.Parameter]:
    """The trainable parameters of the circuit's synthetic-gradient modules (every
    :class:`ModulePathway` among its plastic feedback pathways)."""
    return [
        p
        for pw in circuit.feedback_pathways()
        if isinstance(pw, ModulePathway) and pw.plastic
        for p in pw.own_parameters()
        if p.requires_grad
    ]
