"""Target propagation: what every rule of the family shares (Lee et al. 2015; Meulemans et al.
2020).

A chain input → h_1 → … → h_{L−1} → output (h_L) learns from *targets* ĥ_l instead of errors:

* the first target, with η̂ = ``target_step`` and L = (1/N) Σ_n ℓ_n the batch-mean loss (as
  in both papers' code, so η̂ keeps their values)::

      ĥ_{L−1} = h_{L−1} − η̂ ∂L/∂h_{L−1}    first_target="last-hidden" (Lee et al.); the
                                            output layer then learns from the loss itself
      ĥ_L     = h_L − η̂ ∂L/∂h_L            first_target="output" (Meulemans et al.)

* the targets below it come from the family's feedback pathways (``tp``, ``dtp``,
  ``dtp-drl``, ``ddtp-linear``: :meth:`TargetPropagationRule.targets`);
* every layer with a target learns from its local loss L_l = ⟨‖f_l(h_{l−1}) − ĥ_l‖²⟩ (sum
  over units, batch mean) with h_{l−1} and ĥ_l held constant::

      ĝ_{W_l} = ⟨δ_l h_{l−1}ᵀ⟩,   ĝ_{b_l} = ⟨δ_l⟩,   δ_l = 2 f_l′(u_l) ⊙ (h_l − ĥ_l)

* the feedback pathways learn from their own losses on noise-corrupted activity h + ε,
  ε ~ N(0, σ²) (σ = ``sigma``), in the optimizer group ``"inverse"`` (``inverse_lr``).

Schedules (``schedule``): ``"parallel"`` — forward and feedback weights learn on every batch;
``"alternating"`` — an epoch of feedback learning, then an epoch of forward learning (Lee et
al.'s released code), switched by :meth:`~bioprop.rules.Rule.on_epoch`.  The first
``inverse_warmup_epochs`` epochs train the feedback weights only (Meulemans et al.'s
``epochs_fb``).  ``inverse_options`` gives the ``"inverse"`` group optimizer options of its own
(weight decay, Adam's betas and ε, …; its learning rate is ``inverse_lr`` in the optimizer spec).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from bioprop.core import activations
from bioprop.core import init as _init
from bioprop.core.circuit import Circuit, SweepState
from bioprop.core.losses import Loss
from bioprop.core.pathway import Pathway
from bioprop.rules.contract import Rule, Signals, write_pathway_grads
from bioprop.rules.feedback_alignment import output_error

__all__ = ["TargetPropagationRule", "SCHEDULES", "FIRST_TARGETS", "PHASES", "rate_gradient"]

SCHEDULES = ("parallel", "alternating")
FIRST_TARGETS = ("last-hidden", "output")
#: the phases an epoch can be in (``TargetPropagationRule.phase``)
PHASES = ("both", "inverse", "forward")
#: optimizer options the ``"inverse"`` group may set for itself (``inverse_options``)
GROUP_OPTIONS = ("weight_decay", "betas", "eps", "momentum", "alpha", "centered", "amsgrad")


def _positive(option: str, value: Any, meaning: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{option} ({meaning}) must be a positive number, got {value!r}")
    return float(value)


def rate_gradient(loss: Loss, r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """∂ℓ_n/∂r per sample, for the output rates ``r`` (local to the output population)."""
    with torch.enable_grad():
        r = r.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(loss.per_sample(r, y).sum(), r)
    return g


def _pad(t: torch.Tensor, k: int) -> torch.Tensor:
    """The first ``k`` rows of ``t``, NaN-padded to ``k`` (a recording's sample slots)."""
    t = t[:k].detach()
    if t.shape[0] < k:
        pad = torch.full((k - t.shape[0], *t.shape[1:]), math.nan, dtype=t.dtype, device=t.device)
        t = torch.cat([t, pad])
    return t


class TargetPropagationRule(Rule):
    """Base class of the target-propagation rules (see the module docstring).

    Subclasses implement :meth:`targets` (ĥ per population and, for
    ``first_target="last-hidden"``, the output error that trains the output layer),
    :meth:`install` (their feedback pathways, registered in ``self.inverses``) and
    :meth:`write_inverse_grads`.
    """

    kind = "layered"
    #: defaults of (target_step, sigma, first_target) when the constructor gets None
    defaults: ClassVar[tuple[float, float, str]] = (0.328, 0.36, "last-hidden")

    def __init__(
        self,
        target_step: float | None = None,
        sigma: float | None = None,
        schedule: str = "parallel",
        first_target: str | None = None,
        inverse_init: _init.Init | str | None = None,
        inverse_activation: str | None = None,
        inverse_warmup_epochs: int = 0,
        inverse_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        d_step, d_sigma, d_first = self.defaults
        self.target_step = _positive(
            "target_step", d_step if target_step is None else target_step, "η̂, the first step"
        )
        self.sigma = _positive(
            "sigma", d_sigma if sigma is None else sigma, "σ, the std of the inverse's noise"
        )
        if schedule not in SCHEDULES:
            raise ValueError(
                f"schedule must be one of {SCHEDULES} (both every batch, or an epoch of "
                f"inverse then an epoch of forward learning), got {schedule!r}"
            )
        self.schedule = schedule
        first_target = d_first if first_target is None else first_target
        if first_target not in FIRST_TARGETS:
            raise ValueError(f"first_target must be one of {FIRST_TARGETS}, got {first_target!r}")
        self.first_target = first_target
        if inverse_init is not None:
            try:
                _init.resolve(inverse_init)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"inverse_init: {exc}") from None
        self.inverse_init = inverse_init
        if inverse_activation is not None:
            try:
                activations.get(inverse_activation)
            except ValueError as exc:
                raise ValueError(f"inverse_activation: {exc}") from None
        self.inverse_activation = inverse_activation
        if not isinstance(inverse_warmup_epochs, int) or inverse_warmup_epochs < 0:
            raise ValueError(
                f"inverse_warmup_epochs must be a non-negative integer, got "
                f"{inverse_warmup_epochs!r}"
            )
        self.inverse_warmup_epochs = inverse_warmup_epochs
        inverse_options = dict(inverse_options or {})
        unknown = sorted(set(inverse_options) - set(GROUP_OPTIONS))
        if unknown:
            raise ValueError(
                f"inverse_options: unknown {unknown}; the inverse group may set {GROUP_OPTIONS} "
                "(its learning rate is inverse_lr in the optimizer spec)"
            )
        wd = inverse_options.get("weight_decay", 0.0)
        if not isinstance(wd, (int, float)) or isinstance(wd, bool) or wd < 0:
            raise ValueError(f"inverse_options: weight_decay must be >= 0, got {wd!r}")
        self.inverse_options = inverse_options
        self.inverses: dict[str, Pathway] = {}
        self.generator = torch.Generator().manual_seed(0)
        self._device_generator: torch.Generator | None = None
        self.on_epoch(0)

    # -- which circuits ------------------------------------------------------------------
    def supports(self, circuit: Circuit) -> str | None:
        why = super().supports(circuit)
        if why:
            return why
        try:
            order = circuit.order()
        except ValueError as exc:
            return str(exc)
        for name in order:
            for what, paths, ok in (
                ("receives", circuit.incoming(name), name == circuit.input),
                ("sends", circuit.outgoing(name), name == circuit.output),
            ):
                if not ok and len(paths) != 1:
                    return (
                        f"rule {self.name!r} passes targets down a chain of layers (one forward "
                        f"pathway into and out of each population), but {name!r} {what} "
                        f"{len(paths)} ({[p.name for p in paths]}); build the circuit with "
                        "bioprop.Circuit.layered"
                    )
        if not circuit.hidden():
            return f"rule {self.name!r} needs at least one hidden population to send targets to"
        return None

    # -- the chain -----------------------------------------------------------------------
    def chain(self, circuit: Circuit) -> list[Pathway]:
        """The forward pathways f_1 … f_L in sweep order."""
        return [circuit.incoming(p)[0] for p in circuit.order() if p != circuit.input]

    def top(self, circuit: Circuit) -> str:
        """The population that gets the first target."""
        return circuit.output if self.first_target == "output" else circuit.hidden()[-1]

    # -- schedule ------------------------------------------------------------------------
    def on_epoch(self, epoch: int) -> None:
        """Set the phase of this epoch: ``"inverse"`` (warm-up, or an alternating epoch of
        feedback learning), ``"forward"`` or ``"both"`` (parallel)."""
        self.epoch = epoch
        warm = self.inverse_warmup_epochs
        if epoch < warm:
            self.phase = "inverse"
        elif self.schedule == "parallel":
            self.phase = "both"
        else:
            self.phase = "inverse" if (epoch - warm) % 2 == 0 else "forward"

    # -- noise ---------------------------------------------------------------------------
    def install(self, circuit: Circuit, generator: torch.Generator) -> None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        self.generator = torch.Generator().manual_seed(seed)
        self._device_generator = None
        self.inverses = {}

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        """ε ~ N(0, σ²) of ``like``'s shape, dtype and device (from the rule's own stream)."""
        if like.device.type == "cpu":
            eps = torch.randn(like.shape, generator=self.generator, dtype=like.dtype)
        else:
            gen = self._device_generator
            if gen is None or gen.device != like.device:
                seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
                gen = self._device_generator = torch.Generator(like.device).manual_seed(seed)
            eps = torch.randn(like.shape, generator=gen, dtype=like.dtype, device=like.device)
        return eps.mul_(self.sigma)

    # -- one step ------------------------------------------------------------------------
    def first(
        self, circuit: Circuit, state: SweepState, y: torch.Tensor, loss: Loss
    ) -> tuple[str, torch.Tensor, torch.Tensor | None]:
        """(top population, its target ĥ, the output error e = ∂ℓ/∂u_out that trains the
        output layer when the first target sits below it, else None)."""
        out = circuit.output
        step = self.target_step / state.r[out].shape[0]  # η̂ ∂L/∂h = (η̂/N) ∂ℓ_n/∂h
        if self.first_target == "output":
            grad = rate_gradient(loss, state.r[out], y)  # ∂ℓ_n/∂h_L
            return out, state.r[out] - step * grad, None
        top = self.top(circuit)
        e = output_error(circuit, state, y, loss)  # ∂ℓ_n/∂u_L
        w = circuit.incoming(out)[0].effective_weight()
        return top, state.r[top] - step * (e @ w), e  # ∂ℓ_n/∂h_{L−1} = W_Lᵀ e

    def targets(
        self, circuit: Circuit, state: SweepState, y: torch.Tensor, loss: Loss
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        """``({population: ĥ}, e or None)`` for this batch."""
        raise NotImplementedError

    def forward_deltas(
        self,
        circuit: Circuit,
        state: SweepState,
        targets: dict[str, torch.Tensor],
        e: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """δ_l = 2 f_l′(u_l) ⊙ (h_l − ĥ_l), the gradient of ‖f_l(h_{l−1}) − ĥ_l‖² at u_l; it
        reads the layer's own u_l, h_l and ĥ_l only.  The output gets ``e`` when given."""
        delta = {}
        for pop, t in targets.items():
            if pop == circuit.input:
                continue
            act = circuit.populations[pop].act
            d = 2.0 * (state.r[pop] - t)
            if act.name != "linear":
                d = d * act.fprime(state.u[pop], state.r[pop])
            delta[pop] = d
        if e is not None:
            delta[circuit.output] = e
        return delta

    def write_inverse_grads(self, circuit: Circuit, state: SweepState) -> dict[str, torch.Tensor]:
        """Write ``.grad`` of the feedback pathways; returns each inverse's loss, keyed by the
        population it reconstructs."""
        raise NotImplementedError

    def _clear_inverse_grads(self) -> None:
        for g in self.inverses.values():
            for p in g.own_parameters():
                p.grad = None

    def teach(self, circuit: Circuit, state: SweepState, y: torch.Tensor, loss: Loss) -> Signals:
        with torch.no_grad():
            out = circuit.output
            L = loss(state.r[out], y)
            train_forward = self.phase != "inverse"
            targets: dict[str, torch.Tensor] = {}
            delta: dict[str, torch.Tensor] = {}
            if train_forward or self.recording:
                targets, e = self.targets(circuit, state, y, loss)
                delta = self.forward_deltas(circuit, state, targets, e)
            write_pathway_grads(circuit, state, delta, only=None if train_forward else set())
            if self.phase != "forward":
                inverse_losses = self.write_inverse_grads(circuit, state)
            else:
                self._clear_inverse_grads()
                inverse_losses = {}
        signals = Signals(L, state.r[out], delta if train_forward else {})
        if self.recording:
            signals.records = self._records(circuit, targets, inverse_losses)
        return signals

    # -- recordings ----------------------------------------------------------------------
    def _reconstructed(self) -> set[str]:
        return {g.target for g in self.inverses.values() if g.own_parameters()}

    def record_variables(self, circuit: Circuit, samples: int) -> dict[str, dict[str, Any]]:
        """``targets/<population>``: ``target`` ĥ (sample × neuron) of every population that
        gets one (attribute ``first_target`` = 1 on the top one) and ``inverse_loss``, the
        loss of the feedback pathway that reconstructs it (NaN on steps it did not learn)."""
        from bioprop.recording.writer import ExtraVariable

        top = self.top(circuit)
        out: dict[str, dict[str, Any]] = {}
        rebuilt = self._reconstructed()
        for pop in circuit.order():
            if pop == circuit.input or (pop == circuit.output and top != pop):
                continue
            group: dict[str, Any] = {}
            if samples > 0:
                group["target"] = ExtraVariable(
                    ("sample", "neuron"),
                    (samples, circuit.populations[pop].size),
                    "target of the population's rates",
                    attrs={"first_target": int(pop == top)},
                )
            if pop in rebuilt:
                group["inverse_loss"] = ExtraVariable((), (), "loss of the inverse into here")
            if group:
                out[f"targets/{pop}"] = group
        self._declared = {gp: set(v) for gp, v in out.items()}
        self._samples = samples
        return out

    def _records(self, circuit, targets, inverse_losses) -> dict[str, dict[str, Any]]:
        """The values of what :meth:`record_variables` declared (nothing if it was not)."""
        k = getattr(self, "_samples", 0)
        records: dict[str, dict[str, Any]] = {}
        for gp, names in getattr(self, "_declared", {}).items():
            pop = gp.split("/", 1)[1]
            values: dict[str, Any] = {}
            if "target" in names:
                t = targets.get(pop)
                n = circuit.populations[pop].size
                values["target"] = _pad(t, k) if t is not None else torch.full((k, n), math.nan)
            if "inverse_loss" in names:
                lv = inverse_losses.get(pop)
                values["inverse_loss"] = float(lv) if lv is not None else math.nan
            records[gp] = values
        return records

    # -- bookkeeping ---------------------------------------------------------------------
    def parameter_groups(self, circuit: Circuit) -> list[dict[str, Any]]:
        """The feedback pathways' parameters, as the optimizer group ``"inverse"`` (its
        learning rate: ``inverse_lr`` in the optimizer spec; further options of its own:
        ``inverse_options``)."""
        params = [p for g in self.inverses.values() for p in g.own_parameters()]
        return [{**self.inverse_options, "name": "inverse", "params": params}]

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "target_step": self.target_step,
            "sigma": self.sigma,
            "schedule": self.schedule,
            "first_target": self.first_target,
            "inverse_init": repr(self.inverse_init) if self.inverse_init else "like-forward",
            "inverse_activation": self.inverse_activation or "like-target",
            "inverse_warmup_epochs": self.inverse_warmup_epochs,
            "inverse_options": dict(self.inverse_options),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])
