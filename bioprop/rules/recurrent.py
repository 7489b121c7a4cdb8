"""Rules for recurrent circuits: ``bptt``, ``dni``, ``dni-aux`` (Jaderberg et al. 2017, §3.2).

They run on :class:`bioprop.recurrent.RecurrentCircuit` (``kind = "recurrent"``).  A step
takes a batch of sequences (the recurrent kind's convention, see
:mod:`bioprop.rules.contract`): ``step(circuit, batch, None, None)`` with ``batch`` a
:class:`bioprop.recurrent.Batch` (time first, targets and mask inside); the loss is the
family's sequence loss L (binary cross-entropy summed over bits and steps, mean over the
batch).  :meth:`RecurrentRule.reference` is full (untruncated) BPTT through the sequence.

Notation: windows k = 0 … K−1 of T steps (:mod:`bioprop.recurrent.unroll`), boundary states
s_b = s_{bT} (h, or h ⊕ c for the LSTM), L_k the loss of window k, L = Σ_k L_k
= (1/B) Σ_n ℓ_n.  Each window starts from a *detached* copy of its start state.

* **bptt** (truncated):   ĝ_θ = Σ_k ∂L_k/∂θ |_{s_{kT} held fixed}
* **dni**: at each inner boundary the module M predicts the gradient of all future loss,
  δ̂_b = M(s_b) ≈ ∂(Σ_{j≥b} ℓ_{n,j})/∂s_b, and window k = b−1 backpropagates

      J_k = L_k + κ (1/B) Σ_n ⟨sg(δ̂_{k+1,n}), s_{k+1,n}⟩,      ĝ_θ = Σ_k ∂J_k/∂θ

  (κ = ``scale``, 1 by default).  On a stream (a batch that ``continues``, e.g. a language
  model's text) the end of the last window is a boundary too: κ·δ̂ enters there, and the
  next batch (which ``follows`` from that state) delivers the target M is fitted to.

  M is trained on the bootstrapped target: the true gradient at s_b from the next window plus
  that window's own synthetic gradient,

      g_b = B · ∂J_b/∂s_b,       L_M = Σ_b (1/B) Σ_n ½‖M(s_{b,n}) − sg(g_{b,n})‖²

* **dni-aux**: M has a second head A that predicts, from s_b, the synthetic gradient one
  window further ahead: â_b = A(s_b) ≈ δ̂_{b+1}.  Window b adds
  λ·(1/B) Σ_n ½‖A(s_{b,n}) − sg(δ̂_{b+1,n})‖² to J_b (δ̂ = 0 at the end of the sequence).
  This trains A, and its gradient at s_b joins g_b — so the auxiliary task reaches the core
  the only way anything from window b can reach window b−1: through M's target (see
  ``docs/rnn_dni.md``).

A step writes ``.grad`` of the core's parameters (summed over the windows of the batch) and
of the module's; the module M is the feedback pathway ``sg:hidden`` and the optimizer
parameter group ``"module"`` (``optimizer=("adam", {"lr": 1e-2, "module_lr": 1e-3})``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any

import torch

from bioprop.core.circuit import Circuit
from bioprop.recurrent.circuit import RecurrentCircuit
from bioprop.recurrent.module import BoundarySyntheticGradient, fit_module, inject
from bioprop.recurrent.reference import SequenceReference, core_named, full_bptt
from bioprop.recurrent.tasks import Batch, bits_per_character, sequence_loss
from bioprop.recurrent.unroll import check_truncation, windows
from bioprop.rules.contract import Rule, Signals, check_batch_call
from bioprop.rules.registry import register

__all__ = ["RecurrentRule", "BPTT", "DNI", "DNIAux", "SEQUENCE_LOSS"]

#: the name of the recurrent family's loss (provenance, Run.loss)
SEQUENCE_LOSS = "sequence binary cross-entropy (summed over bits and steps, mean over batch)"


class RecurrentRule(Rule):
    """Truncated BPTT over windows of ``T`` steps; subclasses add boundary terms.

    Parameters
    ----------
    T
        Truncation length (steps per window), an integer ≥ 1.
    """

    kind = "recurrent"
    #: κ, the factor on the injected synthetic gradient (dni: an option; 1 otherwise)
    scale = 1.0
    #: the batches this family steps on carry their own targets and loss
    batch_call = (Batch, "a batch of sequences", "the Batch (its y, mask and the sequence loss)")

    def __init__(self, T: int = 3):
        super().__init__()
        self.T = check_truncation(T)
        self.module: BoundarySyntheticGradient | None = None
        self._open: torch.Tensor | None = None  # a stream's last boundary state

    def supports(self, circuit: Circuit) -> str | None:
        if not isinstance(circuit, RecurrentCircuit):
            return (
                f"rule {self.name!r} (kind recurrent) trains a bioprop.recurrent."
                f"RecurrentCircuit (an LSTM or tanh RNN unrolled over windows of T steps), but "
                f"this circuit is a {getattr(circuit, 'kind', '?')} "
                f"{type(circuit).__name__}; build e.g. RecurrentCircuit(n_in, 64, n_out)"
            )
        return None

    def hyperparameters(self) -> dict[str, Any]:
        return {"T": self.T}

    def parameter_groups(self, circuit: Circuit) -> list[dict[str, Any]]:
        """The group ``"module"``: M's parameters (empty for bptt, so that one optimizer
        spec with ``module_lr`` serves every rule of the family)."""
        params = list(self.module.parameters()) if self.module is not None else []
        return [{"name": "module", "params": params}]

    # hook for tests (oracle synthetic gradients) ---------------------------------------------
    def synthetic(self, boundary: int, s: torch.Tensor) -> torch.Tensor | None:
        """The synthetic gradient injected at inner boundary ``boundary`` (1 … K−1) given the
        detached boundary state ``s``; None for no boundary term (bptt)."""
        return None

    def _aux_term(self, k: int, s0: torch.Tensor, ghat, n_b: int) -> torch.Tensor | None:
        return None

    # -- the contract --------------------------------------------------------------------------
    def step(self, circuit: Circuit, x: Any, y: Any = None, loss: Any = None) -> Signals:
        """One update on a batch of sequences: ``.grad`` of the core (summed over windows)
        and of the module; see :meth:`backward`."""
        return self.backward(circuit, check_batch_call(self, x, y, loss))

    def reference(
        self, circuit: Circuit, x: Any, y: Any = None, loss: Any = None
    ) -> SequenceReference:
        """Full BPTT for the batch, with the true future gradients at this rule's window
        boundaries (:func:`bioprop.recurrent.full_bptt`)."""
        return full_bptt(circuit, check_batch_call(self, x, y, loss), self.T)

    def backward(
        self,
        circuit: RecurrentCircuit,
        batch: Batch,
        keep_window_grads: bool = False,
        after_window: Callable[[int, Batch], None] | None = None,
    ) -> Signals:
        """Process ``batch`` window by window and write ``.grad``.

        ``Signals.extra`` holds ``error`` (bits per character), per inner boundary b the
        injected ``synthetic`` δ̂_b and M's ``target`` g_b (each (B, S)), ``module_loss``
        L_M and ``aux_loss`` (NaN where the rule has none), the ``final_state`` and, with
        ``keep_window_grads``, ``window_grads`` (each window's contribution to the core's
        ``.grad``).  ``after_window(k, batch)`` is called once window k's contribution has
        been computed (before window k+1 is read): the locality tests corrupt the batch's
        future there.
        """
        if circuit is not self.circuit:
            self.attach(circuit)
        core = core_named(circuit)
        module_params = list(self.module.parameters()) if self.module is not None else []
        for p in [*core.values(), *module_params]:
            p.grad = None
        x, y, mask = batch.x, batch.y, batch.mask
        n_b = x.shape[1]
        wins = windows(batch.length, self.T)
        state = batch.state if batch.state is not None else circuit.initial_state(n_b)
        # a stream batch that follows the last one: its start is the boundary where the
        # last batch's synthetic gradient entered, and window 0 delivers M's target there
        carried = self._open if batch.follows and batch.state is not None else None
        logits, synth, targets, wgrads = [], [], [], []
        loss_total, lm_total, aux_total = 0.0, 0.0, 0.0
        prev_pred: torch.Tensor | None = None
        # the gate weights stacked once for all windows (their .grad lands on leaving the
        # block); per-window gradients need the pathways' .grad after every window
        with contextlib.nullcontext() if keep_window_grads else circuit.shared_gate_weights():
            for k, (a, b) in enumerate(wins):
                last = k == len(wins) - 1
                s0 = circuit.flat(state).detach().requires_grad_(k > 0 or carried is not None)
                before = {n: _grad(p) for n, p in core.items()} if keep_window_grads else None
                end, out, _ = circuit.unroll(circuit.unflat(s0), x[a:b])
                lk = sequence_loss(out, y[a:b], mask[a:b])  # L_k
                j, ghat = lk, None
                if not last or batch.continues:
                    s_end = circuit.flat(end)
                    ghat = self.synthetic(k + 1, s_end.detach())  # δ̂_{k+1} = M(s_{k+1})
                    if ghat is not None:
                        # J_k = L_k + ⟨sg(κδ̂), s⟩/B
                        j = j + inject(self.scale * ghat, s_end, n_b)
                aux = self._aux_term(k, s0, ghat, n_b)
                if aux is not None:
                    j = j + aux
                    aux_total += float(aux.detach())
                if j.requires_grad:
                    j.backward()
                loss_total += float(lk.detach())
                logits.append(out.detach())
                if k > 0 and prev_pred is not None:
                    g = s0.grad if s0.grad is not None else torch.zeros_like(s0)
                    g = (g * n_b).detach()  # g_b = B · ∂J_b/∂s_b, M's bootstrapped target
                    synth.append(prev_pred.detach())
                    targets.append(g)
                    lm_total += fit_module(prev_pred, g, n_b)  # L_M
                elif k == 0 and carried is not None and s0.grad is not None:
                    # the boundary the last batch left open: M(s_b) with today's M, fit to g_b
                    lm_total += fit_module(self.synthetic(0, carried), s0.grad * n_b, n_b)
                if keep_window_grads:
                    wgrads.append({n: _grad(p) - before[n] for n, p in core.items()})
                prev_pred = ghat
                state = tuple(t.detach() for t in end)
                if after_window is not None:
                    after_window(k, batch)
        # the state where this batch's last synthetic gradient entered (a stream goes on)
        self._open = None
        if batch.continues and prev_pred is not None:
            self._open = circuit.flat(state).detach()
        all_logits = torch.cat(logits)
        has_aux = self.module is not None and self.module.aux is not None
        rates = {"input": x[-1], "hidden": state[0], "output": all_logits[-1]}
        if len(state) > 1:
            rates["cell"] = state[1]
        return Signals(
            loss=torch.tensor(loss_total, dtype=torch.float64),
            output=all_logits,
            rates=rates,
            extra={
                "error": bits_per_character(all_logits, batch.y, batch.mask),
                "synthetic": synth,
                "target": targets,
                "module_loss": lm_total if self.module is not None else math.nan,
                "aux_loss": aux_total if has_aux else math.nan,
                "window_grads": wgrads,
                "final_state": state,
            },
        )


def _grad(p: torch.Tensor) -> torch.Tensor:
    """A copy of ``p.grad`` (zeros where there is no gradient yet)."""
    return p.grad.clone() if p.grad is not None else torch.zeros_like(p)


@register
class BPTT(RecurrentRule):
    """Truncated backpropagation through time: gradients stop at every window boundary."""

    name = "bptt"
    description = "truncated BPTT over windows of T steps (state carried, gradient cut)"


@register
class DNI(RecurrentRule):
    """Truncated BPTT plus a synthetic gradient δ̂ = M(s) at every window boundary.

    Parameters
    ----------
    T
        Truncation length (steps per window).
    module
        ``"linear"`` (default) or ``"mlp"``.
    hidden
        Hidden sizes of an ``"mlp"`` module.
    """

    name = "dni"
    description = "truncated BPTT + synthetic gradient M(s_T) at each window boundary"
    _aux = False

    def __init__(
        self,
        T: int = 3,
        module: str = "linear",
        hidden: tuple[int, ...] = (),
        scale: float = 1.0,
    ):
        super().__init__(T)
        if module not in ("linear", "mlp"):
            raise ValueError(
                f"unknown synthetic-gradient module {module!r}; choose 'linear' or 'mlp'"
            )
        if not (isinstance(scale, (int, float)) and 0 < scale <= 1):
            raise ValueError(
                f"{self.name}: scale κ (the factor on the injected synthetic gradient) must be "
                f"in (0, 1], got {scale!r}"
            )
        self.module_kind, self.hidden, self.scale = module, tuple(hidden), float(scale)

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "T": self.T,
            "module": self.module_kind,
            "hidden": list(self.hidden),
            "scale": self.scale,
        }

    def install(self, circuit: Circuit, generator: torch.Generator) -> None:
        """Add M as the feedback pathway ``sg:hidden`` (replacing one an earlier rule left)."""
        m = BoundarySyntheticGradient(
            circuit.n_hidden,
            circuit.state_size,
            kind=self.module_kind,
            hidden=self.hidden,
            aux=self._aux,
            generator=generator,
        )
        ref = circuit.pathways["hidden->output"].weight
        m.to(dtype=ref.dtype, device=ref.device)
        self.module = m
        if m.name in circuit.pathways:
            circuit.remove_pathway(m.name)
        self._add(circuit, m)

    def synthetic(self, boundary: int, s: torch.Tensor) -> torch.Tensor:
        """δ̂_b = M(s_b) (with a graph through M's parameters, for L_M later)."""
        return self.module.predict(s)


@register
class DNIAux(DNI):
    """dni plus the auxiliary task of predicting the synthetic gradient one window ahead.

    Parameters
    ----------
    aux_weight
        λ, the weight of the auxiliary loss.
    """

    name = "dni-aux"
    description = "dni + auxiliary prediction of the synthetic gradient one window (2T) ahead"
    _aux = True

    def __init__(
        self,
        T: int = 3,
        module: str = "linear",
        hidden: tuple[int, ...] = (),
        aux_weight: float = 1.0,
        scale: float = 1.0,
    ):
        super().__init__(T, module, hidden, scale)
        if not aux_weight >= 0:
            raise ValueError(f"dni-aux: aux_weight must be >= 0, got {aux_weight!r}")
        self.aux_weight = float(aux_weight)

    def hyperparameters(self) -> dict[str, Any]:
        return {**super().hyperparameters(), "aux_weight": self.aux_weight}

    def _aux_term(self, k, s0, ghat, n_b):
        """λ (1/B) Σ_n ½‖A(s_b) − sg(δ̂_{b+1})‖², δ̂ = 0 after the last window."""
        if k == 0:
            return None  # s_0 = 0 is not produced by the circuit: nothing to teach
        pred = self.module.predict_ahead(s0)
        target = ghat.detach() if ghat is not None else torch.zeros_like(pred)
        return self.aux_weight * 0.5 * ((pred - target) ** 2).sum() / n_b
