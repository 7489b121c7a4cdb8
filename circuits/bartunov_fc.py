"""Bartunov et al. 2018: a fully connected 5 × 256 tanh network trained with bp, fa and dfa.

Softmax / cross-entropy output, Adam; the same initial weights and data order for every
rule (``bioprop.compare``).  The paper's MNIST test errors (their Table 1, fully connected
network): bp 1.48 %, fa 1.85 %, dfa 2.75 %.  Fashion-MNIST is the default here; MNIST is
used where it can be downloaded.

    python circuits/bartunov_fc.py --dataset fashion-mnist --seeds 3 --epochs 10
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import bioprop as bp

PAPER_MNIST = {"bp": 1.48, "fa": 1.85, "dfa": 2.75}  # test error %, Bartunov et al. 2018


def task(dataset: str, epochs: int, lr: float) -> bp.tasks.Task:
    """784-256-256-256-256-256-10, tanh hidden units, linear output into softmax."""
    base = bp.tasks.get(dataset)
    return bp.tasks.Task(
        f"{dataset}-5x256",
        f"{dataset}, 5 x 256 tanh, cross-entropy, Adam (Bartunov et al. 2018)",
        base.load,
        [784, 256, 256, 256, 256, 256, 10],
        activation="tanh",
        output_activation="linear",
        init=bp.init.xavier_uniform(),
        loss="cross-entropy",
        optimizer=("adam", {"lr": lr}),
        epochs=epochs,
        batch_size=64,
        record_every=500,
        evaluate_on_record=False,
        quick_max_steps=40,
        reference="Bartunov et al. 2018, Table 1 (MNIST, fully connected)",
    )


def plot_alignment(out: Path, rules: list[str], seeds: int, hidden: list[str]) -> Path:
    """∠(δ_rule, δ_BP) of every hidden layer over training, one panel per rule."""
    from matplotlib.figure import Figure

    others = [r for r in rules if r != "bp"]
    fig = Figure(figsize=(4.8 * max(1, len(others)), 3.8), layout="constrained")
    axes = fig.subplots(1, max(1, len(others)), squeeze=False)[0]
    for ax, rule in zip(axes, others, strict=False):
        recs = [bp.load(out / f"{rule}-seed{s}.h5") for s in range(seeds)]
        steps = recs[0]["metrics"].ds.step.values
        for j, pop in enumerate(hidden):
            a = np.mean([bp.analysis.update_angle(r, pop).values for r in recs], axis=0)
            ax.plot(steps, a, label=pop, color=f"C{j}")
        for r in recs:
            r.close()
        ax.set_title(f"{rule}: ∠(δ, δ_BP) per hidden layer")
        ax.set_xlabel("step")
        ax.set_ylabel("degrees")
        ax.axhline(90, color="0.7", lw=0.8, ls="--")
        ax.legend(fontsize=8)
    path = out / "alignment.png"
    fig.savefig(path, dpi=110)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"])
    p.add_argument("--rules", default="bp,fa,dfa")
    p.add_argument("--seeds", type=int, default=None, help="default 3 (1 with --quick)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    p.add_argument("--out", type=Path, default=None, help="default runs/bartunov_fc-DATASET")
    p.add_argument("--quick", action="store_true", help="2000 samples, 40 steps: seconds")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = 1 if args.quick else 3
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or Path("runs") / f"bartunov_fc-{args.dataset}"
    rules = [r.strip() for r in args.rules.split(",") if r.strip()]
    t = task(args.dataset, args.epochs, args.lr)
    t0 = time.perf_counter()
    ds = bp.compare(
        t,
        rules=rules,
        seeds=args.seeds,
        out=out,
        quick=args.quick,
        overwrite=args.overwrite or args.quick,
        progress=False,
    )
    print(bp.compare_table(ds))
    hidden = t.circuit(0).hidden()
    plot_alignment(out, rules, args.seeds, hidden)
    print(f"\n{'rule':<8}{'paper, MNIST (%)':>18}{f'ours, {args.dataset} (%)':>28}")
    for rule in rules:
        err = ds.test_error.sel(rule=rule).values * 100
        ours = f"{np.nanmean(err):.2f} ± {np.nanstd(err):.2f}" if np.isfinite(err).any() else "—"
        paper = PAPER_MNIST.get(rule)
        print(f"{rule:<8}{(f'{paper:.2f}' if paper else '—'):>18}{ours:>28}")
    budget = "quick" if args.quick else f"{args.epochs} epoch(s)"
    print(f"\n{args.seeds} seed(s), {budget}, Adam lr {args.lr}, batch 64")
    print(f"wrote {out}/summary.nc, report.png, alignment.png; {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
