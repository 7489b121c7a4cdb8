"""Equilibrium propagation (Scellier & Bengio 2017) on dynamical rate circuits.

Two phases of the same dynamics (:func:`bioprop.settling.dynamics.settle`):

* **free phase** — the input is clamped and the free populations settle to a fixed
  point u⁰ of the energy E (:meth:`EquilibriumPropagation.forward`);
* **nudged phase** — starting from u⁰, the output is nudged towards the target by
  −β ∂C/∂u_out = β (y − u_out), C = ½‖u_out − y‖², and the circuit settles (for a few
  steps) to u^β (:meth:`EquilibriumPropagation.teach`).

Every plastic feedforward pathway p → q then gets the contrastive Hebbian update
(Scellier & Bengio 2017, eq. 11 with ∂E/∂W_qp = −ρ(u_q)ρ(u_p)ᵀ), a batch mean::

    ΔW_qp = (1/β) ⟨ρ(u_q^β) ρ(u_p^β)ᵀ − ρ(u_q⁰) ρ(u_p⁰)ᵀ⟩,     Δb_q = (1/β) ⟨ρ(u_q^β) − ρ(u_q⁰)⟩

written into ``.grad`` as the pseudo-gradient ĝ = −ΔW, so that SGD on ĝ applies +ΔW.
As β → 0, ĝ → ∂L/∂θ of L = C(u⁰(θ)) (the recurrent-backprop / BPTT gradient;
:func:`bioprop.settling.dynamics.bptt`).  Options:

* ``random_sign`` — β's sign is drawn per batch (Scellier & Bengio's code), which
  cancels the O(β) bias of the one-sided estimate on average;
* ``symmetric`` — a third phase with −β from u⁰ (Laborieux et al. 2021), and
  ΔW = (1/2β) ⟨ρ^β ρ^βᵀ − ρ^{−β} ρ^{−β}ᵀ⟩, whose bias is O(β²);
* ``persistent`` — each training example's free phase starts from its previous free
  fixed point (Scellier & Bengio's persistent particles).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch

from bioprop.core.circuit import Circuit, SweepState
from bioprop.core.losses import Loss
from bioprop.core.pathway import TransposePathway
from bioprop.rules.contract import Rule, Signals
from bioprop.rules.registry import register
from bioprop.settling import dynamics as _dyn

__all__ = ["EquilibriumPropagation", "EquilibriumState", "write_ep_grads", "ep_delta"]


class EquilibriumState(SweepState):
    """The free phase's fixed point as a :class:`SweepState` (``u``, ``r``), plus the
    :class:`~bioprop.settling.dynamics.Settled` record it came from (``settled``)."""

    def __init__(self, settled: _dyn.Settled):
        super().__init__(settled.u, settled.r)
        self.settled = settled


@torch.no_grad()
def write_ep_grads(
    circuit: Circuit,
    free: dict[str, torch.Tensor],
    nudged: dict[str, torch.Tensor],
    beta: float,
    minus: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the EP pseudo-gradient into every plastic feedforward pathway p → q.

    ``free``, ``nudged`` (and ``minus``) are the rates ρ(u) per population at the ends
    of the phases (batch-first).  One-sided (``minus`` None)::

        ĝ_W = −ΔW = (1/β) (1/N) (ρ_q⁰ᵀ ρ_p⁰ − ρ_q^βᵀ ρ_p^β),   ĝ_b = (1/β) ⟨ρ_q⁰ − ρ_q^β⟩

    symmetric (Laborieux et al. 2021)::

        ĝ_W = (1/2β) (1/N) (ρ_q^{−β}ᵀ ρ_p^{−β} − ρ_q^βᵀ ρ_p^β),   ĝ_b = (1/2β) ⟨ρ_q^{−β} − ρ_q^β⟩

    The update of W_qp reads the rates of p and q only (and W_qp's shape).  Where the
    source is the clamped input (the same x in both phases) it is one GEMM,
    ĝ_W = (1/β)(1/N) (ρ_q⁰ − ρ_q^β)ᵀ x.
    """
    if minus is None:
        lo, scale = free, 1.0 / beta
    else:
        lo, scale = minus, 1.0 / (2.0 * beta)
    hi = nudged
    for pw in circuit.feedforward_pathways():
        if not pw.plastic:
            continue
        q_lo, q_hi = lo[pw.target], hi[pw.target]
        p_lo, p_hi = lo[pw.source], hi[pw.source]
        n = q_hi.shape[0]
        dq = q_lo - q_hi
        if p_lo is p_hi:  # clamped source: ρ_p is the same in both phases
            pw.weight.grad = torch.addmm(pw.weight, dq.t(), p_hi, beta=0.0, alpha=scale / n)
        else:
            g = torch.addmm(pw.weight, q_lo.t(), p_lo, beta=0.0, alpha=scale / n)
            pw.weight.grad = g.addmm_(q_hi.t(), p_hi, alpha=-scale / n)
        if pw.bias is not None:
            pw.bias.grad = dq.mean(0).mul_(scale)


def ep_delta(
    free: dict[str, torch.Tensor],
    nudged: dict[str, torch.Tensor],
    beta: float,
    names: list[str],
    minus: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """EP's teaching signal per sample: δ_q = (ρ_q⁰ − ρ_q^β)/β (or (ρ_q^{−β} − ρ_q^β)/2β),
    the per-sample bias pseudo-gradient, which → ∂ℓ_n/∂b_q as β → 0."""
    if minus is None:
        return {q: (free[q] - nudged[q]) / beta for q in names}
    return {q: (minus[q] - nudged[q]) / (2.0 * beta) for q in names}


class _ParticleBank:
    """Free-phase states per training example (persistent particles), keyed by a hash
    of the example's input bytes (the rule sees batches, not dataset indices)."""

    def __init__(self) -> None:
        self.slots: dict[int, int] = {}
        self.store: dict[str, torch.Tensor] = {}
        self.count = 0

    @staticmethod
    def keys(x: torch.Tensor) -> list[int]:
        rows = x.detach().to("cpu").contiguous().numpy()
        return [hash(row.tobytes()) for row in rows]

    def get(self, keys: list[int], like: dict[str, torch.Tensor] | None) -> dict | None:
        idx = [self.slots.get(k, -1) for k in keys]
        if self.count == 0 or all(i < 0 for i in idx):
            return None
        rows = torch.tensor(idx)
        known = rows >= 0
        out = {}
        for name, buf in self.store.items():
            s = buf.new_zeros(len(keys), buf.shape[1])
            s[known.to(buf.device)] = buf[rows[known].to(buf.device)]
            out[name] = s
        return out

    def put(self, keys: list[int], u: dict[str, torch.Tensor]) -> None:
        idx = []
        for k in keys:
            i = self.slots.get(k)
            if i is None:
                i = self.slots[k] = self.count
                self.count += 1
            idx.append(i)
        rows = torch.tensor(idx)
        for name, t in u.items():
            buf = self.store.get(name)
            if buf is None or buf.shape[0] < self.count:
                cap = max(self.count, 2 * (buf.shape[0] if buf is not None else 512))
                new = t.new_zeros(cap, t.shape[1])
                if buf is not None:
                    new[: buf.shape[0]] = buf
                self.store[name] = buf = new
            buf[rows.to(buf.device)] = t.detach()

    def __len__(self) -> int:
        return self.count


@register
class EquilibriumPropagation(Rule):
    """Equilibrium propagation: free phase, nudged phase, contrastive Hebbian update.

    The circuit's populations (but the clamped input) must be ``leaky``; the settling
    (ε, free steps, tolerance) is the circuit's (``circuit.settling``, see
    :func:`bioprop.settling.dynamics.layered_dynamical`), so training and evaluation settle alike.
    On attach the rule installs a :class:`~bioprop.TransposePathway` (W itself, not a copy)
    behind every forward pathway whose source settles.

    Parameters
    ----------
    beta
        Nudging strength β ≠ 0 (F = E + β C, C = ½‖u_out − y‖²).
    nudged_steps
        Euler steps of the nudged phase (from the free fixed point).
    random_sign
        Draw the sign of β per batch (Scellier & Bengio's code).
    symmetric
        Add the −β phase of Laborieux et al. (2021): ĝ from ρ^β and ρ^{−β}.
    persistent
        Start each example's free phase from its last free fixed point (persistent
        particles); the bank lives in memory and is not checkpointed.
    nudged_tol
        Optional tolerance for the nudged phase (default: a fixed number of steps).
    record_bptt
        On recording steps, also record the BPTT gradient through the free phase
        (``weight_update_bptt``, ``bias_update_bptt``, ``delta_bptt``).

    Raises
    ------
    ValueError
        ``beta`` = 0 (the update is 0/0 there), bad step counts; at attach, populations
        that are not leaky, lateral pathways, or a feedback pathway that is not Wᵀ.
    """

    name = "ep"
    kind = "settling"
    description = (
        "equilibrium propagation: free and nudged settling of a symmetric circuit, "
        "contrastive Hebbian update (1/β)(ρ^β ρ^βᵀ − ρ⁰ρ⁰ᵀ)"
    )

    def __init__(
        self,
        beta: float = 0.5,
        nudged_steps: int = 4,
        random_sign: bool = False,
        symmetric: bool = False,
        persistent: bool = False,
        nudged_tol: float | None = None,
        record_bptt: bool = True,
    ):
        super().__init__()
        if not isinstance(beta, (int, float)) or not math.isfinite(beta):
            raise ValueError(f"ep: beta must be a finite number, got {beta!r}")
        if beta == 0:
            raise ValueError(
                "ep: beta must be non-zero for training: the update (1/β)(ρ^β ρ^βᵀ − ρ⁰ρ⁰ᵀ) is "
                "0/0 at β = 0 (the nudged phase with β = 0 just reproduces the free state). "
                "Use a small beta such as 0.1–1.0, with random_sign=True or symmetric=True "
                "to cancel the finite-β bias"
            )
        if not isinstance(nudged_steps, int) or nudged_steps < 1:
            raise ValueError(f"ep: nudged_steps must be a positive integer, got {nudged_steps!r}")
        self.beta = float(beta)
        self.nudged_steps = nudged_steps
        self.random_sign = bool(random_sign)
        self.symmetric = bool(symmetric)
        self.persistent = bool(persistent)
        self.nudged_tol = nudged_tol
        self.record_bptt = bool(record_bptt)
        self.generator = torch.Generator().manual_seed(0)
        self._bank = _ParticleBank()
        self._plan = None
        self._keys: list[int] | None = None
        self.last_beta = self.beta

    # -- attaching -----------------------------------------------------------------------
    def supports(self, circuit: Circuit) -> str | None:
        """Settling circuits only: every free population leaky, no lateral pathway."""
        try:
            _dyn.check_dynamical(circuit)
        except ValueError as exc:
            return str(exc)
        return None

    def install(self, circuit: Circuit, generator: torch.Generator) -> None:
        mirrored = {fb.mirrors: fb for fb in circuit.feedback_pathways() if fb.mirrors}
        for pw in list(circuit.feedforward_pathways()):
            if pw.source == circuit.input:
                continue  # the input is clamped: nothing flows back into it
            fb = mirrored.get(pw.name)
            if isinstance(fb, TransposePathway) and fb._forward is pw:
                continue  # already symmetric (e.g. built by hand)
            if fb is None:
                self._add(circuit, TransposePathway(pw))
        _dyn.symmetric_feedback(circuit)  # raises for a non-symmetric feedback pathway
        self._plan = _dyn.plan(circuit)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        self.generator = torch.Generator().manual_seed(seed)
        self._bank = _ParticleBank()
        if type(circuit).forward is Circuit.forward:
            warnings.warn(
                "ep is attached to a plain Circuit: circuit(x) and bioprop.evaluate run its "
                "feedforward sweep, not the settling. Build it with "
                "bioprop.settling.dynamics.layered_dynamical(...) (a DynamicalCircuit) so that test "
                "metrics are read at the free fixed point",
                UserWarning,
                stacklevel=3,
            )

    # -- one step ------------------------------------------------------------------------
    def _settling(self, circuit: Circuit) -> _dyn.Settling:
        return _dyn.settling_of(circuit)

    def forward(self, circuit: Circuit, x: torch.Tensor) -> EquilibriumState:
        """The free phase: settle with the input clamped to x (β = 0)."""
        s = self._settling(circuit)
        self._plan = _dyn.plan(circuit, s, self._plan)
        start = None
        if self.persistent:
            self._keys = _ParticleBank.keys(x)
            start = self._bank.get(self._keys, None)
        k = self._trace_samples if self.recording else 0
        free = _dyn.settle(circuit, x, s, start=start, trace=k, plan_cache=self._plan)
        if self.persistent:
            self._bank.put(self._keys, free.u)
        return EquilibriumState(free)

    _trace_samples: int = 16

    def _draw_beta(self) -> float:
        if self.random_sign and int(torch.randint(0, 2, (1,), generator=self.generator)) == 0:
            return -self.beta
        return self.beta

    def teach(self, circuit: Circuit, state: SweepState, y: torch.Tensor, loss: Loss) -> Signals:
        """The nudged phase(s) from the free fixed point, then ĝ into ``.grad``."""
        if loss.name != "mse":
            raise ValueError(
                f"ep nudges with the cost C = ½‖u_out − y‖² (Scellier & Bengio 2017); train it "
                f"with loss='mse', not {loss.name!r}"
            )
        if not isinstance(state, EquilibriumState):
            state = EquilibriumState(
                _dyn.settle(circuit, state.r[circuit.input], plan_cache=self._plan)
            )
        s = self._settling(circuit)
        free = state.settled
        x = free.r[circuit.input]
        out = circuit.output
        y = _dyn._targets(y, free.u[out])
        beta = self._draw_beta()
        self.last_beta = beta
        k = self._trace_samples if self.recording else 0
        with torch.no_grad():
            nudged = _dyn.settle(
                circuit,
                x,
                s,
                beta=beta,
                target=y,
                start=free.u,
                steps=self.nudged_steps,
                tol=self.nudged_tol,
                trace=k,
                drive=free.drive,
                plan_cache=self._plan,
            )
            minus = None
            if self.symmetric:
                minus = _dyn.settle(
                    circuit,
                    x,
                    s,
                    beta=-beta,
                    target=y,
                    start=free.u,
                    steps=self.nudged_steps,
                    tol=self.nudged_tol,
                    trace=k,
                    drive=free.drive,
                    plan_cache=self._plan,
                )
            write_ep_grads(circuit, free.r, nudged.r, beta, minus.r if minus else None)
            d = free.u[out] - y
            L = 0.5 * (d * d).sum(1).mean()
        signals = Signals(L, free.r[out])
        if self.recording:
            names = _dyn.free_populations(circuit)
            signals.delta = ep_delta(free.r, nudged.r, beta, names, minus.r if minus else None)
            signals.records = self._records(circuit, s, x, y, beta, free, nudged, minus)
        return signals

    # -- recording -----------------------------------------------------------------------
    def _time_len(self, s: _dyn.Settling) -> int:
        return 1 + s.steps + self.nudged_steps * (2 if self.symmetric else 1)

    def record_variables(self, circuit: Circuit, samples: int) -> dict[str, dict[str, Any]]:
        """Declared recording layout (see ``docs/ep.md``):

        ``populations/<q>``  ``trajectory (time, sample, neuron)``: states u of the first
        samples over settling time (time 0 = start, then the free steps, then the nudged
        steps [then the −β steps]); ``delta_bptt (sample, neuron)``.
        ``pathways/<p->q>``  ``weight_update_bptt (post, pre)``, ``bias_update_bptt (post)``.
        ``settling``         ``energy, cost, total_energy (time, sample)``, ``phase (time)``,
        ``beta``, ``free_steps``, ``free_residual``, ``free_converged``.
        """
        from bioprop.recording.writer import ExtraVariable

        s = self._settling(circuit)
        self._trace_samples = int(samples)
        T = self._time_len(s)
        k = int(samples)
        phases = (
            f"time 0: start; 1..{s.steps}: free phase (beta = 0, NaN after an early stop); "
            f"{s.steps + 1}..{s.steps + self.nudged_steps}: nudged phase (beta)"
        )
        if self.symmetric:
            phases += (
                f"; {s.steps + self.nudged_steps + 1}..{T - 1}: third phase (-beta), "
                "from the free state"
            )
        tattrs = {
            "epsilon": s.epsilon,
            "free_steps": s.steps,
            "nudged_steps": self.nudged_steps,
            "time_axis": phases,
        }
        out: dict[str, dict[str, Any]] = {}
        for name in _dyn.free_populations(circuit):
            n = circuit.populations[name].size
            g: dict[str, Any] = {}
            if k > 0:
                g["trajectory"] = ExtraVariable(
                    ("time", "sample", "neuron"),
                    (T, k, n),
                    "state u over settling time (first samples of the batch)",
                    attrs=tattrs,
                )
                if self.record_bptt:
                    g["delta_bptt"] = ExtraVariable(
                        ("sample", "neuron"),
                        (k, n),
                        "BPTT teaching signal per sample through the free phase, dl/db",
                    )
            if g:
                out[f"populations/{name}"] = g
        if self.record_bptt:
            for pw in circuit.feedforward_pathways():
                if not pw.plastic:
                    continue
                n_post, n_pre = pw.shape
                g = {
                    "weight_update_bptt": ExtraVariable(
                        ("post", "pre"),
                        (n_post, n_pre),
                        "BPTT update through the free-phase settling, -dL/dW",
                    )
                }
                if pw.bias is not None:
                    g["bias_update_bptt"] = ExtraVariable(
                        ("post",), (n_post,), "BPTT bias update through the settling, -dL/db"
                    )
                out[f"pathways/{pw.name}"] = g
        sg: dict[str, Any] = {
            "beta": ExtraVariable((), (), "signed beta of this step's nudged phase", "f8"),
            "free_steps": ExtraVariable((), (), "Euler steps taken by the free phase", "f8"),
            "free_residual": ExtraVariable((), (), "max |du/dt| at the last free step", "f8"),
            "free_converged": ExtraVariable(
                (), (), "1 if the free phase stopped on the tolerance, 0 on the step budget", "f8"
            ),
            "phase": ExtraVariable(
                ("time",),
                (T,),
                "0 start/free, 1 nudged (+beta), 2 third phase (-beta)",
                attrs={"time_axis": phases},
            ),
        }
        if k > 0:
            for v, long in (
                ("energy", "E(u) over settling time, per sample"),
                ("cost", "C(u) = 1/2 |u_out - y|^2 over settling time, per sample"),
                ("total_energy", "F = E + beta C over settling time (beta of the phase)"),
            ):
                sg[v] = ExtraVariable(("time", "sample"), (T, k), long, attrs={"time_axis": phases})
        out["settling"] = sg
        return out

    def _records(self, circuit, s, x, y, beta, free, nudged, minus) -> dict[str, dict[str, Any]]:
        k = self._trace_samples
        T = self._time_len(s)
        names = _dyn.free_populations(circuit)
        rec: dict[str, dict[str, Any]] = {}
        phase = torch.zeros(T)
        phase[1 + s.steps : 1 + s.steps + self.nudged_steps] = 1
        if minus is not None:
            phase[1 + s.steps + self.nudged_steps :] = 2
        bvec = torch.zeros(T, dtype=torch.float64)
        bvec[phase == 1] = beta
        bvec[phase == 2] = -beta
        rec["settling"] = {
            "beta": beta,
            "free_steps": float(free.steps),
            "free_residual": free.residual,
            "free_converged": float(free.converged),
            "phase": phase,
        }
        if k > 0:
            traj: dict[str, torch.Tensor] = {}
            for name in names:
                parts = [_pad_time(free.trajectory[name], s.steps + 1)]
                parts.append(nudged.trajectory[name][1:])
                if minus is not None:
                    parts.append(minus.trajectory[name][1:])
                traj[name] = _pad_samples(torch.cat(parts), k)
                rec.setdefault(f"populations/{name}", {})["trajectory"] = traj[name]
            m = min(k, x.shape[0])
            flat = {nm: t[:, :m].reshape(T * m, -1) for nm, t in traj.items()}
            xs = x[:m].repeat(T, 1)
            ys = y[:m].repeat(T, 1)
            with torch.no_grad():
                e = _dyn.energy(circuit, xs, flat).reshape(T, m)
                c = _dyn.cost(circuit, flat, ys).reshape(T, m)
            f = e + bvec.to(e.dtype).view(T, 1) * c
            for v, val in (("energy", e), ("cost", c), ("total_energy", f)):
                rec["settling"][v] = _pad_samples(val, k, dim=1)
        if self.record_bptt:
            ref = _dyn.bptt(
                circuit, x, y, s, steps=free.steps, start=free.start, plan_cache=self._plan
            )
            for pw in circuit.feedforward_pathways():
                if not pw.plastic:
                    continue
                g = rec.setdefault(f"pathways/{pw.name}", {})
                g["weight_update_bptt"] = -ref.grads[f"{pw.name}.weight"]
                if pw.bias is not None:
                    g["bias_update_bptt"] = -ref.grads[f"{pw.name}.bias"]
            if k > 0:
                for name in names:
                    rec[f"populations/{name}"]["delta_bptt"] = _pad_samples(ref.delta[name], k)
        return rec

    # -- bookkeeping ---------------------------------------------------------------------
    def hyperparameters(self) -> dict[str, Any]:
        hp: dict[str, Any] = {
            "beta": self.beta,
            "nudged_steps": self.nudged_steps,
            "random_sign": self.random_sign,
            "symmetric": self.symmetric,
            "persistent": self.persistent,
            "nudged_tol": self.nudged_tol,
            "record_bptt": self.record_bptt,
        }
        if self.circuit is not None:
            s = self._settling(self.circuit)
            hp.update(epsilon=s.epsilon, free_steps=s.steps, free_tol=s.tol, bounded=s.bounded)
        return hp

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])


def _pad_time(t: torch.Tensor, length: int) -> torch.Tensor:
    """Pad ``(time, k, n)`` with NaN frames to ``length`` (a free phase that stopped early)."""
    if t.shape[0] >= length:
        return t[:length]
    pad = t.new_full((length - t.shape[0], *t.shape[1:]), math.nan)
    return torch.cat([t, pad])


def _pad_samples(t: torch.Tensor, k: int, dim: int = None) -> torch.Tensor:
    """Keep the first k samples along ``dim`` (default: 1 for 3-D, 0 for 2-D), NaN-padded."""
    if dim is None:
        dim = 1 if t.dim() == 3 else 0
    t = t.detach().narrow(dim, 0, min(k, t.shape[dim]))
    if t.shape[dim] < k:
        shape = list(t.shape)
        shape[dim] = k - t.shape[dim]
        t = torch.cat([t, t.new_full(shape, math.nan)], dim=dim)
    return t
