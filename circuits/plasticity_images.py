"""Miconi, Clune & Stanley 2018 (ICML), §4.2: image completion, plastic vs not.

Each episode shows 3 Fashion-MNIST images (the paper: CIFAR-10 in grey), each 3 times for
20 steps with 2 blank steps after each, then one of them with its top or bottom half
erased for 3 steps; the network must reconstruct it.  Images are 2×2-pooled to 14×14 so a
CPU runs the experiment (``--pool 1`` for 28×28), centred and scaled to max |p| = 1 as in
the paper's code, and clamp the units they reach (units with a non-zero input take its
value); one constant input unit plays the paper's bias neuron.  Loss: the squared error at
the last step; metric: the mean squared error per erased pixel.  One outer loop for all —
Adam at lr 1e-4 (the paper's), one episode per update, the same number of episodes:

* ``plastic`` — PlasticRNN of 197 units (196 pixels + bias), w + α ⊙ Hebb, η learned;
* ``rnn`` — the same RNN with α fixed at 0 and 279 units (as many parameters);
* ``lstm`` — an LSTM of 62 units with a linear read-out (as many parameters);
* ``dp-fa`` — the plastic RNN trained without backprop through time.

Trained on Fashion-MNIST's training images, evaluated on 100 episodes of its *test*
images (never seen in training).  Two references: *zero fill* (output 0 on the erased
half) and each network's error when the test image is a *novel* one, never shown in the
episode — what completion from memory gains over completion from a prior learned across
episodes.  Writes ``<model>-seed<s>.h5``, ``plasticity_images.png`` (learning curves and
completed images) and ``data/results/plasticity_images.json`` (+ ``.png``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import bioprop as bp
from bioprop.plasticity import ImageCompletion, prepare_images
from bioprop.plasticity.evaluate import evaluate

import _common as C
import _plasticity as P

PAPER = {  # data/papers/miconi2018.csv
    "plastic": "reconstructs novel images (1000+ pixels) after ~3000 episodes",
    "rnn": "non-plastic recurrent networks fail",
    "lstm": "fails",
}
MODELS = (*PAPER, "dp-fa")
FULL = {"episodes": 3000, "test": 100}
QUICK = {"episodes": 4, "test": 4}


def parse_args(argv=None):
    def pool(p):
        p.add_argument("--pool", type=int, default=2, choices=[1, 2, 4], help="default 2")

    budgets = {"full": FULL, "quick": QUICK}
    return P.parse_args("plasticity_images", __doc__, MODELS, budgets, 1e-4, argv, pool)


def tasks(args) -> tuple[ImageCompletion, ImageCompletion, str]:
    ds = bp.data.load_for_run("fashion-mnist", quick=args.quick, quick_size=(500, 200))
    train = ImageCompletion(prepare_images(ds.x_train, 28, args.pool))
    test = ImageCompletion(prepare_images(ds.x_test, 28, args.pool))
    return train, test, ds.name


def references(test: ImageCompletion, args, seeds: list[int]) -> dict:
    """Zero fill's error (output 0 on the erased half) on the held-out episodes of each seed
    (the very episodes the networks are evaluated on), mean over seeds."""
    from bioprop.plasticity.evaluate import held_out

    per_seed = []
    for s in seeds:
        num = den = 0.0
        for b in held_out(test, args.test_episodes, s):
            num += float((b.y[-1] ** 2 * b.probe).sum())
            den += float(b.probe.sum())
        per_seed.append(num / den)
    return {"zero_fill": float(np.mean(per_seed)) if per_seed else float("nan")}


def extra_for(model: str, seed: int, first: int, test: ImageCompletion, args):
    def extra(circuit, ev):
        out = {
            "novel_test_metric": evaluate(circuit, test.novel(), args.test_episodes, seed).metric
        }
        if seed == first:
            batch, outputs = ev.example
            n = min(3, batch.x.shape[1])
            out["example"] = {
                "stored": batch.patterns[:n].tolist(),
                "input": batch.x[-1, :n, : batch.y.shape[2]].tolist(),
                "target": batch.y[-1, :n].tolist(),
                "output": outputs[-1, :n].tolist(),
            }
        if "hidden->hidden" in circuit.pathways and hasattr(
            circuit.pathways["hidden->hidden"], "eta"
        ):
            out["eta"] = float(circuit.pathways["hidden->hidden"].eta.detach())
        return out

    return extra


def figure(cells, path: Path, side: int) -> None:
    examples = {
        m: next((c["example"] for c in cs if "example" in c), None) for m, cs in cells.items()
    }
    examples = {m: e for m, e in examples.items() if e is not None}
    n_ex = min((len(e["target"]) for e in examples.values()), default=0)
    fig, axes = C.new_figure(2, 1, width=7.0, height=4.6)
    P.curves_panel(axes[0][0], cells, "squared error per erased pixel (running mean 20)")
    axes[0][0].set_title("learning curves (mean ± sd over seeds)")
    ax = axes[0][1]
    ax.set_title("held-out episodes: stored images | test input | target | outputs")
    if n_ex:
        first = next(iter(examples.values()))
        cols = ["stored 1", "stored 2", "stored 3", "input", "target", *examples]
        tiles = []
        for i in range(n_ex):
            row = [np.array(first["stored"][i][k]) for k in range(len(first["stored"][i]))]
            row += [np.array(first["input"][i]), np.array(first["target"][i])]
            row += [np.clip(np.array(e["output"][i]), -1, 1) for e in examples.values()]
            tiles.append(
                np.concatenate(
                    [np.pad(t.reshape(side, side), 1, constant_values=np.nan) for t in row], axis=1
                )
            )
        ax.imshow(np.concatenate(tiles, axis=0), cmap="gray", vmin=-1, vmax=1)
        ax.set_xticks(
            [(side + 2) * (j + 0.5) for j in range(len(cols))], cols, fontsize=7, rotation=30
        )
        ax.set_yticks([])
    C.save_figure(fig, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    seeds = P.seeds(args)
    train, test, source = tasks(args)
    builders = P.models(train.n_in, train.n_out, drive="clamp")
    print(
        f"image completion on {source} ({train.side}x{train.side}), {args.episodes} "
        f"episodes, seeds {seeds}: {', '.join(args.models)}",
        flush=True,
    )
    for model in args.models:
        for s in seeds:
            P.run_cell(
                model,
                s,
                builders[model],
                train,
                test,
                args,
                extra_for(model, s, seeds[0], test, args),
            )
    cells = P.load_cells(args.out)
    ref = references(test, args, sorted({c["seed"] for cs in cells.values() for c in cs}))
    rows, summary = [], {}
    for m, cs in cells.items():
        test_err = [c["test_metric"] for c in cs]
        novel = [c.get("novel_test_metric", float("nan")) for c in cs]
        summary[m] = {
            **P.cell_summary(cs),
            "test_mse_erased": test_err,
            "novel_test_mse_erased": novel,
            "train_mse_last50": [P.tail(c["curve"]) for c in cs],
        }
        train_err = P.mean_sd(summary[m]["train_mse_last50"], ".3f")
        metrics = (train_err, P.mean_sd(test_err, ".3f"), P.mean_sd(novel, ".3f"))
        rows.append(P.cell_row(m, summary[m], *metrics, paper=PAPER.get(m)))
    rows.append(
        ["zero fill (reference)", "—", "—", "—", "—", f"{ref['zero_fill']:.3f}", "—", "—", "—"]
    )
    headers = ["network", "units", "parameters", "episodes", "train (last 50)"]
    headers += ["held-out error", "novel test image", "s/seed", "paper"]
    print()
    print(C.table(headers, rows))
    claims = []
    zero = ref["zero_fill"]

    def mean(m, key):
        return float(np.nanmean(summary[m][key])) if m in summary else float("nan")

    if "plastic" in summary:
        e, nv = mean("plastic", "test_mse_erased"), mean("plastic", "novel_test_mse_erased")
        claims.append(
            (
                "the plastic RNN completes stored images: its error is below half of "
                "zero fill's and below half of its own on novel images",
                e < 0.5 * zero and e < 0.5 * nv,
                f"{e:.3f} vs zero fill {zero:.3f}, novel {nv:.3f}",
            )
        )
    for m in ("rnn", "lstm"):
        if m in summary:
            e, nv = mean(m, "test_mse_erased"), mean(m, "novel_test_mse_erased")
            claims.append(
                (
                    f"the {P.LABELS[m]} does not complete from memory: stored and novel "
                    "test images are completed within 10 % of each other",
                    abs(e - nv) < 0.1 * nv,
                    f"{e:.3f} stored vs {nv:.3f} novel",
                )
            )
    if "dp-fa" in summary:
        e, nv = mean("dp-fa", "test_mse_erased"), mean("dp-fa", "novel_test_mse_erased")
        claims.append(
            (
                "without BPTT (dp-fa) the plastic RNN completes stored images too",
                e < 0.5 * zero and e < 0.5 * nv,
                f"{e:.3f}, novel {nv:.3f}",
            )
        )
    png = Path(args.out) / "plasticity_images.png"
    figure(cells, png, train.side)
    print(f"\nwrote {png} and recordings in {args.out} ({C.wall(args)})")
    payload = {
        "experiment": "Miconi et al. 2018 §4.2 image completion (Fashion-MNIST)",
        "dataset": source,
        "side": train.side,
        "zero_fill": zero,
        "models": summary,
    }
    P.report(args, "plasticity_images", claims, png, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
