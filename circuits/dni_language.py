"""Jaderberg et al. 2017 (ICML), §3.2 Table 1: character-level language modelling with DNI.

An LSTM reads a text one character at a time and predicts the next; it is trained by
truncated BPTT over windows of T steps along continuous streams (the state carried from
batch to batch), with a synthetic gradient δ̂ = M(s) at every window boundary (``dni``) and
with the auxiliary prediction one window further (``dni-aux``), for T ∈ {2, 3, 4, 5, 8}.
The metric is bits per character (BPC) on held-out text.

Data: the paper uses the Penn Treebank characters (``--corpus ptb``: Mikolov's files, which
cannot be downloaded here — :func:`bioprop.data.text.ptb_chars` says where to put them).
The default corpus is one every Python has (``--corpus pydoc``: the reference manual's
topics, 0.42 M training characters, 103 symbols), so our BPC values are *not* comparable
with the paper's; what carries over is the comparison between the rules at the same T.

Protocol (honest comparison): every rule's core learning rate is chosen from ``--lrs`` on the
*validation* text at T = ``--select-T`` (the same budget as the grid); then every (rule, T)
cell is trained once per seed with its rule's chosen rate and scored once on the *test*
text.  The synthetic gradient enters scaled by κ = ``--scale`` (0.1, the factor a public
reimplementation, koz4k/dni-pytorch, attributes to the paper; without it the LSTM's cell
state grows without bound on a stream — see docs/rnn_dni.md).  Budget per cell: ``--steps``
Adam updates on 32 streams × 40 characters (the windows of T inside those 40 each end at a
boundary), gradient-norm clip 10, an LSTM of ``--hidden`` units (the paper: 1024).

Writes ``results.json`` in ``--out`` and, for a full run, ``<results>/dni_language.json``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

import bioprop as bp
from bioprop.data.mnist import MissingDataError
from bioprop.recurrent import RecurrentCircuit
from bioprop.recurrent.language import CharLMTask, language_data

import _common as C

ROOT = Path(__file__).resolve().parent.parent
# Jaderberg et al. 2017, Table 1 (PTB characters, test BPC; T = 2, 3, 4, 5, 8)
PAPER = {
    "bptt": (1.39, 1.38, 1.37, 1.37, 1.35),
    "dni": (1.37, 1.36, 1.35, 1.35, 1.34),
    "dni-aux": (1.37, 1.36, 1.35, 1.35, 1.33),
}
PAPER_T = (2, 3, 4, 5, 8)
FULL = {"steps": 3000, "hidden": 128, "Ts": (2, 3, 4, 5, 8), "lrs": (1e-3, 3e-3, 1e-2)}
FULL["select_seeds"] = 2
QUICK = {"steps": 12, "hidden": 16, "Ts": (2, 4), "lrs": (3e-3,), "select_seeds": 1}
UNROLL, BATCH, CLIP = 40, 32, 10.0


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def parse_args(argv=None):
    def extra(p):
        p.add_argument("--corpus", default="pydoc", choices=["pydoc", "ptb"])
        p.add_argument("--root", default=None, help="folder of the PTB files (--corpus ptb)")
        p.add_argument("--rules", default="bptt,dni,dni-aux", help="default %(default)s")
        p.add_argument("--T", type=_ints, default=None, help="truncations (default 2,3,4,5,8)")
        p.add_argument("--steps", type=int, default=None, help="updates per cell (default 3000)")
        p.add_argument("--hidden", type=int, default=None, help="LSTM units (default 128)")
        p.add_argument("--lrs", type=_floats, default=None, help="core lrs tried on validation")
        p.add_argument("--select-T", type=int, default=4, help="T of the lr selection (4)")
        p.add_argument(
            "--select-seeds", type=int, default=None, help="seeds per lr in the selection (2)"
        )
        p.add_argument("--module-lr", type=float, default=1e-3, help="Adam lr of M (1e-3)")
        p.add_argument("--scale", type=float, default=0.1, help="κ on δ̂ (default 0.1)")
        p.add_argument("--workers", type=int, default=2, help="cells side by side (default 2)")
        p.add_argument("--results", type=Path, default=ROOT / "data" / "results")

    def check(a):
        budget = QUICK if a.quick else FULL
        a.T = a.T or budget["Ts"]
        a.steps = a.steps or budget["steps"]
        a.hidden = a.hidden or budget["hidden"]
        a.lrs = a.lrs or budget["lrs"]
        a.select_seeds = a.select_seeds or budget["select_seeds"]
        a.rules = [r.strip() for r in a.rules.split(",") if r.strip()]
        bad = [r for r in a.rules if r not in PAPER]
        if bad:
            return f"--rules: unknown {bad}; choose from {', '.join(PAPER)}"
        if any(t < 1 for t in a.T) or a.select_T < 1:
            return f"--T and --select-T must be >= 1, got {a.T} and {a.select_T}"
        if a.steps < 1 or a.workers < 1 or a.hidden < 1:
            return "--steps, --workers and --hidden must be >= 1"
        if not a.lrs or min(a.lrs) <= 0:
            return f"--lrs must be positive learning rates, got {a.lrs}"
        if not 0 < a.scale <= 1:
            return f"--scale must be in (0, 1], got {a.scale}"
        try:  # a missing corpus is an error before any training starts
            a.task = CharLMTask(a.corpus, **({"root": a.root} if a.root else {}))
        except MissingDataError as exc:
            return str(exc)
        return None

    return C.parse_args("dni_language", __doc__.split("\n\n")[0], 1, argv, extra, check)


def run_cell(job: dict) -> dict:
    """Train one (rule, T, lr, seed) cell; its held-out BPC on ``job["split"]``."""
    torch.set_num_threads(1)
    task = job["task"]
    circuit = RecurrentCircuit(task.n_in, job["hidden"], task.n_out, seed=job["seed"])
    options = {} if job["rule"] == "bptt" else {"scale": job["scale"]}
    rule = bp.rules.get(job["rule"], kind="recurrent", T=job["T"], **options)
    record = None
    if job["split"] == "test":  # the reported cells are recorded (weights, updates, δ̂ vs g*)
        path = Path(job["out"]) / f"{job['rule']}_T{job['T']}_seed{job['seed']}.h5"
        record = bp.Record(path, every=job["record_every"], samples=4)
    t0 = time.perf_counter()
    curve = []
    try:
        run = bp.train(
            circuit,
            rule,
            language_data(task, UNROLL),
            steps=job["steps"],
            batch_size=BATCH,
            clip=CLIP,
            optimizer=("adam", {"lr": job["lr"], "module_lr": job["module_lr"]}),
            seed=job["seed"],
            evaluate=(job["split"],),
            record=record,
            progress=False,
        )
        bpc = run.history[f"{job['split']}_loss"][0]
        errors = np.asarray(run.history["error_bits"])
        train_bpc = float(errors[-50:].mean())
        every = max(1, len(errors) // 30)
        curve = [float(errors[i : i + every].mean()) for i in range(0, len(errors), every)]
    except bp.DivergenceError:
        bpc = train_bpc = float("nan")
    out = {k: v for k, v in job.items() if k != "task"}
    wall = time.perf_counter() - t0
    return {**out, "bpc": bpc, "train_bpc": train_bpc, "curve": curve, "wall": wall}


def run_all(jobs: list[dict], workers: int) -> list[dict]:
    for j in jobs:
        print(f"  queued {j['rule']:<7} T={j['T']} lr={j['lr']:g} seed {j['seed']}", flush=True)
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(run_cell, jobs))
    return [run_cell(j) for j in jobs]


def figure(cells: list[dict], args) -> Path:
    """Test BPC against T per rule, and the training BPC over updates at T = select-T."""
    fig, axes = C.new_figure(2, 1, width=4.4, height=3.4)
    left, right = axes[0]
    for i, r in enumerate(args.rules):
        Ts = sorted({c["T"] for c in cells if c["rule"] == r})
        means = [np.nanmean([c["bpc"] for c in cells if (c["rule"], c["T"]) == (r, T)]) for T in Ts]
        left.plot(Ts, means, "o-", color=f"C{i}", label=r)
        for c in cells:
            if c["rule"] == r and c["T"] == Ts[len(Ts) // 2] and c["curve"]:
                x = np.linspace(0, args.steps, len(c["curve"]))
                right.plot(x, c["curve"], color=f"C{i}", label=r if c["seed"] == 0 else None)
    left.set(xlabel="truncation T", ylabel="test BPC", title="held-out bits per character")
    right.set(xlabel="update", ylabel="training BPC", title="training (middle T)")
    for ax in (left, right):
        ax.legend(fontsize=8)
    return C.save_figure(fig, args.out / "dni_language.png")


def main(argv=None) -> None:
    args = parse_args(argv)
    task = args.task
    seeds = list(range(args.seeds))
    base = {
        "task": task,
        "hidden": args.hidden,
        "steps": args.steps,
        "module_lr": args.module_lr,
        "scale": args.scale,
        "out": str(args.out),
        "record_every": 5 if args.quick else 500,
    }
    t0 = time.perf_counter()
    # 1. each rule's lr, chosen on the validation text
    sel = [
        {**base, "rule": r, "T": args.select_T, "lr": lr, "seed": s, "split": "valid"}
        for r in args.rules
        for lr in args.lrs
        for s in range(args.select_seeds)
    ]
    selection = run_all(sel, args.workers) if len(args.lrs) > 1 else []
    chosen = {}
    for r in args.rules:  # the lowest mean validation BPC over the seeds (a collapse counts)
        score = {
            lr: float(np.mean([c["bpc"] for c in selection if (c["rule"], c["lr"]) == (r, lr)]))
            for lr in args.lrs
        }
        finite = {lr: v for lr, v in score.items() if np.isfinite(v)}
        chosen[r] = min(finite, key=finite.get) if finite else args.lrs[0]
    # 2. the grid, scored once on the test text
    grid = [
        {**base, "rule": r, "T": T, "lr": chosen[r], "seed": s, "split": "test"}
        for r in args.rules
        for T in args.T
        for s in seeds
    ]
    cells = run_all(grid, args.workers)
    wall = time.perf_counter() - t0

    print(
        f"\nJaderberg et al. 2017, Table 1 format: test bits per character, corpus "
        f"{task.corpus.name!r} ({len(task.codes['train'])} training characters, "
        f"{task.n_in} symbols).\nBudget per cell: {args.steps} Adam updates on {BATCH} streams"
        f" × {UNROLL} characters, LSTM {args.hidden}, κ = {args.scale:g}, M lr "
        f"{args.module_lr:g}; {len(seeds)} seed(s); {len(sel) + len(grid)} cells in "
        f"{wall:.0f} s.\n"
    )
    if selection:
        rows = [
            [c["rule"], f"{c['lr']:g}", c["seed"], f"{c['bpc']:.3f}"]
            for c in sorted(selection, key=lambda c: (c["rule"], c["lr"], c["seed"]))
        ]
        print(f"lr selection on the validation text at T = {args.select_T}:")
        print(C.table(["rule", "lr", "seed", "valid BPC"], rows))
        print("chosen: " + ", ".join(f"{r} {lr:g}" for r, lr in chosen.items()) + "\n")
    mean = {
        (r, T): float(np.nanmean([c["bpc"] for c in cells if (c["rule"], c["T"]) == (r, T)]))
        for r in args.rules
        for T in args.T
    }
    rows = []
    for r in args.rules:
        row = [r]
        for T in args.T:
            paper = PAPER[r][PAPER_T.index(T)] if T in PAPER_T else None
            row.append(f"{mean[(r, T)]:.3f}" + (f" [{paper}]" if paper else ""))
        rows.append(row)
    print("test BPC: ours [paper, PTB]")
    print(C.table(["rule"] + [f"T={T}" for T in args.T], rows))
    for r in [r for r in ("dni", "dni-aux") if r in args.rules and "bptt" in args.rules]:
        better = sum(mean[(r, T)] < mean[("bptt", T)] for T in args.T)
        print(
            C.claim(
                f"at the same T, {r} reaches a lower BPC than bptt",
                f"{r} < bptt at {better} of {len(args.T)} T values (mean "
                f"{np.mean([mean[(r, T)] for T in args.T]):.3f} vs "
                f"{np.mean([mean[('bptt', T)] for T in args.T]):.3f})",
                better > len(args.T) / 2,
                args.quick,
            )
        )
    png = figure(cells, args)
    results = {
        "command": " ".join(["python circuits/dni_language.py", *(argv or sys.argv[1:])]),
        "corpus": task.corpus.name,
        "corpus_source": task.corpus.source,
        "seeds": seeds,
        "budget": {
            "steps": args.steps,
            "streams": BATCH,
            "unroll": UNROLL,
            "hidden": args.hidden,
            "clip": CLIP,
            "scale": args.scale,
            "module_lr": args.module_lr,
        },
        "selection": {
            "split": "valid",
            "T": args.select_T,
            "seeds": args.select_seeds,
            "cells": selection,
            "chosen": chosen,
        },
        "cells": cells,
        "test_bpc": {f"{r} T={T}": v for (r, T), v in mean.items()},
        "wall_s": wall,
    }
    text = json.dumps(results, indent=1, default=str)
    (args.out / "results.json").write_text(text)
    if not args.quick:
        args.results.mkdir(parents=True, exist_ok=True)
        dest = args.results / f"dni_language{'' if task.corpus.name == 'pydoc' else '_ptb'}.json"
        dest.write_text(text)
        print(f"wrote {dest}")
    print(f"results, recordings and {png.name} in {args.out} ({C.wall(args)})")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
