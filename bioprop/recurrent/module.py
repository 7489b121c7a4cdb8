"""The synthetic-gradient module at a window boundary, and the two terms every window uses.

Jaderberg et al. 2017, §3.2: a module M predicts, from the state s_b at a window boundary,
the gradient of all future loss, δ̂_b = M(s_b) ≈ ∂(Σ_{j≥b} ℓ_j)/∂s_b.  A window that ends at
b backpropagates its own loss plus the injected term (:func:`inject`), and M learns from the
bootstrapped target the next window delivers (:func:`fit_module`).  The recurrent rules
(:mod:`bioprop.rules.recurrent`) and the two-network system
(:mod:`bioprop.recurrent.two_networks`) share both.
"""

from __future__ import annotations

import torch
from torch import nn

from bioprop.rules.synthetic_gradients.modules import ModulePathway, check_hidden, mlp

__all__ = ["BoundarySyntheticGradient", "inject", "fit_module"]


def inject(ghat: torch.Tensor, s_end: torch.Tensor, n_b: int) -> torch.Tensor:
    """(1/B) Σ_n ⟨sg(δ̂_n), s_n⟩: added to a window's loss, its gradient at ``s_end`` is
    δ̂ / B — the synthetic gradient enters the window's backward pass as if it were the
    true gradient of the future loss."""
    return (ghat.detach() * s_end).sum() / n_b


def fit_module(pred: torch.Tensor | None, target: torch.Tensor | None, n_b: int) -> float:
    """L_M = (1/B) Σ_n ½‖M(s_n) − sg(g_n)‖², backpropagated into M now; returns L_M
    (0 when there is no prediction or target).  An oracle prediction without a graph
    (tests) is measured, not backpropagated."""
    if pred is None or target is None:
        return 0.0
    lm = 0.5 * ((pred - target.detach()) ** 2).sum() / n_b
    if lm.requires_grad:
        lm.backward()
    return float(lm.detach())


class BoundarySyntheticGradient(ModulePathway):
    """The module M at the window boundary of the recurrent population: δ̂ = M(s).

    ``kind="linear"``: δ̂ = A s + a; ``kind="mlp"``: Linear → ReLU → … → Linear (``hidden``
    sizes, hidden layers drawn from ``generator``; the one builder
    :func:`~bioprop.rules.synthetic_gradients.modules.mlp`).  The last layer is zero-initialised, so
    δ̂ = 0 at the start (then dni = bptt).  With ``aux=True`` a linear head â = A' s + a'
    (zero-initialised) predicts the synthetic gradient one window ahead (dni-aux).  s is h
    (RNN) or h ⊕ c (LSTM), so M maps state_size → state_size; the recorded ``weight``
    (post × pre = hidden × hidden) is the h → ∂/∂h block of the module's linear-equivalent
    map.
    """

    def __init__(
        self,
        n_hidden: int,
        state_size: int,
        *,
        kind: str = "linear",
        hidden: tuple[int, ...] = (),
        aux: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if kind not in ("linear", "mlp"):
            raise ValueError(
                f"unknown synthetic-gradient module {kind!r}; choose 'linear' or 'mlp'"
            )
        if kind == "mlp" and not hidden:
            raise ValueError("an 'mlp' synthetic-gradient module needs hidden sizes, e.g. (256,)")
        if kind == "mlp" and generator is None:
            raise ValueError(
                "an 'mlp' synthetic-gradient module draws its hidden layers from a generator: "
                "pass generator=bioprop.seeding.generator(seed, 'feedback')"
            )
        hidden = (
            check_hidden(hidden, "recurrent synthetic-gradient module") if kind == "mlp" else ()
        )
        super().__init__("hidden", "sg:hidden", mlp([state_size, *hidden, state_size], generator))
        self.kind, self.hidden = kind, tuple(hidden)
        self.n_hidden, self.state_size = n_hidden, state_size
        self.columns = n_hidden
        # the auxiliary head â = A' s + a', zero at the start (draws nothing)
        self.aux = mlp([state_size, state_size], generator) if aux else None

    def own_parameters(self) -> list[nn.Parameter]:
        return list(self.parameters())

    def _effective(self, p, dp):
        rows = slice(0, self.n_hidden)
        return p[rows], (dp[rows] if dp is not None else None)

    def predict(self, s: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """δ̂ = M(s), (batch, state_size)."""
        return self.net(s)

    def predict_ahead(self, s: torch.Tensor) -> torch.Tensor:
        """â = A'(s) ≈ the synthetic gradient one window ahead (dni-aux)."""
        if self.aux is None:
            raise RuntimeError("this module has no auxiliary head (made with aux=False)")
        return self.aux(s)

    def module_facts(self) -> dict:
        return {
            "aux": int(self.aux is not None),
            "state_size": self.state_size,
            "effective_weight": "h -> dL/dh block of the module's linear-equivalent map",
        }
