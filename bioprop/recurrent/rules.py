"""Learning rules for recurrent circuits: ``bptt``, ``dni``, ``dni-aux`` (Jaderberg et al. 2017).

Notation: windows k = 0 … K−1 of T steps (:mod:`bioprop.recurrent.unroll`), boundary states
s_b = s_{bT} (h, or h ⊕ c for the LSTM), L_k the loss of window k, L = Σ_k L_k = (1/B) Σ_n ℓ_n.

* **bptt** (truncated):   ĝ_θ = Σ_k ∂L_k/∂θ |_{s_{kT} held fixed}
* **dni**: at each inner boundary the module M predicts the gradient of all future loss,
  δ̂_b = M(s_b) ≈ ∂(Σ_{j≥b} ℓ_{n,j})/∂s_b, and window k = b−1 backpropagates

      J_k = L_k + (1/B) Σ_n ⟨sg(δ̂_{k+1,n}), s_{k+1,n}⟩,      ĝ_θ = Σ_k ∂J_k/∂θ

  M is trained on the bootstrapped target: the true gradient at s_b from the next window plus
  that window's own synthetic gradient,

      g_b = B · ∂J_b/∂s_b,       L_M = Σ_b (1/B) Σ_n ½‖M(s_{b,n}) − sg(g_{b,n})‖²

* **dni-aux**: M has a second head A that predicts, from s_b, the synthetic gradient one
  window further ahead (2T steps after the start of window b−1): â_b = A(s_b) ≈ δ̂_{b+1}.
  Window b adds λ·(1/B) Σ_n ½‖A(s_{b,n}) − sg(δ̂_{b+1,n})‖² to J_b (δ̂ = 0 at the end of the
  sequence, where no future loss is left).  This trains A, and its gradient at s_b joins
  g_b — so the auxiliary task reaches the core the only way anything from window b can
  reach window b−1: through M's target (see ``docs/rnn_dni.md``).

A rule writes ``.grad`` of the core's parameters (summed over the windows of the batch) and
of its module's parameters; any ``torch.optim`` optimizer then applies them.  The module is a
feedback pathway ``sg:hidden`` of the circuit (role ``feedback``), like the feedforward DNI
modules, so it is listed, saved in ``state_dict`` and recorded.

Why a registry of its own (``bioprop.recurrent.rules.get``): these rules take a whole
sequence and cut it into windows, while ``bioprop.rules`` rules take one batch of a layered
or settling circuit (``forward`` → ``teach``); the feedforward registry already has a
``dni``.  The names here are the paper's: ``bptt``, ``dni``, ``dni-aux``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from bioprop.recurrent.circuit import RecurrentCircuit
from bioprop.recurrent.tasks import Batch, bits_per_character, sequence_loss
from bioprop.recurrent.unroll import check_truncation, windows
from bioprop.rules.synthetic_gradients import _ModulePathway

__all__ = [
    "RecurrentRule",
    "BPTT",
    "DNI",
    "DNIAux",
    "BoundarySyntheticGradient",
    "SequenceSignals",
    "full_bptt",
    "register",
    "get",
    "names",
]

_REGISTRY: dict[str, type[RecurrentRule]] = {}


def register(cls: type[RecurrentRule]) -> type[RecurrentRule]:
    """Class decorator: make a recurrent rule findable by its ``name``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a recurrent rule named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str, **hyperparameters) -> RecurrentRule:
    """A new recurrent rule by name, e.g. ``get("dni", T=4)``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown recurrent rule {name!r}; choose one of {names()}")
    return _REGISTRY[name](**hyperparameters)


def names() -> list[str]:
    """Registered recurrent rules."""
    return list(_REGISTRY)


@dataclass
class SequenceSignals:
    """What one rule step on a batch of sequences produced besides ``.grad``.

    ``loss`` is L (summed over steps, mean over the batch), ``error`` the bits per target
    character, ``logits`` (time, batch, n_out).  Per inner boundary b (a list of length K−1):
    ``synthetic`` δ̂_b = M(s_b) as injected, ``target`` g_b (per sample, (B, S)).
    ``module_loss`` is L_M (NaN for bptt), ``aux_loss`` the auxiliary loss (dni-aux).
    ``window_grads`` (only with ``keep_window_grads``) is each window's contribution to the
    core's ``.grad``: ``[{parameter name: tensor}, ...]``.
    """

    loss: float
    error: float
    logits: torch.Tensor
    synthetic: list[torch.Tensor] = field(default_factory=list)
    target: list[torch.Tensor] = field(default_factory=list)
    module_loss: float = math.nan
    aux_loss: float = math.nan
    window_grads: list[dict[str, torch.Tensor]] = field(default_factory=list)
    final_state: tuple[torch.Tensor, ...] = ()


def _core_named(circuit: RecurrentCircuit) -> dict[str, nn.Parameter]:
    out = {}
    for pw in circuit.pathways.values():
        if pw.role == "feedback":
            continue
        out[f"{pw.name}.weight"] = pw.weight
        if pw.bias is not None:
            out[f"{pw.name}.bias"] = pw.bias
    return out


class BoundarySyntheticGradient(_ModulePathway):
    """The module M at the window boundary of the recurrent population: δ̂ = M(s).

    ``kind="linear"``: δ̂ = A s + a; ``kind="mlp"``: Linear → ReLU → … → Linear (``hidden``
    sizes).  The last layer is zero-initialised, so δ̂ = 0 at the start (then dni = bptt).
    With ``aux=True`` a linear head â = A' s + a' (zero-initialised) predicts the synthetic
    gradient one window ahead (dni-aux).  s is h (RNN) or h ⊕ c (LSTM), so M maps
    state_size → state_size; the recorded ``weight`` (post × pre = hidden × hidden) is the
    h → ∂/∂h block of the module's linear-equivalent map.
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
        generator = generator or torch.Generator().manual_seed(0)
        sizes = [state_size, *(hidden if kind == "mlp" else ()), state_size]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layer = nn.Linear(a, b)
            with torch.no_grad():
                layer.bias.zero_()
                if i == len(sizes) - 2:
                    layer.weight.zero_()
                else:
                    bound = math.sqrt(6.0 / a)
                    layer.weight.copy_(torch.rand(b, a, generator=generator) * 2 * bound - bound)
            layers.append(layer)
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        super().__init__("hidden", "sg:hidden", nn.Sequential(*layers))
        self.kind, self.hidden, self.n_hidden, self.state_size = (
            kind,
            tuple(hidden),
            n_hidden,
            state_size,
        )
        self.columns = n_hidden
        self.aux = None
        if aux:
            self.aux = nn.Linear(state_size, state_size)
            with torch.no_grad():
                self.aux.weight.zero_()
                self.aux.bias.zero_()

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

    def describe(self) -> dict:
        d = super().describe()
        d.update(
            module=self.kind,
            hidden=list(self.hidden),
            aux=int(self.aux is not None),
            state_size=self.state_size,
            effective_weight="h -> dL/dh block of the module's linear-equivalent map",
        )
        return d


class RecurrentRule:
    """Base class: truncated BPTT over windows of ``T`` steps (subclasses add boundary terms).

    ``backward(circuit, batch)`` zeroes and then writes ``.grad`` of every plastic parameter
    it trains and returns :class:`SequenceSignals`.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, T: int):
        self.T = check_truncation(T)
        self.circuit: RecurrentCircuit | None = None
        self.module: BoundarySyntheticGradient | None = None

    def hyperparameters(self) -> dict:
        return {"T": self.T}

    def attach(self, circuit: RecurrentCircuit, generator: torch.Generator | None = None):
        if not isinstance(circuit, RecurrentCircuit):
            raise TypeError(
                f"recurrent rule {self.name!r} needs a RecurrentCircuit, "
                f"got {type(circuit).__name__}"
            )
        if self.circuit is not None and self.circuit is not circuit:
            raise RuntimeError(f"rule {self.name!r} is already attached to another circuit")
        self.circuit = circuit
        return self

    # hooks for tests (oracle synthetic gradients) -------------------------------------------
    def synthetic(self, boundary: int, s: torch.Tensor) -> torch.Tensor | None:
        """The synthetic gradient injected at inner boundary ``boundary`` (1 … K−1) given the
        detached boundary state ``s``; None for no boundary term (bptt)."""
        return None

    def backward(
        self,
        circuit: RecurrentCircuit,
        batch: Batch,
        keep_window_grads: bool = False,
        after_window: Callable[[int, Batch], None] | None = None,
    ) -> SequenceSignals:
        """Process ``batch`` window by window and write ``.grad``.

        ``after_window(k, batch)`` is called once window k's contribution has been computed
        (before window k+1 is read): the locality tests corrupt the batch's future there.
        """
        if circuit is not self.circuit:
            self.attach(circuit)
        core = _core_named(circuit)
        module_params = list(self.module.parameters()) if self.module is not None else []
        for p in [*core.values(), *module_params]:
            p.grad = None
        x, y, mask = batch.x, batch.y, batch.mask
        n_b = x.shape[1]
        wins = windows(batch.length, self.T)
        state = circuit.initial_state(n_b)
        logits, synth, targets, wgrads = [], [], [], []
        loss_total, lm_total, aux_total = 0.0, 0.0, 0.0
        prev_pred: torch.Tensor | None = None
        for k, (a, b) in enumerate(wins):
            last = k == len(wins) - 1
            s0 = circuit.flat(state).detach()
            if k > 0:
                s0.requires_grad_(True)
            before = (
                {n: (p.grad.clone() if p.grad is not None else None) for n, p in core.items()}
                if keep_window_grads
                else None
            )
            end, out, _ = circuit.unroll(circuit.unflat(s0), x[a:b])
            lk = sequence_loss(out, y[a:b], mask[a:b])
            j = lk
            ghat = None
            if not last:
                s_end = circuit.flat(end)
                ghat = self.synthetic(k + 1, s_end.detach())
                if ghat is not None:
                    j = j + (ghat.detach() * s_end).sum() / n_b  # ⟨sg(δ̂), s_end⟩ / B
            aux = self._aux_term(k, s0, ghat, n_b)
            if aux is not None:
                j = j + aux
                aux_total += float(aux.detach())
            if j.requires_grad:
                j.backward()
            loss_total += float(lk.detach())
            logits.append(out.detach())
            if k > 0 and prev_pred is not None:
                g = (s0.grad if s0.grad is not None else torch.zeros_like(s0)) * n_b  # target g_b
                synth.append(prev_pred.detach())
                targets.append(g.detach())
                lm = 0.5 * ((prev_pred - g) ** 2).sum() / n_b  # L_M
                if lm.requires_grad:
                    lm.backward()
                lm_total += float(lm.detach())
            if keep_window_grads:
                wgrads.append(
                    {
                        n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p))
                        - (before[n] if before[n] is not None else 0.0)
                        for n, p in core.items()
                    }
                )
            prev_pred = ghat
            state = tuple(t.detach() for t in end)
            if after_window is not None:
                after_window(k, batch)
        all_logits = torch.cat(logits)
        return SequenceSignals(
            loss=loss_total,
            error=bits_per_character(all_logits, batch.y, batch.mask),
            logits=all_logits,
            synthetic=synth,
            target=targets,
            module_loss=lm_total if self.module is not None else math.nan,
            aux_loss=aux_total
            if (self.module is not None and self.module.aux is not None)
            else math.nan,
            window_grads=wgrads,
            final_state=state,
        )

    def _aux_term(self, k, s0, ghat, n_b) -> torch.Tensor | None:
        return None


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

    def __init__(self, T: int, module: str = "linear", hidden: tuple[int, ...] = ()):
        super().__init__(T)
        if module not in ("linear", "mlp"):
            raise ValueError(
                f"unknown synthetic-gradient module {module!r}; choose 'linear' or 'mlp'"
            )
        self.kind, self.hidden = module, tuple(hidden)

    def hyperparameters(self) -> dict:
        return {"T": self.T, "module": self.kind, "hidden": list(self.hidden)}

    def attach(self, circuit: RecurrentCircuit, generator: torch.Generator | None = None):
        super().attach(circuit, generator)
        if self.module is None:
            gen = generator or torch.Generator().manual_seed(circuit.seed + 1)
            m = BoundarySyntheticGradient(
                circuit.n_hidden,
                circuit.state_size,
                kind=self.kind,
                hidden=self.hidden,
                aux=self._aux,
                generator=gen,
            )
            ref = circuit.pathways["hidden->output"].weight
            m.to(dtype=ref.dtype, device=ref.device)
            self.module = m
            if m.name in circuit.pathways:
                circuit.remove_pathway(m.name)
            circuit.add_pathway(m)
        return self

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
        self, T: int, module: str = "linear", hidden: tuple[int, ...] = (), aux_weight: float = 1.0
    ):
        super().__init__(T, module, hidden)
        if not aux_weight >= 0:
            raise ValueError(f"dni-aux: aux_weight must be >= 0, got {aux_weight!r}")
        self.aux_weight = float(aux_weight)

    def hyperparameters(self) -> dict:
        return {**super().hyperparameters(), "aux_weight": self.aux_weight}

    def _aux_term(self, k, s0, ghat, n_b):
        """λ (1/B) Σ_n ½‖A(s_b) − sg(δ̂_{b+1})‖², δ̂ = 0 after the last window."""
        if k == 0:
            return None  # s_0 = 0 is not produced by the circuit: nothing to teach
        pred = self.module.predict_ahead(s0)
        target = ghat.detach() if ghat is not None else torch.zeros_like(pred)
        return self.aux_weight * 0.5 * ((pred - target) ** 2).sum() / n_b


def full_bptt(
    circuit: RecurrentCircuit, batch: Batch, T: int | None = None
) -> tuple[float, dict[str, torch.Tensor], list[torch.Tensor]]:
    """The untruncated reference (autograd through the whole sequence; ``.grad`` untouched).

    Returns L, ∂L/∂θ of the core (``{"pathway.weight": grad}``) and, for the inner boundaries
    b of windows of ``T`` (none if T is None), the true boundary gradient per sample

        g*_b = B · ∂L_{≥b}/∂s_b,      L_{≥b} = the loss of the steps after boundary b,

    the gradient of all *future* error that an ideal synthetic gradient δ̂_b would equal (the
    loss read out from s_b itself belongs to the window that ends at b).
    """
    core = _core_named(circuit)
    n_b = batch.x.shape[1]
    wins = windows(batch.length, T) if T is not None else [(0, batch.length)]
    with torch.enable_grad():
        # window by window *without* detaching: s_b = flat(state) is a node of the graph and
        # the next window starts from unflat(s_b), so ∂/∂s_b is the partial derivative with
        # respect to the whole state (for the LSTM, c at fixed h and h at fixed c)
        state, outs, bounds = circuit.initial_state(n_b), [], []
        for k, (a, b) in enumerate(wins):
            if k > 0:
                s_b = circuit.flat(state)
                bounds.append(s_b)
                state = circuit.unflat(s_b)
            state, out_k, _ = circuit.unroll(state, batch.x[a:b])
            outs.append(out_k)
        out = torch.cat(outs)
        loss = sequence_loss(out, batch.y, batch.mask)
        params = list(core.values())
        grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=bool(bounds))
        g = {
            n: (gr if gr is not None else torch.zeros_like(p))
            for (n, p), gr in zip(core.items(), grads, strict=True)
        }
        true = []
        for i, ((a, _), s_b) in enumerate(zip(wins[1:], bounds, strict=True)):
            future = sequence_loss(out[a:], batch.y[a:], batch.mask[a:])
            (gs,) = torch.autograd.grad(
                future, [s_b], allow_unused=True, retain_graph=i < len(bounds) - 1
            )
            true.append(((gs if gs is not None else torch.zeros_like(s_b)) * n_b).detach())
    return float(loss.detach()), g, true
