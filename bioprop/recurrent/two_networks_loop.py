"""The training loop of the two-network system (Jaderberg et al. 2017, §3.3), with recordings.

:func:`fit` trains a :class:`~bioprop.recurrent.two_networks.TwoNetworks` with one method
(``bptt``, ``dni``, ``truncated``) on streams drawn from a dataset: batches from
``seeding.generator(seed, "data")``, held-out streams from ``(seed, "test-streams")``, one
optimizer from :func:`~bioprop.training.optim.make_optimizer` (modules in the group
``"module"``), the networks' gradient norm clipped.  Every ``every`` updates (and after the
last) it evaluates the held-out streams and, for ``dni``, compares the message module's
predictions with the true ∂L_B/∂m_j (:func:`bioprop.analysis.angle`).

Recordings (``<stem>_A.h5``, ``<stem>_B.h5``; one writer, :class:`~bioprop.Recorder`): the
weights and updates of each network, ``metrics`` (batch loss), ``evaluation`` (test
accuracies) and, in A's file, ``interfaces/message`` (angle and relative error of M_m per
tick; NaN without a message module).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from bioprop.analysis.alignment import angle
from bioprop.core import seeding
from bioprop.recording.provenance import provenance
from bioprop.recording.writer import ExtraVariable, Record, Recorder
from bioprop.recurrent.recording import relative_error
from bioprop.recurrent.two_networks import (
    Method,
    StreamTask,
    TwoNetworks,
    evaluate,
    get_method,
    message_gradients,
    train_step,
)
from bioprop.rules.contract import Signals
from bioprop.training.optim import make_optimizer

__all__ = ["fit", "TwoNetworkRun"]

TASK = "two-network stream (odd counts, 3-counts)"
LOSS = "softmax cross-entropy, summed over blocks/ticks, mean over the batch (L_A + L_B)"


@dataclass
class TwoNetworkRun:
    """Learning curves of one method: at every evaluation ``step``, the test accuracies of
    A and B and the mean over ticks of ∠(M_m(m_j), ∂L_B/∂m_j) in degrees (NaN without a
    message module); ``chance_b`` is the commonest-count guess of B's test targets."""

    method: str
    seed: int
    step: list[int] = field(default_factory=list)
    acc_a: list[float] = field(default_factory=list)
    acc_b: list[float] = field(default_factory=list)
    angle: list[float] = field(default_factory=list)
    chance_b: float = math.nan


def _recorders(stem, net, method, opt, seed, every, attrs, n_ticks) -> dict[str, Recorder]:
    out = {}
    for which in ("A", "B"):
        extra = {
            "evaluation": {
                "acc_a": ExtraVariable((), (), "test accuracy of A's odd counts"),
                "acc_b": ExtraVariable((), (), "test accuracy of B's counts of 3s"),
            }
        }
        if which == "A":
            extra["interfaces/message"] = {
                "angle": ExtraVariable(("tick",), (n_ticks,), "angle(M_m(m_j), dL_B/dm_j), deg"),
                "relative_error": ExtraVariable(("tick",), (n_ticks,), "|M_m(m) - true|/|true|"),
            }
        circuit = getattr(net, which)
        meta = provenance(
            circuit, method, task=TASK, loss=LOSS, optimizer=opt, seed=seed, network=which, **attrs
        )
        spec = Record(
            f"{stem}_{which}.h5",
            every=every,
            samples=0,
            variables=["weight", "bias", "weight_update", "bias_update"],
        )
        out[which] = Recorder(spec, circuit, attrs=meta, extra=extra)
    return out


def fit(
    net: TwoNetworks,
    method: str | Method,
    data: Any,
    *,
    blocks: int,
    steps: int,
    n_test: int = 512,
    batch_size: int = 32,
    optimizer: Any = ("adam", {"lr": 3e-3, "module_lr": 1e-3}),
    clip: float = 10.0,
    seed: int = 0,
    every: int = 50,
    record: str | os.PathLike | None = None,
    attrs: dict[str, Any] | None = None,
) -> TwoNetworkRun:
    """Train ``net`` with ``method`` for ``steps`` updates on streams of ``blocks`` blocks of
    ``data``'s images (a :class:`bioprop.data.Dataset` with classes 0…9).

    ``record`` is the path stem of the two recordings (None: no recording); ``attrs`` are
    added to their provenance (e.g. the dataset's name).
    """
    method = get_method(method)
    for what, v in (("steps", steps), ("every", every), ("n_test", n_test), ("blocks", blocks)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{what} must be a positive integer, got {v!r}")
    task = StreamTask(data.x_train, data.y_train, T=net.T, blocks=blocks)
    test = StreamTask(data.x_test, data.y_test, T=net.T, blocks=blocks).sample(
        n_test, seeding.generator(seed, "test-streams")
    )
    opt = make_optimizer(optimizer, net, method)
    gen = seeding.generator(seed, "data")
    budget = {"T": net.T, "blocks": blocks, "steps": steps, "batch_size": batch_size, "clip": clip}
    recs = {}
    if record is not None:
        recs = _recorders(
            record, net, method, opt, seed, every, {**budget, **(attrs or {})}, blocks
        )
    run = TwoNetworkRun(method.name, seed)
    try:
        for step in range(steps):
            s = task.sample(batch_size, gen)
            out = train_step(net, s, method)
            if step % every == 0 or step == steps - 1:
                ev = evaluate(net, test)
                ang = np.full(blocks, np.nan, np.float32)
                rel = np.full(blocks, np.nan, np.float32)
                if out.get("message_synthetic"):
                    true = message_gradients(net, s)
                    for j, (g, t) in enumerate(zip(out["message_synthetic"], true, strict=True)):
                        ang[j], rel[j] = angle(g, t), relative_error(g, t)
                losses = {"A": out["loss_a"], "B": out["loss_b"]}
                for which, rec in recs.items():
                    records = {"evaluation": {"acc_a": ev["acc_a"], "acc_b": ev["acc_b"]}}
                    if which == "A":
                        records["interfaces/message"] = {"angle": ang, "relative_error": rel}
                    sig = Signals(torch.tensor(losses[which]), torch.zeros(1), records=records)
                    rec.write(step, 0, sig)
                run.step.append(step)
                run.acc_a.append(ev["acc_a"])
                run.acc_b.append(ev["acc_b"])
                run.angle.append(float(np.nanmean(ang)) if np.isfinite(ang).any() else math.nan)
            torch.nn.utils.clip_grad_norm_(net.network_parameters(), clip)
            opt.step()
    finally:
        for r in recs.values():
            r.close()
    run.chance_b = evaluate(net, test)["chance_b"]
    return run
