"""Baselines of Lillicrap et al. 2016: *shallow* learning and node perturbation.

* **shallow** — only pathways into the output learn, from the local output
  error: ĝ_W = ⟨e r_preᵀ⟩.  Hidden pathways keep their random weights.

* **node-perturbation** (the "reinforcement" baseline; Williams 1992,
  Fiete & Seung 2006) — every hidden population's pre-activation gets noise
  ξ_p ~ N(0, σ² I) in a second sweep; the per-sample change in loss
  Δℓ_n = ℓ_n(ξ) − ℓ_n(0) is broadcast as a scalar::

      δ̂_p,n = (Δℓ_n / σ²) ξ_p,n          (E[δ̂_p] → ∂ℓ/∂u_p as σ → 0)

  The output pathways learn from the local output error e, as in shallow.
"""

from __future__ import annotations

import torch

from bioprop.rules.contract import Rule, Signals, write_pathway_grads
from bioprop.rules.feedback_alignment import output_error
from bioprop.rules.registry import register

__all__ = ["Shallow", "NodePerturbation"]


@register
class Shallow(Rule):
    """Only the pathways into the output population learn (delta rule on e)."""

    name = "shallow"
    description = "only the last pathway learns, from the local output error"
    direct_updates = True  # teach ends with write_pathway_grads

    def teach(self, circuit, state, y, loss):
        with torch.no_grad():
            out = circuit.output
            e = output_error(circuit, state, y, loss)
            delta = {out: e}
            write_pathway_grads(circuit, state, delta)
            L = loss(state.r[out], y)
        return Signals(L, state.r[out], delta)


@register
class NodePerturbation(Rule):
    """Node perturbation: δ̂_p = (Δℓ / σ²) ξ_p from one perturbed sweep.

    Every perturbed population p gets noise ξ_p ~ N(0, σ²) on its pre-activation; the
    change in loss Δℓ (one scalar per sample, the "reward" every neuron receives) times its
    own noise is its teaching signal.

    Parameters
    ----------
    sigma
        Standard deviation σ of the perturbation of each pre-activation.
    output
        ``"scalar"`` (default; Lillicrap et al.'s reinforcement baseline, "the same reward
        delivered to each neuron"): the output units are perturbed too and learn from the
        same scalar Δℓ.  ``"vector"``: the output units learn from their own error
        e = ∂ℓ/∂u_out (a hybrid: only the hidden units are perturbed).
    """

    name = "node-perturbation"
    description = "perturb units with noise, broadcast the scalar change in loss"
    direct_updates = True  # teach ends with write_pathway_grads

    def __init__(self, sigma: float = 1e-2, output: str = "scalar"):
        super().__init__()
        if not sigma > 0:
            raise ValueError(f"node-perturbation: sigma must be > 0, got {sigma!r}")
        if output not in ("scalar", "vector"):
            raise ValueError(
                f"node-perturbation: output must be 'scalar' (every unit learns from the "
                f"scalar loss change) or 'vector' (the output learns from its error), "
                f"got {output!r}"
            )
        self.sigma = float(sigma)
        self.output = output
        self.generator = torch.Generator()

    def install(self, circuit, generator):
        self.generator = torch.Generator().manual_seed(
            int(torch.randint(0, 2**62, (1,), generator=generator))
        )

    def teach(self, circuit, state, y, loss):
        with torch.no_grad():
            out = circuit.output
            # Δℓ is a small difference of two losses: take it in float64
            y64 = y.double() if y.is_floating_point() else y
            clean = loss.per_sample(state.r[out].double(), y64)
            x = state.r[circuit.input]
            perturbed_pops = circuit.hidden() + ([out] if self.output == "scalar" else [])
            noise = {}
            for name in perturbed_pops:
                xi = torch.randn(state.u[name].shape, generator=self.generator).to(
                    state.u[name].device
                )
                noise[name] = xi.mul_(self.sigma)
            perturbed = circuit.sweep(x, noise=noise)
            dl = loss.per_sample(perturbed.r[out].double(), y64) - clean  # Δℓ_n
            scale = (dl / self.sigma**2).unsqueeze(1).to(state.u[out].dtype)
            delta = {}
            if self.output == "vector":
                delta[out] = output_error(circuit, state, y, loss)
            for name, xi in noise.items():
                delta[name] = scale * xi  # δ̂_p = (Δℓ/σ²) ξ_p
            write_pathway_grads(circuit, state, delta)
        return Signals(clean.mean().float(), state.r[out], delta, {"sigma": self.sigma})

    def hyperparameters(self):
        return {"sigma": self.sigma, "output": self.output}

    def state_dict(self):
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state):
        if "generator" in state:
            self.generator.set_state(state["generator"])
