"""The machinery shared by dni, cdni and vfbn: interfaces, bootstrapped targets, p_update.

Notation as in ``docs/dni.md``: population l has pre-activation u_l and rate h_l = f_l(u_l);
ℓ_n is the per-sample loss, e = ∂ℓ/∂u_out.  An *interface* is a hidden population l whose
layer below learns from a synthetic gradient ĝ_l (a module's prediction of ∂ℓ/∂h_l)::

    δ_l = f_l'(u_l) ⊙ ĝ_l                 (the layer below updates at once)
    δ̃_l = Σ_{l->q} W_{q l}ᵀ δ_q           (backprop across the layer above, δ_q built on ĝ_q:
                                            bootstrapping; the true error e at the top)
    L_M = ⟨½ ‖ĝ_l − δ̃_l‖²⟩                (trains the module M_l)

Between interfaces the teaching signal is ordinary backprop (δ_p = f'(u_p) ⊙ Σ Wᵀ δ_q), so
``interfaces=[one population]`` splits a circuit into a bottom and a top block.  The layer
below an interface never reads a weight above it: that is the locality the tests check.

**Update probability** ``p_update`` (Jaderberg et al. 2017, stochastic updates): on each step
every layer (the pathways into a non-input population) updates with probability p,
independently.  A layer that does not update gets ``.grad = None`` (``torch.optim`` skips it
entirely, momentum and weight decay included).  A module M_l learns on the steps on which
the layer above its interface updates (that layer's backward pass delivers δ̃_l).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from bioprop.core import seeding
from bioprop.core.circuit import Circuit, SweepState
from bioprop.core.losses import Loss
from bioprop.rules.contract import Rule, Signals, write_pathway_grads
from bioprop.rules.synthetic_gradients.modules import ModulePathway

__all__ = ["InterfaceRule", "true_rate_gradients", "check_probability"]


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


def check_probability(p: Any) -> float:
    """``p_update`` as a float in [0, 1]; a clear error otherwise."""
    ok = isinstance(p, (int, float)) and not isinstance(p, bool) and 0.0 <= float(p) <= 1.0
    if not ok:
        raise ValueError(
            f"p_update must be a probability in [0, 1] (each layer updates on a step with "
            f"probability p_update), got {p!r}"
        )
    return float(p)


class InterfaceRule(Rule):
    """Shared machinery of dni, cdni and vfbn: interfaces, update masks, bootstrapped targets.

    Subclasses implement :meth:`_make_module` (the module at one interface) and may refine
    :meth:`_synthetic` (how ĝ is predicted) and :meth:`_module_loss` (how the module learns).
    The modules' parameters form the optimizer group ``"module"``, so
    ``optimizer=("adam", {"lr": 1e-4, "module_lr": 3e-3})`` gives them their own rate.
    """

    kind = "layered"

    def __init__(self, interfaces: Sequence[str] | None = None, p_update: float = 1.0) -> None:
        super().__init__()
        self.p_update = check_probability(p_update)
        if isinstance(interfaces, str):
            interfaces = [interfaces]
        self.interfaces_requested = list(interfaces) if interfaces is not None else None
        self.modules: dict[str, ModulePathway] = {}
        self.update_counts: dict[str, int] = {}
        self.steps = 0
        self._mask_generator = seeding.generator(0, "update mask")

    # -- which circuits ----------------------------------------------------------------------
    def supports(self, circuit: Circuit) -> str | None:
        why = super().supports(circuit)
        if why:
            return why
        if not circuit.hidden():
            return (
                f"rule {self.name!r} needs a hidden population to put a synthetic-gradient "
                "interface at; this circuit has none (add a hidden layer, or use 'bp')"
            )
        return None

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
        # the update draws: their own stream, seeded from the rule's generator
        stream = int(torch.randint(0, 2**62, (1,), generator=generator))
        self._mask_generator = seeding.generator(stream, "update mask")
        self.layers = [p for p in circuit.order() if p != circuit.input]
        self.update_counts = {p: 0 for p in self.layers}
        self.steps = 0

    def _make_module(self, circuit: Circuit, pop: str, generator: torch.Generator):
        raise NotImplementedError

    def parameter_groups(self, circuit: Circuit) -> list[dict[str, Any]]:
        """One group ``"module"``: the modules' parameters (learning rate ``module_lr`` of
        the optimizer spec, else the spec's ``lr``)."""
        params = [
            p
            for m in self.modules.values()
            if m.name in circuit.pathways and m.plastic
            for p in m.own_parameters()
            if p.requires_grad
        ]
        return [{"name": "module", "params": params}]

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
        module_loss = self._train_modules(preds, target, state, y, loss)
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

    def _train_modules(self, preds, target, state, y, loss) -> dict[str, float]:
        """Write ∂L_M/∂θ into ``.grad`` of every module that learns this step (None for the
        others); returns L_M per interface."""
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
        return module_loss

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
