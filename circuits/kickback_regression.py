"""Balduzzi, Vanchinathan & Buhmann 2015: kickback matches backprop on robot-arm regression.

The paper's network — 10, 100 and 200 rectilinear units (half positive, half negative
rectifiers) in three hidden layers, a linear output — learns the inverse dynamics of a robot
arm, (q, q̇, q̈) → joint torques, with bp, kickback, fa, dfa and shallow learning, from the
same initial weights and the same data order.  The data: the inverse dynamics of a
simulated planar 2-link arm (``planar-arm``: 44 484 training / 4 449 test samples, like
SARCOS; its two torques are the network's 2 outputs), and SARCOS / Barrett WAM (first two
joints) when their files are on disk (``bioprop.data.sarcos``).

Protocol: initial weights coherent (``make_coherent``: every synapse onto a hidden unit has
that unit's sign, every output weight ≥ 0 — kickback's regime); plain SGD, batch 16; each
rule's learning rate chosen from --lrs on a validation split carved out of the training
set (the last 4 449 training samples; the same budget, seeds 0 and 1); then on the full
training set for every seed, test NMSE (mean over outputs of MSE / variance) reported once.
``--network per-torque`` trains one single-output network per torque instead (the paper's
scalar global error); ``--ablation`` swaps in random-sign initial weights or relu units;
``--optimizer adam`` trains with Adam, under which kickback's coherence collapses.

Outputs in --out: <dataset>-<rule>-seed<s>.h5 recordings (kickback's carry its coherence
group), kickback_regression-<dataset>.png (test NMSE over training; coherence fraction and
angle to bp over training) and results.json; full runs also write
data/results/kickback_regression[_variant].json.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import bioprop as bp
from bioprop.analysis import kickback as kba
from bioprop.data.mnist import MissingDataError
from bioprop.rules.kickback import make_coherent

import _common as C

ROOT = Path(__file__).resolve().parents[1]
RULES = ("bp", "kickback", "fa", "dfa", "shallow")
HIDDEN = (10, 100, 200)
OUTPUTS = (0, 1)
BATCH = 16
LRS = {"sgd": "1e-3,3e-3,1e-2,3e-2,1e-1,3e-1", "adam": "3e-4,1e-3,3e-3"}
VALIDATION = 4449
FULL = {"epochs": 10, "tune_seeds": 2, "record_every": 500, "size": None}
QUICK = {"epochs": 1, "tune_seeds": 1, "record_every": 10, "size": (600, 200)}
PAPER = {"bp": "reference", "kickback": "matches bp (SARCOS, Barrett WAM)"}
ABLATIONS = ("none", "random-init", "relu")


def options(p) -> None:
    p.add_argument("--rules", default=",".join(RULES), help="default %(default)s")
    p.add_argument("--epochs", type=int, default=None, help="default 10 (1 with --quick)")
    p.add_argument("--optimizer", choices=list(LRS), default="sgd", help="default %(default)s")
    p.add_argument(
        "--lrs", default="", help=f"tried on validation (sgd: {LRS['sgd']}; adam: {LRS['adam']})"
    )
    p.add_argument("--lr", default="", help="skip tuning: rule=lr,... (e.g. bp=1e-3)")
    p.add_argument("--network", choices=["shared", "per-torque"], default="shared")
    p.add_argument("--ablation", choices=ABLATIONS, default="none")
    p.add_argument(
        "--keep-coherent",
        action="store_true",
        help="kickback clips synapses at zero rather than let them break coherence",
    )
    p.add_argument(
        "--datasets", default="auto", help="planar-arm,sarcos,barrett or auto (those on disk)"
    )


def check(args) -> str | None:
    unknown = [r for r in args.rules.split(",") if r not in bp.rules.names()]
    if unknown:
        return f"--rules: unknown {unknown}; registered: {', '.join(bp.rules.names())}"
    try:
        args.lr_grid = [float(v) for v in (args.lrs or LRS[args.optimizer]).split(",") if v]
        args.fixed = {k: float(v) for k, v in (kv.split("=") for kv in args.lr.split(",") if kv)}
    except ValueError:
        return "--lrs takes numbers (1e-3,3e-3); --lr takes rule=number pairs (bp=1e-3)"
    if not args.lr_grid or min(args.lr_grid) <= 0:
        return "--lrs needs at least one learning rate > 0"
    return None


def datasets(args, quick: bool) -> dict[str, tuple[bp.data.Dataset, bp.data.Dataset]]:
    """{name: (train/test dataset, train/validation dataset)}: the first two torques."""
    names = (
        ["planar-arm", "sarcos", "barrett"] if args.datasets == "auto" else args.datasets.split(",")
    )
    out = {}
    for name in names:
        size = QUICK["size"] if quick else None
        try:
            if name == "planar-arm":
                kw = {"n_train": size[0], "n_test": size[1]} if size else {}
                val = min(VALIDATION, (size or (44_484,))[0] // 4)
                pair = (bp.data.load(name, **kw), bp.data.load(name, validation=val, **kw))
            else:
                full = bp.data.load(name, outputs=OUTPUTS)
                pair = (full, bp.data.load(name, outputs=OUTPUTS, validation=VALIDATION))
                if size:
                    pair = tuple(d.subset(*size) for d in pair)
        except MissingDataError as exc:
            if args.datasets != "auto":
                raise SystemExit(str(exc)) from None
            print(f"(skipping {name}: {str(exc).split(':')[0]})")
            continue
        out[name] = pair
    return out


def select(ds: bp.data.Dataset, outputs) -> bp.data.Dataset:
    return replace(ds, y_train=ds.y_train[:, outputs], y_test=ds.y_test[:, outputs])


def circuit(ds: bp.data.Dataset, seed: int, ablation: str) -> bp.Circuit:
    """The paper's network for ``ds``; coherent initial weights (rescaled on 1024 training
    inputs to keep each layer's spread) unless an ablation says otherwise."""
    n_in, n_out = ds.n_inputs, ds.n_outputs
    act = "relu" if ablation == "relu" else "rectilinear"
    c = bp.Circuit.layered(
        [n_in, *HIDDEN, n_out], activation=act, output_activation="linear", seed=seed
    )
    return c if ablation != "none" else make_coherent(c, ds.x_train[:1024])


def nmse(c: bp.Circuit, ds: bp.data.Dataset) -> float:
    """Mean over outputs of MSE / variance on ``ds``'s test part."""
    with torch.no_grad():
        err = ((c(ds.x_test) - ds.y_test) ** 2).mean(0) / ds.y_test.var(0)
    return float(err.mean())


def fit(rule, ds, lr, seed, epochs, args, record=None) -> float:
    """Train one network on ``ds``; its test NMSE (inf if it diverged)."""
    c = circuit(ds, seed, args.ablation)
    if rule == "kickback" and args.keep_coherent:
        rule = bp.rules.get("kickback", keep_coherent=True)
    try:
        bp.train(
            c,
            rule,
            ds,
            optimizer=(args.optimizer, {"lr": lr}),
            epochs=epochs,
            batch_size=BATCH,
            seed=seed,
            progress=False,
            record=record,
        )
    except bp.DivergenceError:
        return math.inf
    return nmse(c, ds)


def tune(rule, val_ds, args, budget) -> tuple[float, dict]:
    """The learning rate of --lrs with the lowest validation NMSE, the mean over the first
    ``tune_seeds`` seeds at the full budget (a run that diverges scores inf)."""
    if rule in args.fixed:
        return args.fixed[rule], {}
    seeds = range(budget["tune_seeds"])
    scores = {
        lr: statistics.fmean(fit(rule, val_ds, lr, s, budget["epochs"], args) for s in seeds)
        for lr in args.lr_grid
    }
    return min(scores, key=scores.get), scores


def record(path: Path, every: int) -> bp.Record:
    # teaching signals of 16 samples and the test NMSE at every record; no weight matrices
    return bp.Record(path, every=every, variables=["delta", "delta_bp"], samples=16, evaluate=True)


def run_dataset(name, full, val, rules, args, budget):
    """Tune, then train every rule × seed (× torque); {rule: results} and recordings."""
    heads = [OUTPUTS] if args.network == "shared" else [(o,) for o in OUTPUTS]
    res = {}
    for rule in rules:
        entry = {"lr": {}, "validation_nmse": {}, "test_nmse": [], "recordings": {}}
        plan = []
        for head in heads:
            key = "+".join(f"torque{o + 1}" for o in head)
            lr, scores = tune(rule, select(val, list(head)), args, budget)
            entry["lr"][key] = lr
            entry["validation_nmse"][key] = {f"{k:g}": v for k, v in scores.items()}
            entry["recordings"][key] = []
            plan.append((key, select(full, list(head)), lr))
        for s in range(args.seeds):
            vals = []
            for key, ds, lr in plan:
                tag = "" if len(heads) == 1 else f"-{key}"
                path = args.out / f"{name}{tag}-{rule}-seed{s}.h5"
                rec = record(path, budget["record_every"])
                vals.append(fit(rule, ds, lr, s, budget["epochs"], args, rec))
                entry["recordings"][key].append(path)
            entry["test_nmse"].append(statistics.fmean(vals))
        res[rule] = entry
    return res


def curve(paths):
    """Test NSE over steps of one configuration's recordings, stacked over seeds."""
    ys, steps = [], None
    for p in paths:
        with bp.load(p) as rec:
            m = rec["metrics"].to_dataset()
            ys.append(m["test_nse"].values)
            steps = m["step"].values
    n = min(len(y) for y in ys)
    return steps[:n], np.array([y[:n] for y in ys])


def plot(name, res, path):
    """Learning curves; kickback's coherent fraction and angle to bp over training."""
    fig, ax = C.new_figure(3, width=4.8)
    for rule, entry in res.items():
        for key, paths in entry["recordings"].items():
            label = rule if len(entry["recordings"]) == 1 else f"{rule} {key}"
            C.band(ax[0, 0], *curve(paths), label, log=True)
    ax[0, 0].set(yscale="log", xlabel="step", ylabel="test NMSE", title=f"{name}: learning curves")
    ax[0, 0].legend(fontsize=7)
    paths = [p for ps in res.get("kickback", {}).get("recordings", {}).values() for p in ps]
    coh, ang = [], []
    for p in paths:
        with bp.load(p) as rec:
            coh.append(kba.coherence(rec).load())
            ang.append(kba.angle_to_bp(rec).load())
    if coh:
        n = min(c.sizes["step"] for c in coh)
        for h in coh[0].hidden.values:
            ys = np.array([c.sel(hidden=h).values[:n] for c in coh])
            C.band(ax[0, 1], coh[0].step.values[:n], ys, str(h))
        ax[0, 1].set(xlabel="step", ylabel="fraction with τ_j > 0", ylim=(0, 1.02))
        ax[0, 1].set_title("kickback: coherent units")
        ax[0, 1].legend(fontsize=8)
        ys = np.array([a.values[:n] for a in ang])
        C.band(ax[0, 2], ang[0].step.values[:n], ys, "kickback vs bp")
        C.angle_axes(ax[0, 2], "angle of the whole update to bp's")
    return C.save_figure(fig, path), paths


def report(name, full, res, rules, args, budget, kb_summary) -> None:
    ref = statistics.fmean(res["bp"]["test_nmse"]) if "bp" in res else math.nan
    rows = []
    for rule in rules:
        v = res[rule]["test_nmse"]
        lr = "/".join(f"{x:g}" for x in res[rule]["lr"].values())
        ratio = f"{statistics.fmean(v) / ref:.2f}"
        rows.append([rule, lr, C.mean_sd(v), ratio, PAPER.get(rule, "—")])
    head = "2" if args.network == "shared" else "1 per torque"
    net = "-".join(map(str, [full.n_inputs, *HIDDEN, head]))
    init = "coherent" if args.ablation == "none" else args.ablation
    print(
        f"\n{name}: {net}, initial weights {init}, {args.optimizer}, batch {BATCH}, "
        f"{budget['epochs']} epochs, {args.seeds} seed(s)"
    )
    print(C.table(["rule", "lr (validation)", "test NMSE", "÷ bp", "paper"], rows))
    if kb_summary:
        print(
            f"kickback, last 5 records: coherent fraction {kb_summary['coherent_fraction']:.2f}, "
            f"angle of its update to bp's {kb_summary['angle_to_bp']:.0f}°"
        )
    if "kickback" in res and "bp" in res:
        ratio = statistics.fmean(res["kickback"]["test_nmse"]) / ref
        print(
            C.claim(
                "kickback matches backprop's normalised MSE (ours: within 1.5x of bp's)",
                f"{name}: kickback / bp test NMSE = {ratio:.2f}",
                ratio <= 1.5,
                args.quick,
            )
        )
    if "kickback" in res and "shallow" in res:
        kb, sh = (statistics.fmean(res[r]["test_nmse"]) for r in ("kickback", "shallow"))
        print(
            C.claim(
                "kickback's hidden layers learn: it ends below shallow learning",
                f"kickback {kb:.3g}, shallow {sh:.3g}",
                kb < sh,
                args.quick,
                "control (ours)",
            )
        )


def main(argv=None) -> None:
    args = C.parse_args(
        "kickback_regression", __doc__, default_seeds=3, argv=argv, extra=options, check=check
    )
    budget = dict(QUICK if args.quick else FULL)
    if args.epochs:
        budget["epochs"] = args.epochs
    if args.quick:
        args.lr_grid = args.lr_grid[1:2] or args.lr_grid
    rules = args.rules.split(",")
    all_res, kb_all, png = {}, {}, None
    for name, (full, val) in datasets(args, args.quick).items():
        res = run_dataset(name, full, val, rules, args, budget)
        fig, kb_paths = plot(name, res, args.out / f"kickback_regression-{name}.png")
        png = png or fig
        summ = []
        for p in kb_paths:
            with bp.load(p) as rec:
                summ.append(kba.summary(rec))
        kb_all[name] = {k: float(np.nanmean([x[k] for x in summ])) for k in summ[0]} if summ else {}
        report(name, full, res, rules, args, budget, kb_all[name])
        for entry in res.values():
            entry["recordings"] = {k: [p.name for p in v] for k, v in entry["recordings"].items()}
        all_res[name] = res
    if not all_res:
        raise SystemExit("no dataset to run")
    given = argv if argv is not None else sys.argv[1:]
    results = {
        "command": " ".join(["python circuits/kickback_regression.py", *given]),
        "seeds": list(range(args.seeds)),
        "budget": {
            **budget,
            "batch_size": BATCH,
            "optimizer": args.optimizer,
            "hidden": HIDDEN,
            "network": args.network,
            "initial_weights": "coherent" if args.ablation == "none" else args.ablation,
            "lr_grid": args.lr_grid,
            "validation": VALIDATION,
        },
        "test_nmse": "mean over outputs of MSE / variance on the test set",
        "results": all_res,
        "kickback_coherence": kb_all,
    }
    text = json.dumps(results, indent=1, default=str)
    (args.out / "results.json").write_text(text)
    if not args.quick:
        suffix = "" if args.network == "shared" else "_per_torque"
        suffix += "" if args.ablation == "none" else f"_{args.ablation.replace('-', '_')}"
        suffix += "" if args.optimizer == "sgd" else f"_{args.optimizer}"
        suffix += "" if args.epochs in (None, FULL["epochs"]) else f"_{args.epochs}epochs"
        suffix += "_keep_coherent" if args.keep_coherent else ""
        dest = ROOT / "data" / "results" / f"kickback_regression{suffix}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        print(f"wrote {dest}")
    print(f"\nwrote {png} and the recordings in {args.out}  ({C.wall(args)})")


if __name__ == "__main__":
    main()
