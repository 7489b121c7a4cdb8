"""Lillicrap, Cownden, Tweed & Akerman 2016, Fig. 1: random feedback learns a linear map.

A linear 30-20-10 circuit learns y* = T x (T ~ U[-1, 1], x ~ N(0, I)) online, one
example per update, with squared error ½‖e‖².  Forward weights start in
U[-0.01, 0.01]; feedback alignment's fixed feedback matrix B is drawn from
U[-0.5, 0.5].  Four rules train the same circuit (same initial weights, same
examples in the same order):

* shallow            — only the hidden->output weights learn
* node-perturbation  — every unit (hidden and output) learns from one broadcast scalar
                       change in loss, times its own perturbation
                       (the paper's "reinforcement learning" baseline)
* bp                 — backpropagation (autograd)
* fa                 — feedback alignment: δ_hidden = B e

The learning rates are ours, chosen so that each rule learns fast but stays stable on
this task (measured: bp and fa diverge at 0.03, node perturbation at 0.01; shallow
learning has only the tiny hidden rates of the small initial weights to work with and
needs a large rate to reach its plateau within the budget).  The budget, 2000 examples,
ends about when bp and fa reach float32 round-off (test NSE ~ 1e-13), so the angles at
the end are still measured on real errors.

Outputs in --out: one recording per rule and seed (<rule>_seed<s>.h5), the test-error
curves (curves.nc) and lillicrap_linear.png (learning curves; ∠(Δh_FA, Δh_BP)).
"""

from __future__ import annotations

import numpy as np
import xarray as xr

import bioprop as bp

import _common as C

# rule -> SGD learning rate (per-example updates)
RULES = {"shallow": 3.0, "node-perturbation": 0.0005, "bp": 0.01, "fa": 0.01}
FULL = {"steps": 2000, "eval_every": 40, "record_every": 100, "fa_record_every": 20, "n_test": 500}
QUICK = {"steps": 100, "eval_every": 20, "record_every": 50, "fa_record_every": 10, "n_test": 200}


def make_rule(name: str) -> bp.rules.Rule:
    """The rule with task 'linear''s options for it (fa: B ~ U[±0.5], Lillicrap et al.)."""
    return bp.tasks.get("linear").rule(name)


def train_one(rule: str, s: int, budget: dict, args) -> tuple[xr.DataArray, str]:
    data_seed = circuit_seed = train_seed = s  # streams are salted by purpose
    data = bp.data.linear_teacher(n_train=budget["steps"], n_test=budget["n_test"], seed=data_seed)
    circuit = bp.Circuit.layered(
        [30, 20, 10],
        activation="linear",
        init=bp.init.uniform(0.01),
        bias=False,
        seed=circuit_seed,
    )
    curve = C.TestCurve(circuit, data, every=budget["eval_every"])
    every = budget["fa_record_every"] if rule == "fa" else budget["record_every"]
    path = args.out / f"{rule}_seed{s}.h5"
    bp.train(
        circuit,
        make_rule(rule),
        data,
        loss="mse",
        optimizer=("sgd", {"lr": RULES[rule]}),
        epochs=1,
        batch_size=1,
        seed=train_seed,
        progress=False,
        on_step=curve,
        record=bp.Record(path, every=every, samples=1),
    )
    return curve.to_xarray(rule=rule, seed=s), str(path)


def main(argv=None) -> None:
    args = C.parse_args("lillicrap_linear", __doc__, default_seeds=5, argv=argv)
    budget = QUICK if args.quick else FULL
    curves, angles = {}, []
    for rule in RULES:
        per_seed = []
        for s in range(args.seeds):
            curve, path = train_one(rule, s, budget, args)
            per_seed.append(curve)
            if rule == "fa":
                # ∠(Δh_FA, Δh_BP): FA's hidden teaching signal B e against backprop's Wᵀ e
                rec = bp.load(path)
                angles.append(bp.analysis.update_angle(rec, "hidden").load())
                rec.close()
        curves[rule] = xr.concat(per_seed, dim="seed")
    angle = xr.concat(angles, dim="seed")
    xr.Dataset({r: c.drop_vars("rule") for r, c in curves.items()}).to_netcdf(
        args.out / "curves.nc", engine="h5netcdf"
    )

    # -- table ------------------------------------------------------------------------
    level = 1e-2
    reach = {r: [C.steps_to(c.sel(seed=s), level) for s in c.seed] for r, c in curves.items()}
    final = {r: c.isel(step=-1).values for r, c in curves.items()}
    rows = [[r, RULES[r], C.mean_sd(final[r]), C.mean_sd(reach[r], ".0f")] for r in RULES]
    n = args.seeds
    print(f"\nLinear 30-20-10, {budget['steps']} examples, batch 1, {n} seed(s)\n")
    print(C.table(["rule", "lr", f"final test NSE (n={n})", f"examples to NSE<{level:g}"], rows))
    start = angle.isel(step=0).values
    end = np.array([C.tail_mean(angle.sel(seed=s)) for s in angle.seed.values])
    print(
        f"\n∠(Δh_FA, Δh_BP) at step 0: {C.mean_sd(start)}°   "
        f"over the last 20% of training: {C.mean_sd(end)}°"
    )

    # -- the paper's claims next to ours ----------------------------------------------
    mean = {r: float(np.mean(v)) for r, v in reach.items()}
    fin = {r: float(np.exp(np.mean(np.log(np.maximum(v, 1e-30))))) for r, v in final.items()}
    print("\nClaims (Lillicrap et al. 2016, Fig. 1)")
    print(
        C.claim(
            "feedback alignment learns as quickly as backprop",
            f"examples to NSE<{level:g}: fa {mean['fa']:.0f}, bp {mean['bp']:.0f}",
            mean["fa"] <= 2 * mean["bp"],
            args.quick,
        )
    )
    print(
        C.claim(
            "shallow learning (last layer only) stalls at a much higher error",
            f"final NSE (geometric mean): shallow {fin['shallow']:.3g}, fa {fin['fa']:.3g}",
            fin["shallow"] > 0.1 and fin["shallow"] > 10 * fin["fa"],
            args.quick,
        )
    )
    print(
        C.claim(
            "reinforcement-style learning (node perturbation) is slower than bp and fa",
            f"examples to NSE<{level:g}: node-perturbation {mean['node-perturbation']:.0f}, "
            f"bp {mean['bp']:.0f}, fa {mean['fa']:.0f}",
            mean["node-perturbation"] > max(mean["bp"], mean["fa"]),
            args.quick,
        )
    )
    print(
        C.claim(
            "∠(Δh_FA, Δh_BP) starts near 90° and falls well below it",
            f"{start.mean():.0f}° at the start, {end.mean():.0f}° at the end",
            70 <= start.mean() <= 110 and end.mean() < 60,
            args.quick,
        )
    )

    # -- figure -----------------------------------------------------------------------
    fig, ax = C.new_figure(2)
    for r, c in curves.items():
        C.band(ax[0, 0], c.step, c.values, r, log=True)
    ax[0, 0].set(
        yscale="log",
        xlabel="examples",
        ylabel="test NSE",
        title="a  linear 30-20-10: learning curves",
    )
    ax[0, 0].legend()
    ax[0, 1].plot(
        angle.step,
        angle.mean("seed"),
        color="C3",
        lw=0.6,
        alpha=0.4,
        label="per record (one example)",
    )
    sm = C.smooth(angle, 5)
    C.band(ax[0, 1], sm.step, sm.values, "running mean of 5 records", color="C3")
    ax[0, 1].legend(loc="center right")
    ax[0, 1].axhline(90, color="grey", ls="--", lw=1)
    ax[0, 1].set(
        xlabel="examples",
        ylabel="angle (°)",
        ylim=(0, 110),
        title="b  ∠(Δh_FA, Δh_BP), hidden units",
    )
    png = C.save_figure(fig, args.out / "lillicrap_linear.png")
    print(f"\nwrote {png} and {len(RULES) * n} recordings in {args.out}  ({C.wall(args)})")


if __name__ == "__main__":
    main()
