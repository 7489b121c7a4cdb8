# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # How random feedback comes to align with backprop
#
# Feedback alignment (FA; Lillicrap et al. 2016) sends the output error $e$ back to a
# hidden population through a fixed random matrix $B$ instead of the transpose of the
# forward weights $W^\top$.  At first $Be$ is unrelated to backprop's $W^\top e$ (about
# 90° apart), yet the circuit learns, because the forward weights change until the
# random feedback becomes useful.  This notebook reads **recordings** — the HDF5 files
# `bioprop.train(..., record=bp.Record(...))` writes — and measures that process:
#
# 1. the update angle $\angle(\delta_\text{rule}, \delta_\text{BP})$ of every hidden
#    population (Lillicrap's $\angle(\Delta h_\text{FA}, \Delta h_\text{BP})$), and of every
#    forward pathway $\angle(\Delta W_\text{rule}, \Delta W_\text{BP})$;
# 2. the weight alignment $\angle(W^\top, B)$ of each forward pathway with its feedback;
# 3. the norm ratio $\lVert B\rVert / \lVert W\rVert$;
# 4. the pseudoinverse angle $\angle(\delta_\text{rule}, W^{+}e)$ next to the angle to
#    backprop (Lillicrap et al., Fig. 4).
#
# Every recording carries its own backprop reference: on each recorded step the trainer
# also computed the backprop gradient for the same batch and weights (without applying
# it), stored as `update_bp` and `delta_bp`.

# %% tags=["parameters"]
import os

# A folder of .h5 recordings (e.g. the --out folder of circuits/lillicrap_linear.py).
# Empty: this notebook first makes a small fresh recording of its own.
RECORDINGS = os.environ.get("BIOPROP_RECORDINGS", "")
MAX_FILES = 12  # analyse at most this many recordings (sorted by name)
SMOOTH = 5  # running mean over this many records for the (noisy, per-batch) angles

# %%
import sys
import tempfile
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules:  # run as a plain script: no display needed
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

import bioprop as bp

# %% [markdown]
# ## The recordings
#
# Without a folder, we train the linear 30-20-10 circuit of Lillicrap et al.'s Fig. 1
# (y = T x, forward weights ~ U[−0.01, 0.01], B ~ U[−0.5, 0.5], one example per
# update) briefly with `fa` and with `bp`, plus `fa` on a deeper linear 30-20-20-10
# circuit so that there are two hidden populations to compare.  Task, circuit and
# rule's feedback come from different seeds on purpose (a procedural task and a
# circuit built from the same seed would draw the same random numbers).

# %%
TEMPORARY = not RECORDINGS  # recordings trained here go to a folder removed at the end
if TEMPORARY:
    RECORDINGS = tempfile.mkdtemp(prefix="bioprop-alignment-")
    data = bp.data.linear_teacher(n_train=600, n_test=200, seed=10_000)
    for name, rule, sizes, lr in [
        ("fa", "fa", [30, 20, 10], 0.01),
        ("bp", "bp", [30, 20, 10], 0.01),
        ("fa-deep", "fa", [30, 20, 20, 10], 0.003),  # two B's in series: a smaller rate
    ]:
        circuit = bp.Circuit.layered(
            sizes, activation="linear", init=bp.init.uniform(0.01), bias=False, seed=20_000
        )
        kwargs = {"feedback_init": bp.init.uniform(0.5)} if rule == "fa" else {}
        run = bp.train(
            circuit,
            bp.rules.get(rule, **kwargs),
            data,
            loss="mse",
            optimizer=("sgd", {"lr": lr}),
            epochs=1,
            batch_size=1,
            seed=0,
            progress=False,
            record=bp.Record(Path(RECORDINGS) / f"{name}.h5", every=20, samples=1),
        )
        print(run.summary())

paths = sorted(Path(RECORDINGS).glob("*.h5"))[:MAX_FILES]
assert paths, f"no .h5 recordings in {RECORDINGS}"
recs = {p.stem: bp.load(p) for p in paths}


def hidden_populations(rec):
    pops = rec["populations"].children
    return [
        n for n, node in pops.items() if not node.attrs["is_input"] and not node.attrs["is_output"]
    ]


def feedback_pathways(rec):
    """{feedback pathway: forward pathway it mirrors}."""
    return {
        n: node.attrs["mirrors"]
        for n, node in rec["pathways"].children.items()
        if node.attrs.get("role") == "feedback" and "mirrors" in node.attrs
    }


def label(name, rec):
    return f"{name} ({rec.attrs['rule']}, seed {rec.attrs['seed']})"


def smooth(a):
    return a.rolling(step=SMOOTH, center=True, min_periods=1).mean() if SMOOTH > 1 else a


pd.DataFrame(
    [
        {
            "recording": name,
            "rule": rec.attrs["rule"],
            "task": rec.attrs["task"],
            "records": rec["metrics"].sizes["step"],
            "last step": int(rec["metrics"]["step"][-1]),
            "hidden": ", ".join(hidden_populations(rec)),
            "feedback pathways": ", ".join(feedback_pathways(rec)) or "-",
        }
        for name, rec in recs.items()
    ]
)

# %% [markdown]
# ## 1. Update angles
#
# **Per hidden population**, the angle between the rule's teaching signal δ and
# backprop's, over the recorded samples of each step.  For FA it starts near 90° (B is
# random) and falls well below it as W comes to align with B.  A rule that does not
# record its δ (the `bp` rule itself, by default) has nothing to compare and is skipped.
#
# **Per forward pathway**, the angle between the rule's weight update and backprop's.
# For `bp` it is 0° by construction — a check of the shadow reference.  For FA the
# pathway into the output gets the true output error and also sits at 0°; the pathways
# into hidden populations carry FA's approximation.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
for name, rec in recs.items():
    for pop in hidden_populations(rec):
        delta = rec["populations"][pop].to_dataset().get("delta")
        if delta is None or bool(delta.isnull().all()):
            continue
        a = bp.analysis.update_angle(rec, pop)
        axes[0].plot(a.step, smooth(a), label=f"{label(name, rec)}: {pop}")
    for pw, node in rec["pathways"].children.items():
        if node.attrs["role"] != "feedforward":
            continue
        try:
            a = bp.analysis.update_angle(rec, pw)
        except KeyError:  # recorded without the rule's or the backprop update
            continue
        axes[1].plot(a.step, smooth(a), label=f"{label(name, rec)}: {pw}")
for ax, title in zip(
    axes, ["∠(δ_rule, δ_BP) per hidden population", "∠(ΔW_rule, ΔW_BP) per pathway"]
):
    ax.axhline(90, color="grey", ls="--", lw=1)
    ax.set(xlabel="step", ylabel="angle (°)", ylim=(-5, 115), title=title)
    ax.legend(fontsize=7)

# %% [markdown]
# ## 2. Weight alignment ∠(Wᵀ, B)
#
# The mechanism behind FA: the forward weights W of the pathway that B mirrors turn
# toward Bᵀ.  The angle between Wᵀ and B over all their entries starts near 90° (two
# independent random matrices) and falls.  It need not reach 0°: what matters is the
# alignment seen by the errors that actually occur, which is what the update angle above
# measures.
#
# ## 3. Norm ratio ‖B‖/‖W‖
#
# How large the feedback is compared with the forward weights it stands in for.  With
# small initial weights it starts large (here ~50: B ~ U[−0.5, 0.5] against
# W ~ U[−0.01, 0.01]) and falls as W grows; it scales FA's effective learning rate in
# the hidden layer relative to backprop's.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
for name, rec in recs.items():
    for fb, fw in feedback_pathways(rec).items():
        a = bp.analysis.weight_alignment(rec, fw)
        axes[0].plot(a.step, a, label=f"{label(name, rec)}: {fw}")
        r = bp.analysis.norm_ratio(rec, fw)
        axes[1].plot(r.step, r, label=f"{label(name, rec)}: {fb}")
axes[0].axhline(90, color="grey", ls="--", lw=1)
axes[0].set(xlabel="step", ylabel="angle (°)", ylim=(-5, 115), title="∠(Wᵀ, B)")
axes[1].set(xlabel="step", ylabel="‖B‖ / ‖W‖", yscale="log", title="norm ratio")
for ax in axes:
    ax.legend(fontsize=7)

# %% [markdown]
# ## 4. Pseudoinverse angle
#
# Lillicrap et al. (Fig. 4) found that with small initial weights FA does more than
# approximate backprop: W comes to act like a local pseudoinverse of B around the error,
# so FA's hidden signal Be points closer to the "pseudobackprop" signal W⁺e — a
# Gauss–Newton-like direction — than to backprop's Wᵀe.  Below, solid lines are the
# angle to W⁺e and dashed lines the angle to Wᵀe, for the population that feeds each
# mirrored pathway.  (The analysis uses the output population's δ as e, so it applies to
# pathways into the output.)

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.8), layout="constrained")
rows = []
for k, (name, rec) in enumerate(recs.items()):
    for fb, fw in feedback_pathways(rec).items():
        node = rec["pathways"][fw]
        if node.attrs["target"] != rec.attrs["output_population"]:
            continue
        src = node.attrs["source"]
        to_pbp = smooth(bp.analysis.pseudoinverse_angle(rec, fw))
        to_bp = smooth(bp.analysis.update_angle(rec, src))
        (line,) = ax.plot(to_pbp.step, to_pbp, label=f"{label(name, rec)}: {src}, to W⁺e")
        ax.plot(to_bp.step, to_bp, ls="--", color=line.get_color(), label="… to Wᵀe")
        n = to_bp.sizes["step"]
        tail = slice(n - max(1, n // 5), n)
        rows.append(
            {
                "recording": name,
                "population": src,
                "∠ to Wᵀe, last 20% (°)": float(to_bp.isel(step=tail).mean()),
                "∠ to W⁺e, last 20% (°)": float(to_pbp.isel(step=tail).mean()),
            }
        )
ax.axhline(90, color="grey", ls="--", lw=1)
ax.set(xlabel="step", ylabel="angle (°)", ylim=(-5, 115), title="FA hidden signal: to W⁺e vs Wᵀe")
ax.legend(fontsize=7)

# %%
pd.DataFrame(rows).round(1) if rows else "no recording with feedback into the output population"

# %% [markdown]
# ## Summary
#
# The table gives, per recording, the mean over the last fifth of the recorded steps.
# For the circuit scripts' full runs (`python circuits/lillicrap_linear.py`, then
# `BIOPROP_RECORDINGS=runs/lillicrap_linear`), the update angle of FA's hidden
# population ends far below 90°, ∠(Wᵀ, B) has fallen, and — with small initial weights
# (`circuits/lillicrap_pseudoinverse.py`) — the angle to W⁺e ends below the angle to Wᵀe.

# %%
summary = []
for name, rec in recs.items():
    row = {"recording": name, "rule": rec.attrs["rule"]}
    for pop in hidden_populations(rec):
        delta = rec["populations"][pop].to_dataset().get("delta")
        if delta is not None and not bool(delta.isnull().all()):
            a = bp.analysis.update_angle(rec, pop)
            row[f"∠(δ, δ_BP) {pop} first"] = float(a.isel(step=0))
            row[f"∠(δ, δ_BP) {pop} last 20%"] = float(
                a.isel(step=slice(-max(1, a.sizes["step"] // 5), None)).mean()
            )
    for fb, fw in feedback_pathways(rec).items():
        w = bp.analysis.weight_alignment(rec, fw)
        row[f"∠(Wᵀ,B) {fw} first"] = float(w.isel(step=0))
        row[f"∠(Wᵀ,B) {fw} last"] = float(w.isel(step=-1))
    summary.append(row)
table = pd.DataFrame(summary).set_index("recording").T
for rec in recs.values():
    rec.close()
table.round(1)

# %%
if TEMPORARY:  # the recordings trained above lived in a temporary folder
    import shutil

    shutil.rmtree(RECORDINGS, ignore_errors=True)
