"""Bartunov et al. 2018: a fully connected 5 × 256 tanh network trained with bp, fa and dfa.

Softmax / cross-entropy output, Adam; the same initial weights and data order for every
rule (``bioprop.compare``).  The paper's MNIST test errors (their Table 1, fully connected
network): bp 1.48 %, fa 1.85 %, dfa 2.75 %.  Fashion-MNIST is the default here; MNIST is
used where it can be downloaded.

    python circuits/bartunov_fc.py --dataset fashion-mnist --seeds 3 --epochs 10
"""

from __future__ import annotations

import time
from pathlib import Path

import bioprop as bp

import _common

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
        for j, pop in enumerate(hidden):
            a = _common.seed_mean(out, rule, seeds, lambda r, p=pop: bp.analysis.update_angle(r, p))
            ax.plot(a.step, a.values, label=pop, color=f"C{j}")
        _common.angle_axes(ax, f"{rule}: ∠(δ, δ_BP) per hidden layer")
    path = out / "alignment.png"
    fig.savefig(path, dpi=110)
    return path


def main(argv=None) -> int:
    p = _common.image_parser("bartunov_fc", __doc__, "bp,fa,dfa", 10)
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate")
    args = p.parse_args(argv)
    out, rules = _common.image_setup(args, "bartunov_fc")
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
    print()
    print(_common.paper_table(ds, rules, PAPER_MNIST, args.dataset))
    budget = "quick" if args.quick else f"{args.epochs} epoch(s)"
    print(f"\n{args.seeds} seed(s), {budget}, Adam lr {args.lr}, batch 64")
    print(f"wrote {out}/summary.nc, report.png, alignment.png; {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
