"""Differentiable plasticity (Miconi, Clune & Stanley 2018): ``dp-bptt`` and ``dp-fa``.

Circuits with Hebbian pathways (:mod:`bioprop.plasticity`) change their effective weights
within an episode, w + α ⊙ Hebb(t), by a local Hebbian rule; what the *outer* loop learns
across episodes is w, α and η — how to learn.  Both rules run on the recurrent kind: a step
takes a batch of episodes, ``step(circuit, batch, None, None)`` with an
:class:`~bioprop.plasticity.tasks.EpisodeBatch`, and the loss is the episode tasks' own,
L = (1/B) Σ_n Σ_t m_t ‖o_t − y_t‖² (the squared error at the last step).

* **dp-bptt** — the paper's outer loop: ĝ_θ = ∂L/∂θ for θ ∈ {w, b, α, η} by
  backpropagation through the whole episode, through the rates and through the traces.
  It *is* the family's exact reference (:func:`bioprop.plasticity.episode_bptt`).  It also
  trains circuits without Hebbian pathways (an LSTM, a tanh RNN) the same way — the
  non-plastic baselines of the experiments.

* **dp-fa** — the outer gradient without backprop through time, from quantities local to
  each synapse at the steps that carry a loss: the output error e_t = ∂ℓ/∂o_t reaches
  the hidden units one to one where the outputs are those units, and through fa's fixed
  random feedback B (Lillicrap et al. 2016) across a trained read-out or plastic output
  layer; δ_q = f′(u_q) ⊙ (that signal) (0 on clamped units), and for a pathway p → q::

      ĝ_w = ⟨δ_q x_pᵀ⟩,  ĝ_b = ⟨δ_q⟩
      ĝ_α = ⟨(δ_q x_pᵀ) ⊙ Hebb(t)⟩                  (the trace that step used)
      ĝ_η = Σ_ij α_ij ⟨(δ_q x_pᵀ) ⊙ E(t)⟩_ij,       E = ∂Hebb/∂η at fixed rates
                                                     (:func:`bioprop.plasticity.trace.eligibility`)

  summed over the loss steps (⟨·⟩ the batch mean).  Every factor is at the synapse (its
  pre rate, its trace, its eligibility) or at its post unit (δ): BPTT truncated to one
  step, plus a forward eligibility for η.  Its reference is BPTT through the episode.
"""

from __future__ import annotations

from typing import Any

import torch

from bioprop.core.circuit import Circuit
from bioprop.core.pathway import Pathway
from bioprop.plasticity.circuit import EpisodeCircuit, Step
from bioprop.plasticity.pathway import HebbianPathway, OneToOnePathway
from bioprop.plasticity.recording import plasticity_records, plasticity_variables
from bioprop.plasticity.reference import episode_bptt, trained_parameters
from bioprop.plasticity.tasks import EpisodeBatch, episode_error, episode_loss, output_error
from bioprop.plasticity.trace import eligibility
from bioprop.recurrent.circuit import RecurrentCircuit
from bioprop.rules.contract import Rule, Signals, check_batch_call
from bioprop.rules.registry import register

__all__ = ["EpisodeRule", "DPBPTT", "DPFA"]


class EpisodeRule(Rule):
    """Shared by the family: the reference, the recordings, the checks.

    Parameters
    ----------
    hebb_samples
        How many episodes of a recorded batch keep a snapshot of their final trace.
    """

    kind = "recurrent"
    #: the batches this family steps on carry their own targets and loss
    batch_call = (
        EpisodeBatch,
        "a batch of episodes",
        "the episodes (their y, mask and the squared error at the last step)",
    )

    def __init__(self, hebb_samples: int = 1):
        super().__init__()
        if isinstance(hebb_samples, bool) or not isinstance(hebb_samples, int) or hebb_samples < 0:
            raise ValueError(f"hebb_samples must be an integer >= 0, got {hebb_samples!r}")
        self.hebb_samples = hebb_samples
        self._reference: tuple[EpisodeBatch, Any] | None = None
        self._samples = 0

    def hyperparameters(self) -> dict[str, Any]:
        return {"hebb_samples": self.hebb_samples}

    def reference(self, circuit: Circuit, x: Any, y: Any = None, loss: Any = None):
        """BPTT through the episode for the batch (``.grad`` untouched)."""
        batch = check_batch_call(self, x, y, loss)
        ref = episode_bptt(circuit, batch)[0]
        self._reference = (batch, ref)  # the records of this batch's step show it
        return ref

    def record_variables(self, circuit: Circuit, samples: int) -> dict[str, dict[str, Any]]:
        self._samples = samples
        if not isinstance(circuit, EpisodeCircuit):
            return {}
        return plasticity_variables(circuit, samples, self.hebb_samples)

    def _finish(self, circuit, batch: EpisodeBatch, out, rates, final) -> Signals:
        """The Signals of a step; on recording steps the plasticity records."""
        loss = episode_loss(out, batch)
        records = {}
        if self.recording and isinstance(circuit, EpisodeCircuit):
            ref = None
            if self._reference is not None and self._reference[0] is batch:
                ref = self._reference[1]
            records = plasticity_records(
                circuit,
                ref,
                circuit.traces(final),
                batch.patterns,
                self._samples,
                self.hebb_samples,
            )
        self._reference = None
        rates = {"input": batch.x[-1], "hidden": rates[-1], "output": out[-1]}
        return Signals(
            loss=loss.detach(),
            output=out.detach(),
            rates={k: v.detach() for k, v in rates.items()},
            extra={"error": episode_error(out, batch)},
            records=records,
        )


@register
class DPBPTT(EpisodeRule):
    """Differentiable plasticity's outer loop: w, b, α, η by BPTT through the episode."""

    name = "dp-bptt"
    description = (
        "differentiable plasticity: w, alpha, eta of w + alpha*Hebb trained by BPTT "
        "through the episode (the family's reference is this rule itself)"
    )
    is_reference = True

    def supports(self, circuit: Circuit) -> str | None:
        if not isinstance(circuit, (EpisodeCircuit, RecurrentCircuit)):
            return (
                f"rule {self.name!r} trains a circuit run through episodes: a "
                "bioprop.plasticity.PlasticRNN or PlasticFeedforward (or, as a non-plastic "
                f"baseline, a RecurrentCircuit), but this circuit is a {circuit.kind} "
                f"{type(circuit).__name__}"
            )
        return None

    def step(self, circuit: Circuit, x: Any, y: Any = None, loss: Any = None) -> Signals:
        """One outer step: ``.grad`` = ∂L/∂θ of every trained parameter (BPTT)."""
        batch = check_batch_call(self, x, y, loss)
        if circuit is not self.circuit:
            self.attach(circuit)
        params = list(dict.fromkeys(trained_parameters(circuit).values()))
        for p in params:
            p.grad = None
        # an LSTM/RNN baseline returns its per-step states only when asked (keep_states)
        more = {"keep_states": True} if isinstance(circuit, RecurrentCircuit) else {}
        with torch.enable_grad():
            s0 = circuit.initial_state(batch.x.shape[1])
            final, out, rates = circuit.unroll(s0, batch.x, **more)
            episode_loss(out, batch).backward()
        out, rates = out.detach(), rates.detach() if torch.is_tensor(rates) else rates
        if not torch.is_tensor(rates):  # an LSTM/RNN returns its per-step states
            rates = torch.stack([s[0] for s in rates]).detach()
        return self._finish(circuit, batch, out, rates, tuple(s.detach() for s in final))


@register
class DPFA(EpisodeRule):
    """Differentiable plasticity without backprop through time (module docstring).

    Parameters
    ----------
    feedback_init
        Initialiser of fa's feedback B (default: like the forward pathway's init, as fa).
    hebb_samples
        As :class:`EpisodeRule`.
    """

    name = "dp-fa"
    description = (
        "differentiable plasticity without BPTT: w, alpha, eta from the loss steps' errors "
        "(fa's random B across trained read-outs) and local traces; reference: BPTT"
    )

    def __init__(self, feedback_init=None, hebb_samples: int = 1):
        super().__init__(hebb_samples)
        if feedback_init is not None:
            from bioprop.core import init as _init

            _init.resolve(feedback_init)
        self.feedback_init = feedback_init
        self.feedback: dict[str, Pathway] = {}

    def hyperparameters(self) -> dict[str, Any]:
        fb = repr(self.feedback_init) if self.feedback_init else "like-forward"
        return {**super().hyperparameters(), "feedback_init": fb}

    def supports(self, circuit: Circuit) -> str | None:
        if not isinstance(circuit, EpisodeCircuit):
            return (
                f"rule {self.name!r} trains circuits with Hebbian pathways "
                "(bioprop.plasticity.PlasticRNN, PlasticFeedforward); this circuit is a "
                f"{circuit.kind} {type(circuit).__name__}; use 'dp-bptt' for it"
            )
        return None

    def install(self, circuit: Circuit, generator: torch.Generator) -> None:
        """fa's fixed random B across ``hidden->output`` when the output is not a copy of
        the hidden units and something upstream of it is trained."""
        from bioprop.rules.feedback_alignment import _draw

        self.feedback = {}
        fw = circuit.pathways["hidden->output"]
        upstream = [  # a trained pathway into the hidden units needs their δ
            p
            for pw in circuit.pathways.values()
            if pw.target == "hidden" and pw.role != "feedback"
            for p in pw.own_parameters()
            if p.requires_grad
        ]
        if isinstance(fw, OneToOnePathway) or not upstream:
            return
        n_post, n_pre = fw.weight.shape
        w, used = _draw(self.feedback_init, fw, (n_pre, n_post), generator)
        fb = Pathway(
            "output", "hidden", w, None, role="feedback", plastic=False, mirrors=fw.name, init=used
        )
        self._add(circuit, fb)
        self.feedback[fw.name] = fb

    def step(self, circuit: Circuit, x: Any, y: Any = None, loss: Any = None) -> Signals:
        batch = check_batch_call(self, x, y, loss)
        if circuit is not self.circuit:
            self.attach(circuit)
        n_b = batch.x.shape[1]
        learn_eta = {pw.name: pw for pw in circuit.active_pathways() if pw.eta.requires_grad}
        elig = {name: pw.initial_trace(n_b) for name, pw in learn_eta.items()}
        loss_steps = set(torch.nonzero(batch.mask).flatten().tolist())
        kept: list[tuple[Step, dict[str, torch.Tensor]]] = []

        def on_step(s: Step) -> None:
            if s.t in loss_steps:
                kept.append((s, dict(elig)))  # E(t) before this step's update
            for name, pw in learn_eta.items():
                elig[name] = eligibility(
                    elig[name], s.hebb[name], s.pre[name], s.post[name], pw.eta, pw.form
                )

        with torch.no_grad():
            final, out, rates = circuit.unroll(circuit.initial_state(n_b), batch.x, on_step)
            grads = self._local_grads(circuit, kept, output_error(out, batch), n_b)
            for p in circuit.core_parameters():
                p.grad = grads.get(id(p))
        return self._finish(circuit, batch, out, rates, final)

    def _local_grads(self, circuit, kept, e_all, n_b) -> dict[int, torch.Tensor]:
        """ĝ of every trained parameter, summed over the loss steps (module docstring)."""
        g: dict[int, torch.Tensor] = {}

        def add(p, value):
            if p is not None and p.requires_grad:
                g[id(p)] = g[id(p)] + value if id(p) in g else value

        out_pw = circuit.pathways["hidden->output"]
        for s, elig in kept:
            e = e_all[s.t]
            delta = {"output": self._at("output", circuit, s, e)}
            if isinstance(out_pw, OneToOnePathway):
                back = torch.nn.functional.pad(e, (0, circuit.n_hidden - e.shape[1]))
            elif out_pw.name in self.feedback:
                back = self.feedback[out_pw.name](delta["output"])  # B δ_out (fa)
            else:
                back = None
            if back is not None:
                delta["hidden"] = self._at("hidden", circuit, s, back)
            for pw in circuit.pathways.values():
                d = delta.get(pw.target)
                if pw.role == "feedback" or d is None or isinstance(pw, OneToOnePathway):
                    continue
                pre = s.pre.get(pw.name, s.x if pw.source == "input" else s.r.get(pw.source))
                outer = d.unsqueeze(2) * pre.unsqueeze(1)  # δ_q x_pᵀ per sample
                add(pw.weight, outer.sum(0) / n_b)
                add(pw.bias, d.sum(0) / n_b)
                if isinstance(pw, HebbianPathway) and pw.name in s.hebb:
                    ga = (outer * s.hebb[pw.name]).sum(0) / n_b
                    add(pw.alpha, ga.sum() if pw.shared_alpha else ga)
                    if pw.name in elig:
                        ge = ((outer * elig[pw.name]).sum(0) / n_b * pw.alpha).sum()
                        add(pw.eta, ge)
        return g

    @staticmethod
    def _at(pop: str, circuit, s: Step, signal: torch.Tensor) -> torch.Tensor:
        """δ = f′(u) ⊙ signal at population ``pop`` (0 on clamped units); populations
        computed after the loop (a linear read-out) take the signal as it is."""
        if pop not in s.u:
            return signal
        act = circuit.populations[pop].act
        d = signal if act.name == "linear" else signal * act.fprime(s.u[pop], s.r[pop])
        clamped = s.clamped.get(pop)
        return d if clamped is None else d * (~clamped)
