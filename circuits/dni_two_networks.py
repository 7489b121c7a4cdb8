"""Jaderberg et al. 2017 (ICML), §3.3: two recurrent networks that learn through a DNI.

Network A (LSTM) reads a stream of Fashion-MNIST images, one per step, and every T steps
outputs how many *odd* classes it saw in those T steps; it also sends a message to network
B (LSTM), which ticks once every T steps and outputs how many items of class 3 appeared over
the last T² steps.  Only B's error can teach A to put 3s into its messages.

* ``bptt``      — full BPTT through both networks over the whole stream (the reference);
* ``dni``       — A learns block by block from its own loss, a temporal synthetic gradient
                  at its block boundaries and a synthetic gradient M_m(m) for its message,
                  so it never waits for B; B learns in windows of T ticks with its own
                  temporal synthetic gradient and supplies M_m's bootstrapped targets;
* ``truncated`` — the same windows with no synthetic gradient (A's messages are never taught).

Budget (CPU): ``--steps`` Adam updates (default 1000) on batches of 32 streams of 4·T blocks
(T = 3: 36 steps per stream), LSTMs of 64 (A) and 32 (B) units, a 16-unit message.
Reported: test accuracy of A's and B's counts on 512 held-out streams (from test images),
and ∠(M_m(m_j), true ∂L_B/∂m_j) over training.

Recorded per method (``<method>_seed<s>_A.h5``, ``..._B.h5``; ``bioprop.load``): the weights
and updates of each network, ``metrics`` (batch loss), ``evaluation`` (test accuracies) and,
for dni, ``interfaces/message`` (angle and relative error of the synthetic message gradient
per tick).  Figure: ``dni_two_networks.png``.  The loop, optimizer, seeding and recordings are
the library's (``bioprop.recurrent.two_networks_loop.fit``); this script is the configuration.
"""

from __future__ import annotations

import argparse
import math
import warnings

import numpy as np

import bioprop as bp
from bioprop.recurrent.two_networks import METHODS, TwoNetworks
from bioprop.recurrent.two_networks_loop import fit

import _common as C

FULL = {"steps": 1000, "n_test": 512, "every": 50}
MARGIN = 0.025  # accuracy differences below this are not counted (1 seed, 512 test streams)
QUICK = {"steps": 6, "n_test": 32, "every": 3}


def parse_args(argv=None) -> argparse.Namespace:
    def extra(p: argparse.ArgumentParser) -> None:
        p.add_argument("--T", type=int, default=3, help="block length T (default 3)")
        p.add_argument("--blocks", type=int, default=None, help="blocks per stream (default 4·T)")
        p.add_argument("--steps", type=int, default=None, help="updates per method (default 1000)")
        p.add_argument("--methods", default=",".join(METHODS), help="default %(default)s")
        p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist1d"])
        p.add_argument("--lr", type=float, default=3e-3, help="Adam lr, networks (default 3e-3)")
        p.add_argument("--module-lr", type=float, default=1e-3, help="Adam lr, modules (1e-3)")

    def check(a: argparse.Namespace) -> str | None:
        if a.T < 1:
            return f"--T must be >= 1, got {a.T}"
        a.blocks = a.blocks or 4 * a.T
        a.methods = [m.strip() for m in a.methods.split(",") if m.strip()]
        bad = [m for m in a.methods if m not in METHODS]
        if bad:
            return f"--methods: unknown {bad}; choose from {', '.join(METHODS)}"
        budget = QUICK if a.quick else FULL
        a.steps = a.steps or budget["steps"]
        return None

    return C.parse_args("dni_two_networks", __doc__.split("\n\n")[0], 1, argv, extra, check)


def run_method(method: str, seed: int, data, args, budget) -> dict:
    """Train one method from the circuit seed of ``seed``; its learning curves as a dict."""
    net = TwoNetworks(data.x_train.shape[1], args.T, seed=seed)
    run = fit(
        net,
        method,
        data,
        blocks=args.blocks,
        steps=args.steps,
        n_test=budget["n_test"],
        optimizer=("adam", {"lr": args.lr, "module_lr": args.module_lr}),
        seed=seed,
        every=budget["every"],
        record=args.out / f"{method}_seed{seed}",
        attrs={"dataset": args.dataset},
    )
    return vars(run)


def main(argv=None) -> None:
    args = parse_args(argv)
    budget = QUICK if args.quick else FULL
    data = bp.data.load_for_run(args.dataset, quick=args.quick)
    args.dataset = data.name  # recordings and the table name a synthetic stand-in as such
    results = {
        m: [run_method(m, s, data, args, budget) for s in range(args.seeds)] for m in args.methods
    }
    print(
        f"\nTwo networks through a DNI (Jaderberg et al. 2017 §3.3), {args.dataset} stream, T = "
        f"{args.T}, {args.blocks} blocks per stream; {args.steps} Adam updates per method "
        f"(lr {args.lr:g}, modules {args.module_lr:g}), batches of 32, {args.seeds} seed(s).\n"
        f"Test accuracy on {budget['n_test']} held-out streams at the end (A: odd count per "
        f"block, chance-level guess of the commonest count for B: "
        f"{results[args.methods[0]][0]['chance_b']:.3f}).\n"
    )
    rows = []
    for m, runs in results.items():
        ang = [r["angle"][-1] for r in runs]
        rows.append(
            [
                m,
                C.mean_sd([r["acc_a"][-1] for r in runs], ".3f"),
                C.mean_sd([r["acc_b"][-1] for r in runs], ".3f"),
                "—" if all(math.isnan(a) for a in ang) else C.mean_sd(ang, ".0f"),
            ]
        )
    print(
        C.table(
            [
                "method",
                "A accuracy (odd counts)",
                "B accuracy (3-counts over T² steps)",
                "∠(M_m(m), ∂L_B/∂m)°",
            ],
            rows,
        )
    )
    if {"dni", "truncated", "bptt"} <= set(results):
        b = {m: float(np.mean([r["acc_b"][-1] for r in results[m]])) for m in results}
        print()
        print(
            C.claim(
                "the task needs taught messages: B with full BPTT beats the untaught-message "
                f"control (by more than {4 * MARGIN} in accuracy)",
                f"B accuracy bptt {b['bptt']:.3f} vs truncated {b['truncated']:.3f}",
                b["bptt"] > b["truncated"] + 4 * MARGIN,
                args.quick,
                source="check",
            )
        )
        print(
            C.claim(
                "A and B learn through the DNI: B beats the untaught-message control "
                f"(by more than {MARGIN} in accuracy)",
                f"B accuracy dni {b['dni']:.3f} vs truncated {b['truncated']:.3f}",
                b["dni"] > b["truncated"] + MARGIN,
                args.quick,
            )
        )
        print(
            C.claim(
                f"the decoupled system comes close to full BPTT (within {2 * MARGIN})",
                f"B accuracy dni {b['dni']:.3f} vs bptt {b['bptt']:.3f}",
                b["dni"] >= b["bptt"] - 2 * MARGIN,
                args.quick,
            )
        )
    fig, axes = C.new_figure(3)
    for m, runs in results.items():
        x = runs[0]["step"]
        C.band(axes[0][0], x, np.array([r["acc_a"] for r in runs]), m)
        C.band(axes[0][1], x, np.array([r["acc_b"] for r in runs]), m)
        if m == "dni":
            with warnings.catch_warnings():  # the angle is NaN while M_m = 0 (step 0)
                warnings.simplefilter("ignore", RuntimeWarning)
                C.band(axes[0][2], x, np.array([r["angle"] for r in runs]), m)
    for ax, title in zip(axes[0][:2], ("A: odd counts", "B: 3-counts over T² steps"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("update")
        ax.set_ylabel("test accuracy")
        ax.legend(fontsize=8)
    C.angle_axes(axes[0][2], "∠(M_m(m_j), true ∂L_B/∂m_j)")
    C.save_figure(fig, args.out / "dni_two_networks.png")
    print(f"\nrecordings and figure in {args.out} ({C.wall(args)})")


if __name__ == "__main__":
    main()
