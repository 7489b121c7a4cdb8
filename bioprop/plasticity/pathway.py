"""Plastic pathways: a fixed part w and a Hebbian part α ⊙ Hebb (Miconi et al. 2018, eq. 1).

A :class:`HebbianPathway` ``pre -> post`` delivers, per sample b of the batch,

    u_b = (w + α ⊙ Hebb_b) x_b + b = w x_b + b + (α ⊙ Hebb_b) x_b

where w (post × pre, like every bioprop weight), the bias b, the plasticity coefficients α
(one per synapse, or one shared by the pathway) and the trace rate η are ordinary
parameters the outer loop trains, and Hebb_b (batch, post, pre) is the fast trace of
:mod:`bioprop.plasticity.trace`, reset to zero at the start of every episode.  The two
terms are computed apart, so with α = 0 the pathway delivers exactly w x + b: a plastic
circuit with α = 0 *is* its non-plastic twin, output for output and gradient for gradient.

:class:`OneToOnePathway` is the fixed identity projection Miconi et al.'s networks use to
bring inputs in and read outputs out (unit i of one population drives unit i of the other).
"""

from __future__ import annotations

import torch
from torch import nn

from bioprop.core.pathway import Pathway
from bioprop.plasticity import trace as _trace

__all__ = ["HebbianPathway", "OneToOnePathway"]


class HebbianPathway(Pathway):
    """A pathway whose effective weight is w + α ⊙ Hebb, Hebb a per-sample Hebbian trace.

    Parameters
    ----------
    source, target, weight, bias, role, plastic, init, name
        As :class:`bioprop.Pathway`; ``plastic`` says whether the outer loop trains w and b.
    alpha
        Initial plasticity coefficients: a (post, pre) tensor (one α per synapse) or a
        0-d tensor (one α shared by every synapse of the pathway, the paper's "homogenous"
        option).
    eta
        The trace's rate η ∈ [0, 1]: a number (this pathway's own η) or an existing 0-d
        ``nn.Parameter`` (an η shared with other pathways).
    form
        ``"decay"`` or ``"oja"`` (:mod:`bioprop.plasticity.trace`).
    learn_alpha, learn_eta
        Whether the outer loop trains α and η (``requires_grad``).  α fixed at 0 turns the
        trace off (:attr:`active` is False): the pathway is then an ordinary one.
    """

    def __init__(
        self,
        source: str,
        target: str,
        weight: torch.Tensor,
        bias: torch.Tensor | None = None,
        *,
        alpha: torch.Tensor,
        eta: float | nn.Parameter = 0.01,
        form: str = "decay",
        learn_alpha: bool = True,
        learn_eta: bool = True,
        role: str = "lateral",
        plastic: bool = True,
        init=None,
        name: str | None = None,
    ):
        super().__init__(
            source, target, weight, bias, role=role, plastic=plastic, init=init, name=name
        )
        self.form = _trace.check_form(form)
        alpha = torch.as_tensor(alpha, dtype=torch.float32)
        if alpha.dim() != 0 and tuple(alpha.shape) != tuple(self.weight.shape):
            raise ValueError(
                f"pathway {self.name}: alpha must be a number (shared by the pathway) or have "
                f"the weight's shape {tuple(self.weight.shape)} (post x pre), got "
                f"{tuple(alpha.shape)}"
            )
        self.alpha = nn.Parameter(alpha.detach().clone(), requires_grad=bool(learn_alpha))
        if isinstance(eta, nn.Parameter):
            if eta.dim() != 0:
                raise ValueError(f"pathway {self.name}: a shared eta must be a 0-d Parameter")
            _trace.check_eta(float(eta.detach()))
            self.eta = eta  # shared: the same Parameter object in every pathway using it
        else:
            value = _trace.check_eta(eta)
            self.eta = nn.Parameter(torch.tensor(value), requires_grad=bool(learn_eta))

    # -- which parameters the outer loop trains ----------------------------------------------
    def switched_parameters(self) -> list[nn.Parameter]:
        """:attr:`plastic` switches w and b only (α and η have their own switches)."""
        return [p for p in (self.weight, self.bias) if p is not None]

    def own_parameters(self) -> list[nn.Parameter]:
        return [p for p in (self.weight, self.bias, self.alpha, self.eta) if p is not None]

    @property
    def shared_alpha(self) -> bool:
        """True when one α serves every synapse of the pathway."""
        return self.alpha.dim() == 0

    @property
    def active(self) -> bool:
        """Whether the trace matters: α is trained, or some α is non-zero.  An inactive
        pathway skips the trace altogether (it is then exactly an ordinary pathway)."""
        return bool(self.alpha.requires_grad) or bool((self.alpha != 0).any())

    # -- running -----------------------------------------------------------------------------
    def initial_trace(self, batch: int) -> torch.Tensor:
        """Hebb = 0 for a batch of ``batch`` episodes (batch, post, pre)."""
        n_post, n_pre = self.weight.shape
        return self.weight.new_zeros(batch, n_post, n_pre)

    def plastic_input(self, pre: torch.Tensor, hebb: torch.Tensor) -> torch.Tensor:
        """(α ⊙ Hebb_b) x_b per sample, (batch, post)."""
        if self.shared_alpha:
            return self.alpha * torch.bmm(hebb, pre.unsqueeze(2)).squeeze(2)
        return torch.bmm(self.alpha * hebb, pre.unsqueeze(2)).squeeze(2)

    def forward(self, pre: torch.Tensor, hebb: torch.Tensor | None = None) -> torch.Tensor:
        """u = w x + b (+ (α ⊙ Hebb) x when a trace is given), (batch, post)."""
        u = super().forward(pre)
        return u if hebb is None else u + self.plastic_input(pre, hebb)

    def step_trace(self, hebb: torch.Tensor, pre: torch.Tensor, post: torch.Tensor) -> torch.Tensor:
        """The trace after this step (:func:`bioprop.plasticity.trace.update`)."""
        return _trace.update(hebb, pre, post, self.eta, self.form)

    def describe(self) -> dict:
        d = super().describe()
        d.update(
            hebbian=1,
            form=self.form,
            alpha="shared" if self.shared_alpha else "per synapse",
            learn_alpha=int(self.alpha.requires_grad),
            learn_eta=int(self.eta.requires_grad),
        )
        return d

    def extra_repr(self) -> str:
        a = "shared α" if self.shared_alpha else "α per synapse"
        return f"{super().extra_repr()}, hebbian {self.form}, {a}"


class OneToOnePathway(Pathway):
    """The fixed projection r_target[i] = r_source[i] for i < min(sizes): inputs clamped
    onto (or added to) the first units of a population, or outputs read from them.

    Its weight is the rectangular identity (post × pre), fixed; :meth:`forward` pads or
    slices instead of multiplying (the same numbers, without an N² product per step).
    """

    def __init__(
        self,
        source: str,
        target: str,
        n_source: int,
        n_target: int,
        *,
        role: str = "feedforward",
        name: str | None = None,
    ):
        super().__init__(
            source, target, torch.eye(n_target, n_source), None, role=role, plastic=False, name=name
        )
        self.n_source, self.n_target = n_source, n_target

    def forward(self, r_source: torch.Tensor) -> torch.Tensor:
        k = self.n_target - self.n_source
        if k == 0:
            return r_source
        if k < 0:
            return r_source[..., : self.n_target]
        return torch.nn.functional.pad(r_source, (0, k))

    def describe(self) -> dict:
        d = super().describe()
        d["one_to_one"] = 1
        return d
