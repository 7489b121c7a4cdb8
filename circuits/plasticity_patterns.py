"""Miconi, Clune & Stanley 2018 (ICML), §4.1: binary pattern memorisation, plastic vs not.

Each episode shows 5 random ±1 patterns of 1000 bits twice (6 steps each, 4 blank steps
after each, in a new order per cycle), then one of them with half its bits zeroed for 6
steps; inputs × 20; the loss is the squared error at the last step, the metric the
fraction of zeroed bits whose output has the wrong sign.  The same outer loop trains
every network — Adam at lr 3e-4 (the paper's), one episode per update, the same number of
episodes, no clipping, BPTT through the whole episode (``dp-bptt``):

* ``plastic`` — the paper's plastic RNN: 1000 tanh units, inputs and outputs one to one,
  recurrent weights w + α ⊙ Hebb (decay form), w, α ~ N(0, 0.01²), η = 0.01 learned;
* ``rnn`` — the same RNN with α fixed at 0 and 1415 units (the first 1000 receive and give
  the patterns), as many parameters as the plastic one (the paper's non-plastic control);
* ``lstm`` — an LSTM of 318 units with a linear read-out (as many parameters), fed the ±1
  patterns without the × 20 (its input weights are trained);
* ``dp-fa`` — the plastic RNN trained *without* backprop through time (local errors at the
  last step, traces and an eligibility for η; ``bioprop.rules.plasticity``).

Reported per model: the learning curve, the sign error on 100 held-out episodes after
training (mean ± sd over seeds), the distribution of the learned α, and ∠(Hebb, p_k p_kᵀ)
of the trace before the test pattern.  Models can be run a few at a time into the same
``--out`` (each run tabulates every finished cell there).  Writes ``<model>-seed<s>.h5``
recordings, ``plasticity_patterns.png`` and ``data/results/plasticity_patterns.json`` (+ ``.png``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from bioprop.plasticity import PatternMemorisation
from bioprop.plasticity.evaluate import Evaluation

import _common as C
import _plasticity as P

PAPER = {  # data/papers/miconi2018.csv
    "plastic": "low error within a few hundred episodes (code default: 2000 episodes)",
    "rnn": "fails (learns something only after hundreds of thousands of episodes)",
    "lstm": "fails (on a 2 x 50-bit version: very long training, still imperfect)",
}
MODELS = (*PAPER, "dp-fa")
FULL = {"bits": 1000, "episodes": 400, "test": 100}
QUICK = {"bits": 40, "episodes": 6, "test": 4}


def parse_args(argv=None):
    def bits(p):
        p.add_argument("--bits", type=int, default=None, help="pattern length (default 1000)")

    budgets = {"full": FULL, "quick": QUICK}
    return P.parse_args("plasticity_patterns", __doc__, MODELS, budgets, 3e-4, argv, bits)


def recency_angles(circuit, ev: Evaluation) -> dict:
    """∠(Hebb, p_k p_kᵀ) of the trace just before the test pattern, patterns ordered from
    the most recently shown, and ∠(Hebb, Σ_k p_k p_kᵀ), over the last held-out batch."""
    from bioprop.analysis.plasticity import pattern_angle

    batch, _ = ev.example
    task_steps = batch.length
    test_steps = int((batch.x[:, 0].abs().sum(1) > 0).flip(0).int().argmin())
    at = task_steps - test_steps
    seen = {}

    def grab(s):
        if s.t == at:
            seen["hebb"] = s.hebb["hidden->hidden"]

    with torch.no_grad():
        circuit.unroll(circuit.initial_state(batch.x.shape[1]), batch.x, on_step=grab)
    hebb, pats = seen["hebb"], batch.patterns
    per = pattern_angle(hebb, pats, per_pattern=True)  # (batch, K)
    ordered = []
    for b in range(pats.shape[0]):
        x = batch.x[:at, b, : pats.shape[2]]
        last = [max(t for t in range(at) if torch.equal(torch.sign(x[t]), p)) for p in pats[b]]
        ordered.append(per[b][np.argsort(last)[::-1]])
    return {
        "angle_by_recency": np.mean(ordered, axis=0).tolist(),
        "angle_to_sum": float(np.mean(pattern_angle(hebb, pats))),
    }


def plastic_extra(circuit, ev: Evaluation) -> dict:
    rec = circuit.pathways["hidden->hidden"]
    alpha = rec.alpha.detach()
    out = {
        "eta": float(rec.eta.detach()),
        "alpha_quantiles": np.quantile(alpha.numpy(), [0.05, 0.5, 0.95]).tolist(),
        "alpha_hist": np.histogram(alpha.numpy(), 40)[0].tolist(),
        "alpha_edges": np.histogram(alpha.numpy(), 40)[1].tolist(),
        "alpha_diag_mean": float(alpha.diagonal().mean()),
        "alpha_mean": float(alpha.mean()),
    }
    if rec.active:
        out.update(recency_angles(circuit, ev))
    return out


def example(circuit, ev: Evaluation) -> dict:
    batch, outputs = ev.example
    return {
        "example": {
            "target": batch.y[-1, 0].tolist(),
            "input": batch.x[-1, 0, : batch.y.shape[2]].sign().tolist(),
            "output": outputs[-1, 0].tolist(),
        }
    }


def from_recording(out: Path, model: str, seed: int) -> dict:
    """What the recording of a plastic run says over training (``bioprop.analysis
    .plasticity`` on the .h5): ∠(Hebb, Σ p pᵀ) at the first and last record, and the median
    α at every record."""
    import bioprop as bp
    from bioprop.analysis import plasticity as ap

    path = Path(out) / f"{model}-seed{seed}.h5"
    if not path.exists():
        return {}
    with bp.load(path) as rec:
        ang = ap.recorded_pattern_angle(rec, "hidden->hidden").mean("sample").values
        q = ap.alpha_quantiles(rec, "hidden->hidden", (0.5,)).sel(quantile=0.5)
        agree = {}
        g = rec["plasticity/hidden->hidden"].to_dataset()
        if np.isfinite(g["alpha_update_bp"].values).any():  # dp-fa runs carry BPTT's update
            agree = {
                "angle_w_to_bptt": bp.analysis.update_angle(rec, "hidden->hidden").values.tolist(),
                "angle_alpha_to_bptt": bp.analysis.angle(
                    g["alpha_update"], g["alpha_update_bp"], ["post", "pre"]
                ).values.tolist(),
            }
        return {
            **agree,
            "recorded_steps": q.step.values.tolist(),
            "angle_first_record": float(ang[0]),
            "angle_last_record": float(ang[-1]),
            "alpha_median_by_record": q.values.tolist(),
        }


def alpha_panel(ax, cells, out: Path) -> None:
    """The distribution of α at every record of the first plastic run (its recording, read
    with ``bioprop.analysis.plasticity.alpha_histogram``), and after training."""
    import bioprop as bp
    from bioprop.analysis import plasticity as ap

    m = "plastic" if "plastic" in cells else next((k for k in ("dp-fa",) if k in cells), None)
    if m is None:
        return
    c = cells[m][0]
    edges = np.array(c["alpha_edges"])
    lo, hi = edges[0], edges[-1]
    path = Path(out) / f"{m}-seed{c['seed']}.h5"
    if path.exists():
        with bp.load(path) as rec:
            a = ap.alpha_histogram(rec, "hidden->hidden", np.linspace(lo - 0.02, hi, 50))
        shades = np.linspace(0.75, 0.25, a.sizes["step"])
        for k, step in enumerate(a.step.values):
            ax.plot(
                a.alpha, a.isel(step=k), color=str(shades[k]), lw=1, label=f"episode {int(step)}"
            )
    widths = np.diff(edges)
    ax.stairs(
        np.array(c["alpha_hist"]) / (np.sum(c["alpha_hist"]) * widths),
        edges,
        color="C0",
        lw=1.5,
        label=f"after {c['episodes']} episodes",
    )
    ax.set_yscale("log")
    ax.set_ylim(1e-2, None)
    ax.set_xlabel("α")
    ax.set_ylabel("density over synapses")
    ax.set_title(f"learned α over training ({P.LABELS[m]}, seed {c['seed']})", fontsize=9)
    ax.legend(fontsize=7)


def figure(cells, path: Path, bits: int, out: Path) -> None:
    fig, axes = C.new_figure(4, 1, width=4.4, height=3.6)
    ax = axes[0][0]
    P.curves_panel(ax, cells, "wrong signs on the zeroed bits (running mean 20)")
    ax.axhline(0.05, color="0.5", ls=":", lw=1)
    ax.set_ylim(0, 0.6)
    ax.set_title("learning curves (mean ± sd over seeds)")
    ax = axes[0][1]
    alpha_panel(ax, cells, out)
    ax = axes[0][2]
    for i, m in enumerate(cells):
        rows = [c["angle_by_recency"] for c in cells[m] if "angle_by_recency" in c]
        if rows:
            r = np.array(rows)
            ax.errorbar(
                np.arange(1, r.shape[1] + 1),
                r.mean(0),
                r.std(0),
                marker="o",
                label=P.LABELS[m],
                color=f"C{i}",
                capsize=3,
            )
    ax.set_xlabel("pattern, by recency (1 = shown last)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("∠(Hebb, p pᵀ) before the test (°)")
    ax.set_title("what the trace stores")
    ax.legend(fontsize=7)
    ax = axes[0][3]
    tiles, names = [], []
    for m in cells:
        ex = next((c["example"] for c in cells[m] if "example" in c), None)
        if ex is None:
            continue
        if not tiles:
            tiles += [np.array(ex["target"]), np.array(ex["input"])]
            names += ["target", "test input"]
        tiles.append(np.sign(np.array(ex["output"])))
        names.append(m)
    if tiles:
        side = int(math.sqrt(bits))
        while bits % side:
            side -= 1
        h, w = side, bits // side
        cols = 2
        grid = np.full(((h + 5) * math.ceil(len(tiles) / cols), (w + 2) * cols), np.nan)
        for k, (tile, name) in enumerate(zip(tiles, names, strict=True)):
            r, c = divmod(k, cols)
            grid[r * (h + 5) + 4 : r * (h + 5) + 4 + h, c * (w + 2) : c * (w + 2) + w] = (
                tile.reshape(h, w)
            )
            ax.text(
                c * (w + 2) + w / 2, r * (h + 5) + 1.5, name, ha="center", va="center", fontsize=7
            )
        ax.imshow(grid, cmap="coolwarm", vmin=-1, vmax=1, interpolation="nearest")
        ax.axis("off")
        ax.set_title("a held-out episode: sign of the output")
    C.save_figure(fig, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    seeds = P.seeds(args)
    task = PatternMemorisation(n_bits=args.bits)
    lstm_task = PatternMemorisation(n_bits=args.bits, gain=1.0)
    builders = P.models(args.bits, args.bits)
    print(
        f"pattern memorisation, {args.bits} bits, {args.episodes} episodes, seeds "
        f"{seeds}: {', '.join(args.models)}",
        flush=True,
    )
    for model in args.models:
        t = lstm_task if model == "lstm" else task
        for s in seeds:

            def extra(circuit, ev, model=model, s=s):
                out = plastic_extra(circuit, ev) if model in ("plastic", "rnn", "dp-fa") else {}
                return {**out, **(example(circuit, ev) if s == seeds[0] else {})}

            P.run_cell(model, s, builders[model], t, t, args, extra)
    cells = P.load_cells(args.out)
    rows, summary = [], {}
    for m, cs in cells.items():
        test = [c["test_metric"] for c in cs]
        reach = [P.first_below(c["curve"], 0.05) for c in cs]
        summary[m] = {
            **P.cell_summary(cs),
            "test_sign_error": test,
            "train_sign_error_last50": [P.tail(c["curve"]) for c in cs],
            "episodes_to_5pct": reach,
            "angle_to_sum": [c.get("angle_to_sum") for c in cs],
            "alpha_quantiles_5_50_95": [c.get("alpha_quantiles") for c in cs],
            "angle_by_recency": [c.get("angle_by_recency") for c in cs],
        }
        if m in ("plastic", "dp-fa"):
            summary[m]["recording"] = [from_recording(args.out, m, c["seed"]) for c in cs]
        train = P.mean_sd(summary[m]["train_sign_error_last50"], ".3f")
        metrics = (train, P.mean_sd(test, ".3f"), C.mean_sd(reach, ".0f"))
        rows.append(P.cell_row(m, summary[m], *metrics, paper=PAPER.get(m)))
    headers = ["network", "units", "parameters", "episodes", "train error (last 50)"]
    headers += ["held-out sign error", "episodes to < 5 %", "s/seed", "paper"]
    print()
    print(C.table(headers, rows))
    claims = []

    def verdict(m, ok, text):
        if m in summary:
            v = np.mean(summary[m]["test_sign_error"])
            n = len(summary[m]["test_sign_error"])
            claims.append((text, ok(v), f"held-out sign error {v:.3f} over {n} seed(s)"))

    verdict("plastic", lambda v: v < 0.05, "the plastic RNN's sign error falls below 5 %")
    verdict("rnn", lambda v: v > 0.25, "the non-plastic RNN (same budget) stays far above it")
    verdict("lstm", lambda v: v > 0.25, "the LSTM (same budget) stays far above it")
    verdict("dp-fa", lambda v: v < 0.05, "without BPTT (dp-fa) the plastic RNN still learns it")
    png = Path(args.out) / "plasticity_patterns.png"
    figure(cells, png, args.bits, args.out)
    print(
        f"\nwrote {png} and {sum(len(c) for c in cells.values())} recordings in {args.out} "
        f"({C.wall(args)})"
    )
    experiment = "Miconi et al. 2018 §4.1 binary pattern memorisation"
    payload = {"experiment": experiment, "bits": args.bits, "models": summary}
    P.report(args, "plasticity_patterns", claims, png, payload)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
