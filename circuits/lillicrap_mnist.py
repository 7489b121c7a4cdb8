"""Lillicrap et al. 2016, Fig. 2a: a 784-1000-10 network on MNIST-type images.

Logistic hidden and output units, one-hot targets, squared error, SGD with weight decay
1e-6; rules bp, fa, dfa, sign-symmetry and shallow on the same initial weights and data
order (``bioprop.experiments.compare``).  The paper's MNIST test errors: bp 2.4 %, fa 2.1 %,
shallow 7.2 %.  MNIST is downloaded where the network allows; Fashion-MNIST (Debian package
``dataset-fashion-mnist``) is the default here.

The feedback weights of fa, dfa and sign-symmetry are drawn from U[±0.25], the scale the
forward weights of hidden→output reach in training; ``--feedback-scale 0.05`` (the forward
init's scale) shows what a B five times too small costs: fa's hidden layer learns slower and
stays behind bp.

    python circuits/lillicrap_mnist.py --dataset fashion-mnist --seeds 3 --epochs 10
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

import bioprop as bp

import _common

PAPER_MNIST = {"bp": 2.4, "fa": 2.1, "shallow": 7.2}  # test error %, Lillicrap et al. 2016


def plot_alignment(out: Path, rules: list[str], seeds: int) -> Path:
    """Angle of each rule's hidden teaching signal and hidden-layer update to bp's, and
    ∠(Wᵀ, B) of the output pathway, over training (mean over seeds)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8), layout="constrained")
    ax_d, ax_w, ax_b = fig.subplots(1, 3)
    for i, rule in enumerate(r for r in rules if r != "bp"):
        color = f"C{i + 1}"
        for ax, measure in (
            (ax_d, lambda r: bp.analysis.update_angle(r, "hidden")),
            (ax_w, lambda r: bp.analysis.update_angle(r, "input->hidden")),
            (ax_b, lambda r: bp.analysis.weight_alignment(r, "hidden->output")),
        ):
            try:
                a = _common.seed_mean(out, rule, seeds, measure)
            except KeyError:  # no feedback pathway to align with (e.g. shallow)
                continue
            if np.isfinite(a.values).any():
                ax.plot(a.step, a.values, label=rule, color=color)
    for ax, title in (
        (ax_d, "∠(δ_hidden, δ_BP)"),
        (ax_w, "∠(ΔW_input→hidden, ΔW_BP)"),
        (ax_b, "∠(Wᵀ, B), hidden→output"),
    ):
        _common.angle_axes(ax, title)
    path = out / "alignment.png"
    fig.savefig(path, dpi=110)
    return path


def main(argv=None) -> int:
    parser = _common.image_parser("lillicrap_mnist", __doc__, "bp,fa,dfa,sign-symmetry,shallow", 10)
    parser.add_argument(
        "--feedback-scale",
        type=float,
        default=None,
        metavar="OMEGA",
        help="draw the feedback weights of fa, dfa and sign-symmetry from U[±OMEGA] "
        "(default: the task's, 0.25)",
    )
    args = parser.parse_args(argv)
    if args.feedback_scale is not None and not args.feedback_scale > 0:
        parser.error(f"--feedback-scale must be positive, got {args.feedback_scale}")
    out, rules = _common.image_setup(args, "lillicrap_mnist")
    task = replace(bp.tasks.get(args.dataset), epochs=args.epochs)
    if args.validation:  # tune here; report the test set once, with the chosen settings
        base = task.load
        task = replace(task, load=lambda seed, quick: _common.validation(base(seed, quick), quick))
    if args.feedback_scale is not None:
        options = {"feedback_init": bp.init.uniform(args.feedback_scale)}
        task = replace(task, rule_options={r: options for r in ("fa", "dfa", "sign-symmetry")})
    t0 = time.perf_counter()
    ds = _common.compare(task, rules, args, out)
    plot_alignment(out, rules, args.seeds)
    print()
    print(_common.paper_table(ds, rules, PAPER_MNIST, args.dataset))
    gap = (
        float(ds.test_error.sel(rule="fa").mean() - ds.test_error.sel(rule="bp").mean()) * 100
        if {"fa", "bp"} <= set(rules)
        else float("nan")
    )
    print(
        f"\nfa − bp test error: {gap:+.2f} percentage points "
        f"({args.seeds} seed(s), {task.epochs if not args.quick else 'quick'} epoch(s))"
    )
    print(f"wrote {out}/summary.nc, report.png, alignment.png; {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
