"""Decoupled neural interfaces: ``dni`` and ``cdni`` (Jaderberg et al. 2017, ICML, "Decoupled
neural interfaces using synthetic gradients") on layered circuits.

Every interface h_l gets a synthetic-gradient module M_l::

    ĝ_l = M_l(h_l)          ≈ ∂ℓ/∂h_l       (dni; M_l linear or a ReLU MLP, last layer zero)
    ĝ_l = M_l(h_l ⊕ y)                      (cdni: the module also sees the label, one-hot)

and the layer below learns from δ_l = f_l'(u_l) ⊙ ĝ_l at once; M_l regresses on the
bootstrapped target δ̃_l (see :mod:`~bioprop.rules.synthetic_gradients.interfaces`, which also
holds the update probability ``p_update``).  The modules are feedback pathways named
``sg:<population>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from bioprop.core import seeding
from bioprop.core.encoding import one_hot
from bioprop.rules.registry import register
from bioprop.rules.synthetic_gradients.interfaces import InterfaceRule
from bioprop.rules.synthetic_gradients.modules import ModulePathway, check_hidden, mlp

__all__ = ["MODULE_KINDS", "SyntheticGradientPathway", "DNI", "ConditionalDNI"]

MODULE_KINDS = ("linear", "mlp")


def _check_kind(kind: str) -> str:
    if kind not in MODULE_KINDS:
        raise ValueError(
            f"unknown synthetic-gradient module {kind!r}; choose one of "
            f"{', '.join(repr(k) for k in MODULE_KINDS)}"
        )
    return kind


def _labels(y: torch.Tensor, n: int, like: torch.Tensor) -> torch.Tensor:
    """One-hot rows for integer labels; float targets pass through (cast like ``like``)."""
    if not y.is_floating_point():
        return one_hot(y, n, dtype=like.dtype)
    if y.dim() != 2 or y.shape[1] != n:
        raise ValueError(
            f"cdni: labels of shape {tuple(y.shape)} do not have {n} columns (the output "
            "size); pass integer class labels or targets of the output's size"
        )
    return y.to(like.dtype)


class SyntheticGradientPathway(ModulePathway):
    """A DNI synthetic-gradient module M_l at interface population l (Jaderberg et al. 2017).

    ĝ_l = M_l(h_l)  (dni)  or  M_l(h_l ⊕ y)  (cdni, ``n_label > 0``).

    ``kind="linear"``: ĝ = A h (+ C y) + b, all zero at start.  ``kind="mlp"``: Linear →
    ReLU → … → Linear with ``hidden`` sizes (:func:`~.modules.mlp`), the last layer
    zero-initialised (so ĝ = 0 at start, as in the paper; the paper's batch norm inside M is
    left out).

    Effective weight (recorded as ``weight``, interface × interface): for ``linear`` the
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
        _check_kind(kind)
        if generator is None:
            generator = seeding.generator(0, "synthetic-gradient module")
        hidden = check_hidden(hidden, f"synthetic-gradient module at {population!r}")
        if kind == "linear":
            hidden = ()
        net = mlp([size + n_label, *hidden, size], generator, activation="relu")
        super().__init__(population, name or f"sg:{population}", net)
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

    def module_facts(self) -> dict:
        linear = "A (the h columns)"
        mlp = "W_L...W_1[:, :n], the MLP's map where all ReLUs are active"
        return {
            "conditioned": int(self.n_label > 0),
            "effective_weight": linear if self.kind == "linear" else mlp,
        }


@register
class DNI(InterfaceRule):
    """Decoupled neural interfaces: every chosen interface h_l gets a synthetic-gradient
    module M_l, ĝ_l = M_l(h_l); the layer below learns from δ_l = f'(u_l) ⊙ ĝ_l at once, and
    M_l regresses on δ̃_l = Σ W_{q l}ᵀ δ_q (bootstrapped from the layer above's synthetic
    gradient, the true error at the top): L_M = ⟨½‖ĝ_l − δ̃_l‖²⟩.

    The modules form the optimizer group ``"module"``: ``optimizer=("adam", {"lr": 1e-4,
    "module_lr": 3e-3})`` trains them at 3e-3 (they start at zero and must learn before the
    layers below can, so a larger rate helps on short budgets).

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
        _check_kind(module)
        super().__init__(interfaces=interfaces, p_update=p_update)
        self.module = module
        self.hidden = check_hidden(hidden, f"rule {self.name!r}")

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

    def hyperparameters(self) -> dict[str, Any]:
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
