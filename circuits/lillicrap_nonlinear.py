"""Lillicrap, Cownden, Tweed & Akerman 2016: random feedback trains nonlinear, deeper circuits.

A fixed random 30-20-10-10 tanh network (linear output) is the teacher; its outputs are
the targets for x ~ N(0, I).  Two tanh student circuits with linear outputs learn them:

* 30-20-10     — one hidden population: too shallow to represent the teacher exactly
* 30-20-10-10  — two hidden populations (the teacher's shape), so feedback alignment
                 must send the error back through two fixed random matrices B

each trained with backprop (bp) and with feedback alignment (fa, B ~ U[-0.5, 0.5]) from
the same initial weights (U[-0.1, 0.1]) and the same examples in the same order.  As a
yardstick the table also gives the test error of the best *linear* map (least squares):
a student below it has learned something a linear circuit cannot.

Budget: the paper updates after every example for far longer; to stay within minutes on
a CPU we update on mini-batches of 10 (lr 0.2, our choice) for 100 000 examples.

Outputs in --out: <rule>_<layers>_seed<s>.h5 recordings, curves.nc and
lillicrap_nonlinear.png (test error over training).
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr

import bioprop as bp

import _common as C

ARCHS = {"30-20-10": [30, 20, 10], "30-20-10-10": [30, 20, 10, 10]}
RULES = ("bp", "fa")
LR, BATCH = 0.2, 10
TEACHER = (30, 20, 10, 10)
FULL = {"n_train": 20_000, "epochs": 5, "n_test": 1000, "eval_every": 250, "record_every": 500}
QUICK = {"n_train": 500, "epochs": 1, "n_test": 200, "eval_every": 10, "record_every": 25}


def make_rule(name: str) -> bp.rules.Rule:
    """The rule with task 'nonlinear''s options for it (fa: B ~ U[±0.5], Lillicrap et al.)."""
    return bp.tasks.get("nonlinear").rule(name)


def linear_fit_nse(data: bp.data.Dataset) -> float:
    """Test NSE of the least-squares affine map from x to y (the best linear student)."""

    def ones(x):
        return torch.cat([x, torch.ones(len(x), 1)], 1)

    coef = torch.linalg.lstsq(ones(data.x_train), data.y_train).solution
    err = ((ones(data.x_test) @ coef - data.y_test) ** 2).sum()
    return float(err / ((data.y_test - data.y_test.mean(0)) ** 2).sum())


def train_one(rule: str, arch: str, data: bp.data.Dataset, s: int, budget: dict, args):
    circuit_seed = train_seed = s  # streams are salted by purpose
    circuit = bp.Circuit.layered(
        ARCHS[arch],
        activation="tanh",
        output_activation="linear",
        init=bp.init.uniform(0.1),
        seed=circuit_seed,
    )
    curve = C.TestCurve(circuit, data, every=budget["eval_every"])
    bp.train(
        circuit,
        make_rule(rule),
        data,
        loss="mse",
        optimizer=("sgd", {"lr": LR}),
        epochs=budget["epochs"],
        batch_size=BATCH,
        seed=train_seed,
        progress=False,
        on_step=curve,
        record=bp.Record(args.out / f"{rule}_{arch}_seed{s}.h5", every=budget["record_every"]),
    )
    # steps -> examples seen, for comparison with the per-example scripts
    return (
        curve.to_xarray(rule=rule, arch=arch, seed=s)
        .assign_coords(step=np.array(curve.steps) * BATCH)
        .rename(step="example")
    )


def main(argv=None) -> None:
    args = C.parse_args("lillicrap_nonlinear", __doc__, default_seeds=3, argv=argv)
    budget = QUICK if args.quick else FULL
    curves: dict[tuple[str, str], list[xr.DataArray]] = {}
    linear = []
    for s in range(args.seeds):
        data_seed = s
        data = bp.data.nonlinear_teacher(
            TEACHER, n_train=budget["n_train"], n_test=budget["n_test"], seed=data_seed
        )
        linear.append(linear_fit_nse(data))
        for arch in ARCHS:
            for rule in RULES:
                curves.setdefault((rule, arch), []).append(
                    train_one(rule, arch, data, s, budget, args)
                )
    curves = {k: xr.concat(v, dim="seed") for k, v in curves.items()}
    xr.Dataset(
        {f"{r} {a}": c.drop_vars(["rule", "arch"]) for (r, a), c in curves.items()}
    ).to_netcdf(args.out / "curves.nc", engine="h5netcdf")

    n = args.seeds
    examples = budget["n_train"] * budget["epochs"]
    final = {k: c.isel(example=-1).values for k, c in curves.items()}
    teacher = "-".join(map(str, TEACHER))
    print(
        f"\ntanh teacher {teacher}; {examples} examples, mini-batches of {BATCH}, "
        f"lr {LR}, {n} seed(s)\n"
    )
    rows = [[r, a, C.mean_sd(final[(r, a)])] for a in ARCHS for r in RULES]
    rows.append(["least squares", "linear map", C.mean_sd(linear)])
    print(C.table(["rule", "student", f"final test NSE (n={n})"], rows))

    def gm(v):
        return float(np.exp(np.mean(np.log(np.maximum(v, 1e-30)))))

    g = {k: gm(v) for k, v in final.items()}
    lin = float(np.mean(linear))
    print("\nClaims (Lillicrap et al. 2016, nonlinear function approximation)")
    print(
        C.claim(
            "feedback alignment trains nonlinear circuits one and two hidden layers deep (the "
            "error crosses one or two fixed random matrices)",
            "final NSE (geometric mean), fa: "
            + ", ".join(f"{a} {g[('fa', a)]:.3g}" for a in ARCHS)
            + f"; best linear map {lin:.3g}",
            all(g[("fa", a)] < lin / 2 for a in ARCHS),
            args.quick,
        )
    )
    deep, shallow = "30-20-10-10", "30-20-10"
    print(
        C.claim(
            "feedback alignment makes use of depth: with fa the 30-20-10-10 circuit ends below "
            "the 30-20-10 one",
            f"final NSE with fa: {deep} {g[('fa', deep)]:.3g}, {shallow} {g[('fa', shallow)]:.3g}",
            g[("fa", deep)] < g[("fa", shallow)],
            args.quick,
        )
    )
    print(
        f"  (for reference, bp: {deep} {g[('bp', deep)]:.3g}, {shallow} "
        f"{g[('bp', shallow)]:.3g}; fa/bp error ratio "
        + ", ".join(f"{a} {g[('fa', a)] / g[('bp', a)]:.1f}x" for a in ARCHS)
        + ")"
    )

    fig, ax = C.new_figure(1, width=6.0)
    styles = {"bp": "-", "fa": "--"}
    colors = {"30-20-10": "C0", "30-20-10-10": "C3"}
    for (r, a), c in curves.items():
        C.band(ax[0, 0], c.example, c.values, f"{r} {a}", log=True, ls=styles[r], color=colors[a])
    ax[0, 0].axhline(lin, color="grey", ls=":", lw=1, label="best linear map")
    ax[0, 0].set(
        yscale="log",
        xlabel="examples",
        ylabel="test NSE",
        title=f"tanh students of a tanh {teacher} teacher",
    )
    ax[0, 0].legend()
    png = C.save_figure(fig, args.out / "lillicrap_nonlinear.png")
    print(f"\nwrote {png} and {len(curves) * n} recordings in {args.out}  ({C.wall(args)})")


if __name__ == "__main__":
    main()
