"""Jaderberg et al. 2017 (ICML), §3.2: synthetic gradients through time on copy and repeat copy.

An LSTM is trained with truncated BPTT over windows of T steps (``bptt``), with a synthetic
gradient δ̂ = M(s_T) at every window boundary standing in for all future error (``dni``),
and with the auxiliary task of predicting the synthetic gradient one window further ahead
(``dni-aux``), for T ∈ {2, 3, 4, 5, 8}.  The state s = h ⊕ c is carried across windows.

Tasks (procedural, seeded; ``bioprop.recurrent.tasks``): **copy** — read N random 8-bit
characters and a delimiter, then repeat them; **repeat copy** — read N characters and a
repeat count R ~ U{1..3}, output them R times and an end marker.  Curriculum: N starts at 1
and grows by one when the mean error of the last 20 batches is below 0.15 bits per
character; the metric is the largest N that met the criterion within the budget.

The paper trained for a very long time; our budget is a fixed number of Adam updates per
(task, rule, T) cell (``--steps``, default 3000, batches of 32, an LSTM of 64 units), and
the table prints the paper's numbers (T = 2 … 5) beside ours.  Every cell starts from the
same initial weights (per seed) and draws its batches from the same seeded stream.

Recorded per cell (``<task>_<rule>_T<T>_seed<s>.h5``, ``bioprop.load``): weights and the
rule's summed update beside full BPTT's (``weight_update_bp``), per window boundary the
synthetic vs true future gradient (``interfaces/hidden``: angle, relative error), and the
curriculum's N over training (``curriculum``).  ``summary.nc``: max N per cell.  Figures:
``dni_copy.png`` (N over updates) and ``dni_copy_boundary.png`` (∠(δ̂, true) over training).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import torch
import xarray as xr

import bioprop as bp
from bioprop.analysis import rnn as analysis_rnn
from bioprop.recurrent import Curriculum, RecurrentCircuit, SequenceData, get_task

import _common as C

# Jaderberg et al. 2017, Table 2 (max N successfully modelled; T = 2, 3, 4, 5)
PAPER = {
    "copy": {"bptt": (7, 8, 10, 8), "dni": (16, 14, 18, 18), "dni-aux": (16, 17, 19, 18)},
    "repeat-copy": {"bptt": (7, 5, 19, 23), "dni": (39, 33, 39, 59), "dni-aux": (39, 59, 67, 59)},
}
PAPER_T = (2, 3, 4, 5)
FULL = {"steps": 3000, "hidden": 64, "Ts": (2, 3, 4, 5, 8), "record_every": 250}
QUICK = {"steps": 20, "hidden": 16, "Ts": (2,), "record_every": 10}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def parse_args(argv=None) -> argparse.Namespace:
    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--tasks", default="copy,repeat-copy", help="default %(default)s")
        p.add_argument("--rules", default="bptt,dni,dni-aux", help="default %(default)s")
        p.add_argument(
            "--T", type=_ints, default=None, help="truncation lengths (default 2,3,4,5,8)"
        )
        p.add_argument("--steps", type=int, default=None, help="updates per cell (default 3000)")
        p.add_argument("--hidden", type=int, default=None, help="LSTM units (default 64)")
        p.add_argument("--cell", default="lstm", choices=["lstm", "rnn"])
        p.add_argument("--batch", type=int, default=32, help="sequences per batch (default 32)")
        p.add_argument("--lr", type=float, default=1e-2, help="Adam lr of the core (default 1e-2)")
        p.add_argument("--module-lr", type=float, default=None, help="Adam lr of M (default: --lr)")
        p.add_argument("--r-max", type=int, default=3, help="repeat copy: R ~ U{1..r_max}")
        p.add_argument("--workers", type=int, default=2, help="cells run side by side (default 2)")
        p.add_argument("--first-seed", type=int, default=0, help="seeds S..S+N-1 (default 0)")
        p.add_argument(
            "--combine",
            default=None,
            help="DIR,DIR,...: print the tables of earlier runs' summary.nc together "
            "(over all their seeds) and exit without training",
        )

    def check(a: argparse.Namespace) -> str | None:
        budget = QUICK if a.quick else FULL
        a.T = a.T or budget["Ts"]
        a.steps = a.steps or budget["steps"]
        a.hidden = a.hidden or budget["hidden"]
        a.module_lr = a.module_lr or a.lr
        a.tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
        a.rules = [r.strip() for r in a.rules.split(",") if r.strip()]
        if any(t < 1 for t in a.T):
            return f"--T: truncation lengths must be >= 1, got {a.T}"
        bad = [t for t in a.tasks if t not in ("copy", "repeat-copy")]
        if bad:
            return f"--tasks: unknown {bad}; choose from copy, repeat-copy"
        bad = [r for r in a.rules if r not in ("bptt", "dni", "dni-aux")]
        if bad:
            return f"--rules: unknown {bad}; choose from bptt, dni, dni-aux"
        if a.steps < 1 or a.workers < 1:
            return "--steps and --workers must be >= 1"
        return None

    return C.parse_args("dni_copy", __doc__.split("\n\n")[0], 1, argv, extra, check)


def run_cell(job: dict) -> dict:
    """Train one (task, rule, T, seed) cell with ``bioprop.train``; its curriculum summary."""
    torch.set_num_threads(1)
    task = get_task(
        job["task"], **({"r_max": job["r_max"]} if job["task"] == "repeat-copy" else {})
    )
    circuit_seed = train_seed = job["seed"]  # streams are salted by purpose
    circuit = RecurrentCircuit(
        task.n_in, job["hidden"], task.n_out, cell=job["cell"], seed=circuit_seed
    )
    path = Path(job["out"]) / f"{job['task']}_{job['rule']}_T{job['T']}_seed{job['seed']}.h5"
    attrs = {"T": job["T"], "cell": job["cell"], "hidden_units": job["hidden"]}
    try:
        run = bp.train(
            circuit,
            bp.rules.get(job["rule"], kind="recurrent", T=job["T"]),
            SequenceData(task, Curriculum(n_start=1, threshold=0.15, window=20)),
            steps=job["steps"],
            batch_size=job["batch"],
            optimizer=("adam", {"lr": job["lr"], "module_lr": job["module_lr"]}),
            seed=train_seed,
            record=bp.Record(path, every=job["record_every"], samples=4, attrs=attrs),
            progress=False,
        )
        result, wall = run.details, run.wall_time
    except bp.DivergenceError as exc:  # the curriculum so far, the recording kept
        result, wall = exc.details, math.nan
    return {
        **job,
        "max_solved": result.max_solved,
        "final_n": result.final_n,
        "wall": wall,
        "n_curve": [n for n, _ in result.history],
        "diverged": result.diverged,
        "path": str(path),
    }


def _log(out: Path, r: dict) -> dict:
    """Append one finished cell to ``cells.jsonl`` (progress of a long run) and print it."""
    line = {k: v for k, v in r.items() if k != "n_curve"}
    with open(Path(out) / "cells.jsonl", "a") as f:
        f.write(json.dumps(line) + "\n")
    print(
        f"  {r['task']:<11} {r['rule']:<7} T={r['T']} seed {r['seed']}: max N {r['max_solved']}"
        f" ({r['wall']:.0f} s)",
        flush=True,
    )
    return r


def tables(ds: xr.Dataset, quick: bool) -> str:
    """The paper-format tables (mean over the seeds present, [paper]) and the verdicts."""
    out, verdicts = [], []
    rules, Ts = list(ds.rule.values), [int(t) for t in ds["T"].values]
    for task in ds.task.values:
        rows = []
        for rule in rules:
            row = [rule]
            for T in Ts:
                v = ds.max_solved.sel(task=task, rule=rule, T=T).values
                v = v[np.isfinite(v)]
                ours = f"{v.mean():.3g}" if v.size else "—"
                if v.size > 1:
                    ours += " (" + ",".join(f"{x:g}" for x in v) + ")"
                paper = PAPER[task][rule][PAPER_T.index(T)] if T in PAPER_T else None
                row.append(f"{ours} [{paper}]" if paper is not None else ours)
            rows.append(row)
        out += [f"{task}:", C.table(["rule"] + [f"T={T}" for T in Ts], rows), ""]
        for rule in [r for r in ("dni", "dni-aux") if r in rules and "bptt" in rules]:
            with np.errstate(all="ignore"):
                a = np.nanmean(ds.max_solved.sel(task=task, rule=rule).values, axis=-1)
                b = np.nanmean(ds.max_solved.sel(task=task, rule="bptt").values, axis=-1)
            more, same = int((a > b).sum()), int((a == b).sum())
            verdicts.append(
                C.claim(
                    f"at the same T, {rule} reaches longer sequences than bptt ({task})",
                    f"{rule} > bptt at {more} of {len(Ts)} T values, equal at {same} "
                    f"(mean N {float(np.mean(a)):.2f} vs {float(np.mean(b)):.2f})",
                    more > len(Ts) / 2 and more > int((a < b).sum()),
                    quick,
                )
            )
    return "\n".join(out + verdicts)


def update_angle_table(ds: xr.Dataset, dirs: list[Path]) -> str:
    """How far each rule's core update is from full BPTT's where bptt stalls.

    For every (task, T, seed) the *frontier* is N_f = bptt's max N + 1, the length bptt kept
    training on and never solved.  Entry: the median over a cell's records at N = N_f of
    ∠(Δθ_rule, Δθ_full-BPTT) (``analysis_rnn.core_update_angle``: the weights and biases
    into the LSTM, summed window updates vs the untruncated gradient of the same batch),
    then the mean over seeds.  The weights compared are the input pathways into the LSTM
    (``input->hidden:*``), which every recording carries the reference for (the recurrent
    ones have it only in recordings made after 2026-11-27), so that tables from old and new
    runs compare the same weights.  "—" where a rule never trained at N_f.
    """
    if "bptt" not in list(ds.rule.values):
        return ""
    Ts = [int(t) for t in ds["T"].values]
    angles, pathways = {}, []
    for task, rule, T, seed in itertools.product(
        ds.task.values, ds.rule.values, Ts, ds.seed.values
    ):
        n_bptt = ds.max_solved.sel(task=task, rule="bptt", T=T, seed=seed).item()
        name = f"{task}_{rule}_T{T}_seed{int(seed)}.h5"
        paths = [Path(d) / name for d in dirs if (Path(d) / name).exists()]
        if not (np.isfinite(n_bptt) and paths):
            continue
        with bp.load(paths[0]) as tree:
            pws = tree["pathways"].children
            pathways = sorted(n for n in pws if pws[n].attrs.get("source") == "input")
            by_n = analysis_rnn.core_update_angle_by_n(tree, pathways).load()
        n_f = int(n_bptt) + 1
        if n_f in by_n.n.values:
            angles[(str(task), str(rule), T, int(seed))] = float(by_n.sel(n=n_f))
    if not angles:
        return ""
    out = []
    for task in ds.task.values:
        rows = []
        for rule in ds.rule.values:
            row = [rule]
            for T in Ts:
                vals = [
                    v
                    for (t, r, tt, _), v in angles.items()
                    if (t, r, tt) == (str(task), str(rule), T) and np.isfinite(v)
                ]
                row.append(f"{np.mean(vals):.0f}°" if vals else "—")
            rows.append(row)
        out += [
            f"{task}: median ∠(Δθ_rule, Δθ_full BPTT) at N = bptt's max N + 1 (mean over seeds)",
            C.table(["rule"] + [f"T={T}" for T in Ts], rows),
            "",
        ]
    out.append(f"pathways compared: {', '.join(pathways)} (weights and biases)")
    return "\n".join(out)


def combine(dirs: list[Path]) -> xr.Dataset:
    """The ``summary.nc`` of several runs (e.g. other seeds) as one Dataset over ``seed``."""
    parts = [xr.load_dataset(Path(d) / "summary.nc", engine="h5netcdf") for d in dirs]
    return xr.concat(parts, dim="seed", join="outer", combine_attrs="drop_conflicts")


def boundary_angle_curve(path: str) -> tuple[np.ndarray, np.ndarray]:
    """Record steps and ∠(δ̂, true) averaged over the recorded boundaries."""
    tree = bp.load(path)
    try:
        g = tree["interfaces/hidden"].to_dataset()
        ang = g["angle"].values
        with np.errstate(all="ignore"):
            mean = np.array([np.nanmean(a) if np.isfinite(a).any() else np.nan for a in ang])
        return g["step"].values, mean
    finally:
        tree.close()


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.combine:
        dirs = [Path(d) for d in args.combine.split(",") if d.strip()]
        ds = combine(dirs)
        print(
            f"max N (error < 0.15 bits/char) from {', '.join(map(str, dirs))}; "
            f"seeds {[int(s) for s in ds.seed.values]}; entries: mean (per seed) [paper]\n"
        )
        print(tables(ds, args.quick))
        print("\n" + update_angle_table(ds, dirs))
        return
    budget = QUICK if args.quick else FULL
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))
    jobs = [
        {
            "task": task,
            "rule": rule,
            "T": T,
            "seed": s,
            "steps": args.steps,
            "hidden": args.hidden,
            "cell": args.cell,
            "batch": args.batch,
            "lr": args.lr,
            "module_lr": args.module_lr,
            "r_max": args.r_max,
            "record_every": budget["record_every"],
            "out": str(args.out),
        }
        for task in args.tasks
        for T in args.T
        for rule in args.rules
        for s in seeds
    ]
    (args.out / "cells.jsonl").unlink(missing_ok=True)
    t0 = time.perf_counter()
    if args.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            futures = [pool.submit(run_cell, j) for j in jobs]
            for f in as_completed(futures):
                _log(args.out, f.result())
            results = [f.result() for f in futures]
    else:
        results = [_log(args.out, run_cell(j)) for j in jobs]
    wall = time.perf_counter() - t0

    # -- summary.nc --------------------------------------------------------------------------
    arr = np.full((len(args.tasks), len(args.rules), len(args.T), len(seeds)), np.nan)
    for r in results:
        arr[
            args.tasks.index(r["task"]),
            args.rules.index(r["rule"]),
            args.T.index(r["T"]),
            seeds.index(r["seed"]),
        ] = r["max_solved"]
    ds = xr.Dataset(
        {
            "max_solved": (
                ("task", "rule", "T", "seed"),
                arr,
                {"long_name": "largest N with error < 0.15 bits/char"},
            )
        },
        coords={"task": args.tasks, "rule": args.rules, "T": list(args.T), "seed": seeds},
        attrs={
            "steps_per_cell": args.steps,
            "batch": args.batch,
            "hidden": args.hidden,
            "cell": args.cell,
            "lr": args.lr,
            "module_lr": args.module_lr,
            "wall_s": wall,
        },
    )
    ds.to_netcdf(args.out / "summary.nc", engine="h5netcdf")

    # -- tables ------------------------------------------------------------------------------
    print(
        f"\nJaderberg et al. 2017, Table 2 format: max N modelled (error < 0.15 bits/char).\n"
        f"Budget per cell: {args.steps} Adam updates (lr {args.lr:g}, M {args.module_lr:g}), "
        f"batches of {args.batch}, {args.cell.upper()} {args.hidden} units, {args.seeds} seed(s); "
        f"{len(jobs)} cells in {wall:.0f} s wall on {args.workers} worker(s).\n"
        f"Entries: ours (mean over seeds) [paper]; the paper has no T = 8 column.\n"
    )
    print(tables(ds, args.quick))
    print("\n" + update_angle_table(ds, [args.out]))

    # -- figures -----------------------------------------------------------------------------
    fig, axes = C.new_figure(len(args.T), len(args.tasks), width=3.4, height=2.8)
    for i, task in enumerate(args.tasks):
        for j, T in enumerate(args.T):
            ax = axes[i][j]
            for rule in args.rules:
                for r in results:
                    if (r["task"], r["rule"], r["T"]) == (task, rule, T):
                        ax.plot(
                            np.arange(1, len(r["n_curve"]) + 1),
                            r["n_curve"],
                            label=rule if r["seed"] == seeds[0] else None,
                            color={"bptt": "C0", "dni": "C1", "dni-aux": "C2"}[rule],
                        )
            ax.set_title(f"{task}, T = {T}", fontsize=9)
            ax.set_xlabel("update")
            ax.set_ylabel("curriculum N")
            ax.legend(fontsize=7)
    C.save_figure(fig, args.out / "dni_copy.png")
    fig, axes = C.new_figure(len(args.tasks), 1, width=4.6, height=3.4)
    for i, task in enumerate(args.tasks):
        ax = axes[0][i]
        for r in results:
            if r["task"] == task and r["rule"] != "bptt" and r["seed"] == seeds[0]:
                steps, ang = boundary_angle_curve(r["path"])
                ax.plot(steps, ang, label=f"{r['rule']} T={r['T']}")
        C.angle_axes(ax, f"{task}: ∠(δ̂_b, true ∂L_≥b/∂s_b)")
    C.save_figure(fig, args.out / "dni_copy_boundary.png")
    print(f"\nrecordings, summary.nc and figures in {args.out} ({C.wall(args)})")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
