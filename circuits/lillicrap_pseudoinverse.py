"""Lillicrap, Cownden, Tweed & Akerman 2016, Fig. 4: feedback alignment acts like a pseudoinverse.

With forward weights that start near zero, feedback alignment drives W to behave like a
local pseudoinverse of the fixed feedback B around the error: FA's hidden teaching
signal Δh_FA = B e comes to point closer to the "pseudobackprop" signal
Δh_PBP = W⁺ e (W⁺ the Moore-Penrose pseudoinverse of the hidden->output weights;
a Gauss-Newton-like update) than to backprop's Δh_BP = Wᵀ e.

Task and circuit as in Fig. 1 (linear 30-20-10, y* = T x, T ~ U[-1, 1], x ~ N(0, I),
per-example updates, B ~ U[-0.5, 0.5]).  Two conditions:

* small init  — forward weights ~ U[-0.001, 0.001] (the paper's regime)
* large init  — forward weights ~ U[-0.3, 0.3] (a control: far from zero)

The learning rate (0.003) is ours; it is small enough that the output error stays above
float32 round-off for the whole run, so every angle is measured on a real error e.

Outputs in --out: fa_<condition>_seed<s>.h5 recordings and lillicrap_pseudoinverse.png
(∠(Δh_FA, Δh_BP) and ∠(Δh_FA, Δh_PBP) over training).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

import bioprop as bp

import _common as C

CONDITIONS = {"small init": 0.001, "large init": 0.3}  # forward weights ~ U[-ω, ω]
LR = 0.003
FULL = {"steps": 3000, "record_every": 20, "n_test": 500, "window": 10}
QUICK = {"steps": 100, "record_every": 10, "n_test": 200, "window": 3}


def train_one(omega: float, tag: str, s: int, budget: dict, args):
    data_seed = circuit_seed = train_seed = s  # streams are salted by purpose
    data = bp.data.linear_teacher(n_train=budget["steps"], n_test=budget["n_test"], seed=data_seed)
    circuit = bp.Circuit.layered(
        [30, 20, 10],
        activation="linear",
        init=bp.init.uniform(omega),
        bias=False,
        seed=circuit_seed,
    )
    path = args.out / f"fa_{tag}_seed{s}.h5"
    run = bp.train(
        circuit,
        bp.rules.get("fa", feedback_init=bp.init.uniform(0.5)),
        data,
        loss="mse",
        optimizer=("sgd", {"lr": LR}),
        epochs=1,
        batch_size=1,
        seed=train_seed,
        progress=False,
        record=bp.Record(path, every=budget["record_every"], samples=1),
    )
    rec = bp.load(path)
    to_bp = bp.analysis.update_angle(rec, "hidden").load()  # ∠(B e, Wᵀ e)
    to_pbp = bp.analysis.pseudoinverse_angle(rec, "hidden->output").load()  # ∠(B e, W⁺ e)
    rec.close()
    return to_bp, to_pbp, run.history["test_nse"][-1]


def crossing(to_bp: xr.DataArray, to_pbp: xr.DataArray, window: int) -> float:
    """First step after which the smoothed ∠ to W⁺e stays below the smoothed ∠ to Wᵀe."""
    below = (C.smooth(to_pbp, window) < C.smooth(to_bp, window)).values
    if not below[-1]:
        return np.inf
    last_above = np.nonzero(~below)[0]
    i = last_above[-1] + 1 if last_above.size else 0
    return float(to_bp.step.values[i])


def main(argv=None) -> None:
    args = C.parse_args("lillicrap_pseudoinverse", __doc__, default_seeds=5, argv=argv)
    budget = QUICK if args.quick else FULL
    w = budget["window"]
    results = {}
    for cond, omega in CONDITIONS.items():
        tag = cond.split()[0]
        runs = [train_one(omega, tag, s, budget, args) for s in range(args.seeds)]
        results[cond] = {
            "bp": xr.concat([r[0] for r in runs], dim="seed"),
            "pbp": xr.concat([r[1] for r in runs], dim="seed"),
            "nse": [r[2] for r in runs],
            "cross": [crossing(r[0], r[1], w) for r in runs],
        }

    n = args.seeds
    print(
        f"\nFeedback alignment, linear 30-20-10, {budget['steps']} examples, batch 1, "
        f"lr {LR}, {n} seed(s); angles: mean over the last 20% of training\n"
    )
    rows = []
    for cond, r in results.items():
        end_bp = [C.tail_mean(a) for a in r["bp"]]
        end_pbp = [C.tail_mean(a) for a in r["pbp"]]
        r["end_bp"], r["end_pbp"] = np.array(end_bp), np.array(end_pbp)
        rows.append(
            [
                cond,
                f"U[-{CONDITIONS[cond]:g}, {CONDITIONS[cond]:g}]",
                C.mean_sd(r["nse"]),
                C.mean_sd(end_bp, ".1f"),
                C.mean_sd(end_pbp, ".1f"),
                C.mean_sd(r["cross"], ".0f"),
            ]
        )
    print(
        C.table(
            [
                "condition",
                "W init",
                "final test NSE",
                "∠(Δh_FA, Δh_BP) °",
                "∠(Δh_FA, Δh_PBP) °",
                "examples until PBP < BP",
            ],
            rows,
        )
    )

    small, large = results["small init"], results["large init"]
    print("\nClaims (Lillicrap et al. 2016, Fig. 4)")
    wins = int(np.sum(small["end_pbp"] < small["end_bp"]))
    print(
        C.claim(
            "with small initial weights, ∠(Δh_FA, Δh_PBP) quickly becomes smaller than "
            "∠(Δh_FA, Δh_BP)",
            f"small init: {small['end_pbp'].mean():.1f}° to W⁺e vs {small['end_bp'].mean():.1f}° "
            f"to Wᵀe at the end ({wins}/{n} seeds); the PBP angle is the smaller one from "
            f"example {np.mean(small['cross']):.0f} of {budget['steps']} on average",
            wins == n and np.mean(small["cross"]) < budget["steps"] / 2,
            args.quick,
        )
    )
    gap_small = float(np.mean(small["end_bp"] - small["end_pbp"]))
    gap_large = float(np.mean(large["end_bp"] - large["end_pbp"]))
    print(
        C.claim(
            "the effect belongs to small initial weights: the gap ∠BP − ∠PBP shrinks when "
            "W starts large",
            f"gap ∠BP − ∠PBP: {gap_small:.1f}° with small init, {gap_large:.1f}° with large init",
            gap_small > gap_large,
            args.quick,
            source="control (ours)",
        )
    )

    fig, ax = C.new_figure(len(results))
    for k, (cond, r) in enumerate(results.items()):
        a = ax[0, k]
        for key, label, color in (
            ("bp", "∠(Δh_FA, Δh_BP)", "C0"),
            ("pbp", "∠(Δh_FA, Δh_PBP)", "C3"),
        ):
            sm = C.smooth(r[key], w)
            C.band(a, sm.step, sm.values, label, color=color)
        a.axhline(90, color="grey", ls="--", lw=1)
        a.set(
            xlabel="examples",
            ylabel="angle (°)",
            ylim=(0, 110),
            title=f"{'ab'[k]}  FA, {cond} (W ~ U[±{CONDITIONS[cond]:g}])",
        )
        a.legend()
    png = C.save_figure(fig, args.out / "lillicrap_pseudoinverse.png")
    print(f"\nwrote {png} and {len(results) * n} recordings in {args.out}  ({C.wall(args)})")


if __name__ == "__main__":
    main()
