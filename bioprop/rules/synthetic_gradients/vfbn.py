"""Virtual forward-backward networks: ``vfbn`` (Miyato, Okanohara, Maeda & Koyama 2017, ICLR
workshop, "Synthetic gradient methods with virtual forward-backward networks").

At an interface h_l a small *virtual forward network* v_f: h_l → output stands in for the
upper network, and its own backward pass is the synthetic gradient::

    ĝ_l = v_f'(h_l)ᵀ ∂ℓ(y, f_out(v_f(h_l)))/∂r_out

v_f is fitted to imitate the real upper network: ``fit="gradient"`` (default) regresses ĝ_l
on the bootstrapped δ̃_l (L_M = ⟨½‖ĝ_l − δ̃_l‖²⟩, by double backprop), ``fit="output"``
regresses v_f(h_l) on the real output pre-activation u_out, ``fit="both"`` adds the two;
``fit="task"`` instead trains v_f on the task loss ℓ(y, f_out(v_f(h_l))) itself — the *local
supervised head* baseline.  The modules are feedback pathways named ``vfbn:<population>``;
interfaces, bootstrapping and ``p_update`` are those of
:mod:`~bioprop.rules.synthetic_gradients.interfaces`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bioprop.core import activations as _activations
from bioprop.core import seeding
from bioprop.core.losses import Loss
from bioprop.core.pathway import Pathway
from bioprop.rules.registry import register
from bioprop.rules.synthetic_gradients.interfaces import InterfaceRule
from bioprop.rules.synthetic_gradients.modules import ModulePathway, check_hidden, mlp

__all__ = ["VFBN_FITS", "VFBNPathway", "VFBN"]

VFBN_FITS = ("gradient", "output", "both", "task")


class VFBNPathway(ModulePathway):
    """A virtual forward-backward network at interface population l (Miyato et al. 2017).

    v_f: h_l -> u_v (output size) is Linear → act → … → Linear (``hidden`` sizes, last layer
    zero-initialised; :func:`~.modules.mlp`), r_v = f_out(u_v) with the circuit's output
    activation, and

        ĝ_l = ∂ℓ(y, r_v)/∂h_l = v_f'(h_l)ᵀ ∂ℓ/∂u_v        (autograd through v_f only)

    Effective weight (recorded as ``weight``, interface × interface): PᵀP, where
    P = W_L ⋯ W_1 is v_f's linear-equivalent map (n_out × n) — with a linear v_f and squared
    error, ĝ = PᵀP h + Pᵀ(c − y), so PᵀP is exactly the weight h enters ĝ with.
    """

    kind = "vfbn"

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
        if generator is None:
            generator = seeding.generator(0, "synthetic-gradient module")
        hidden = check_hidden(hidden, f"VFBN at {population!r}")
        net = mlp([size, *hidden, n_out], generator, activation=activation)
        super().__init__(population, name or f"vfbn:{population}", net)
        self.hidden = hidden
        self.size = size
        self.n_out = n_out
        self.activation = _activations.get(activation).name
        self.out_act = _activations.get(output_activation)

    def linear_layers(self) -> list[torch.nn.Linear]:
        """v_f's linear layers, bottom first (to copy an upper network into, for example)."""
        return [m for m in self.net if isinstance(m, torch.nn.Linear)]

    def copy_from(self, pathways: Sequence[Pathway]) -> None:
        """Make v_f a copy of a chain of forward pathways (bottom first), e.g. the real upper
        network — then ĝ_l is backprop's ∂ℓ/∂h_l exactly (the sanity limit of the tests)."""
        layers = self.linear_layers()
        if len(layers) != len(pathways):
            raise ValueError(
                f"{self.name}: v_f has {len(layers)} linear layers, got {len(pathways)} "
                "pathways; make the rule with hidden= sizes matching the network above"
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

    def module_facts(self) -> dict:
        return {
            "activation": self.activation,
            "output_activation": self.out_act.name,
            "effective_weight": "P^T P, P = W_L...W_1 the virtual forward network's linear map",
        }


@register
class VFBN(InterfaceRule):
    """Virtual forward-backward networks: ĝ_l = v_f'(h_l)ᵀ ∂ℓ(y, f_out(v_f(h_l)))/∂r, the
    backward pass of a small virtual forward network v_f from h_l to the output.

    The virtual networks form the optimizer group ``"module"`` (rate ``module_lr``).

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
        the output term plus ``alpha_gs`` times the gradient term (Miyato et al.'s objective:
        the virtual network imitates the upper network, with a gradient-matching term of
        weight α_gs; α_gs = 0 is pure output imitation).  ``"task"``: the task loss
        ⟨ℓ(y, f_out(v_f(h_l)))⟩ itself — a local supervised head, not an imitation.  (On
        Fashion-MNIST, 4 layers, interface at the middle, 705 steps: ∠(ĝ, ∂ℓ/∂h) ≈ 12–17°
        for "gradient", ≈ 20° for "both" with α_gs = 1, ≈ 45° for "output", ≈ 57° for
        "task"; see ``circuits/vfbn.py``.)
    alpha_gs
        Weight α_gs of the gradient-matching term under ``fit="both"`` (default 1; Miyato et
        al. report α_gs = 0 and 1e-3).
    interfaces, p_update
        As for :class:`~bioprop.rules.synthetic_gradients.dni.DNI`.
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
        alpha_gs: float = 1.0,
    ) -> None:
        if fit not in VFBN_FITS:
            raise ValueError(
                f"unknown VFBN fit {fit!r}; choose one of {', '.join(repr(f) for f in VFBN_FITS)}"
            )
        _activations.get(activation)
        if not (isinstance(alpha_gs, (int, float)) and alpha_gs >= 0):
            raise ValueError(f"rule 'vfbn': alpha_gs must be a number >= 0, got {alpha_gs!r}")
        super().__init__(interfaces=interfaces, p_update=p_update)
        self.alpha_gs = float(alpha_gs)
        self.hidden = check_hidden(hidden, f"rule {self.name!r}")
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

    @property
    def _gradient_term(self) -> bool:
        """Whether v_f's objective has the gradient-matching term (needs double backprop)."""
        return self.fit == "gradient" or (self.fit == "both" and self.alpha_gs > 0)

    def _synthetic(self, module, h, y, loss, state, train):
        graph = train and self._gradient_term
        keep = train and self.fit in ("output", "both", "task")
        return module.predict_with_output(h, y, loss, create_graph=graph, keep_output_graph=keep)

    def _module_loss(self, module, pred, u_v, target, state, y, loss):
        terms = []
        if self._gradient_term:
            weight = self.alpha_gs if self.fit == "both" else 1.0  # L = L_out + α_gs L_grad
            terms.append(weight * 0.5 * ((pred - target) ** 2).sum(dim=1).mean())
        if self.fit in ("output", "both"):
            u_out = state.u[self.circuit.output].detach()
            terms.append(0.5 * ((u_v - u_out) ** 2).sum(dim=1).mean())
        if self.fit == "task":
            terms.append(loss(module.out_act.f(u_v), y))
        return sum(terms)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "hidden": list(self.hidden),
            "activation": self.activation,
            "fit": self.fit,
            "alpha_gs": self.alpha_gs,
            **super().hyperparameters(),
        }
