"""Helpers shared by the differentiable-plasticity scripts (not a script itself).

One *cell* is one (model, seed) run: a network trained through ``bioprop.train`` on
episodes, then evaluated on fresh held-out episodes (``bioprop.plasticity.evaluate``).
Every finished cell is written to ``<out>/cells/<model>-seed<s>.json`` at once, so a long
experiment can be run a few models at a time into the same folder and every later call
tabulates all the cells the folder holds.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import bioprop as bp
from bioprop.plasticity import episode_data
from bioprop.plasticity.evaluate import evaluate, parameter_count

import _common as C

LABELS = {
    "plastic": "plastic RNN (dp-bptt)",
    "rnn": "RNN, α fixed at 0 (dp-bptt)",
    "lstm": "LSTM (dp-bptt)",
    "dp-fa": "plastic RNN (dp-fa, no BPTT)",
}


def run_cell(
    model: str,
    seed: int,
    build: Callable[[int], Any],
    train_task,
    test_task,
    args,
    extra: Callable[[Any, Any], dict] | None = None,
) -> dict:
    """Train ``build(seed)`` on ``train_task`` for ``args.episodes`` episodes (``dp-fa``
    for the model of that name, ``dp-bptt`` otherwise), evaluate it on
    ``args.test_episodes`` episodes of ``test_task``; record to ``<out>/<model>-seed<s>.h5``."""
    circuit = build(seed)
    rule = bp.rules.get("dp-fa" if model == "dp-fa" else "dp-bptt", kind="recurrent")
    recurrent = "hidden->hidden" if "hidden->hidden" in circuit.pathways else "hidden->hidden:i"
    every = max(1, args.episodes // 4)
    record = bp.Record(
        Path(args.out) / f"{model}-seed{seed}.h5",
        every=every,
        samples=1,
        pathways=[recurrent],
        variables=["weight", "weight_update", "weight_update_bp", "rate"],
        shadow=model == "dp-fa",  # dp-bptt is its own reference
        attrs={"model": model},
    )
    t0 = time.perf_counter()
    try:
        run = bp.train(
            circuit,
            rule,
            episode_data(train_task),
            steps=args.episodes,
            batch_size=1,
            optimizer=("adam", {"lr": args.lr}),
            clip=None,
            record_boundaries=0,
            seed=seed,
            record=record,
            progress=False,
        )
        curve, diverged = run.history["error_bits"], False
    except bp.DivergenceError:
        curve, diverged = [], True
    wall = time.perf_counter() - t0
    ev = evaluate(circuit, test_task, args.test_episodes, seed) if not diverged else None
    cell = {
        "model": model,
        "seed": seed,
        "episodes": args.episodes,
        "lr": args.lr,
        "parameters": parameter_count(circuit),
        "units": circuit.populations["hidden"].size,
        "curve": curve,
        "test_metric": ev.metric if ev else math.nan,
        "test_loss": ev.loss if ev else math.nan,
        "test_episodes": args.test_episodes,
        "wall_s": wall,
        "diverged": diverged,
    }
    if extra is not None and ev is not None:
        cell.update(extra(circuit, ev))
    folder = Path(args.out) / "cells"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{model}-seed{seed}.json").write_text(json.dumps(cell))
    print(
        f"  {model:<8} seed {seed}: test {ev.metric if ev else math.nan:.4f}, "
        f"{wall:.0f} s" + (" (diverged)" if diverged else ""),
        flush=True,
    )
    return cell


def parse_args(
    script: str,
    doc: str,
    models: tuple[str, ...],
    budgets: dict[str, dict[str, int]],
    lr: float,
    argv=None,
    more: Callable[[Any], None] | None = None,
):
    """The scripts' arguments: ``_common.parse_args`` plus ``--models``, ``--episodes``,
    ``--test-episodes``, ``--lr``, ``--first-seed``, ``--results`` and what ``more(p)`` adds.
    ``budgets["full"]`` / ``budgets["quick"]`` give every integer option's default (e.g.
    ``episodes``, ``test``, ``bits``); each must end up ≥ 1."""
    full = budgets["full"]

    def extra(p):
        p.add_argument(
            "--models",
            default=",".join(models),
            help="default %(default)s; 'none' only tabulates the cells already in --out",
        )
        p.add_argument(
            "--episodes", type=int, default=None, help=f"outer updates (default {full['episodes']})"
        )
        p.add_argument(
            "--test-episodes", type=int, default=None, help=f"held out (default {full['test']})"
        )
        if more is not None:
            more(p)
        p.add_argument("--lr", type=float, default=lr, help=f"Adam lr (default {lr:g})")
        p.add_argument("--first-seed", type=int, default=0, help="seeds S..S+N-1 (default 0)")
        p.add_argument(
            "--results",
            type=Path,
            default=None,
            help=f"results JSON (default data/results/{script}.json; none with --quick)",
        )

    def check(a):
        budget = budgets["quick"] if a.quick else full
        a.test_episodes = a.test_episodes or budget["test"]
        for key, default in budget.items():
            if key != "test" and getattr(a, key, None) is None:
                setattr(a, key, default)
        a.models = [m.strip() for m in a.models.split(",") if m.strip() and m != "none"]
        bad = [m for m in a.models if m not in models]
        if bad:
            return f"--models: unknown {bad}; choose from {', '.join(models)}"
        sizes = ["episodes", "test_episodes", *(k for k in budget if k not in ("episodes", "test"))]
        if min(getattr(a, k) for k in sizes) < 1:
            return ", ".join("--" + k.replace("_", "-") for k in sizes) + " must all be >= 1"
        return None

    return C.parse_args(script, doc.split("\n\n")[0], 3, argv, extra, check)


def cell_summary(cs: list[dict]) -> dict:
    """What every model's summary holds whatever the task: seeds, episodes, size, wall time
    and the learned η."""
    return {
        "seeds": [c["seed"] for c in cs],
        "episodes": sorted({c["episodes"] for c in cs}),
        "parameters": cs[0]["parameters"],
        "units": cs[0]["units"],
        "wall_s": [c["wall_s"] for c in cs],
        "eta": [c.get("eta") for c in cs],
    }


def cell_row(model: str, summary: dict, *metrics: str, paper: str | None = None) -> list[str]:
    """A table row: the model, its size and budget, the given metric columns, s/seed and the
    paper's statement."""
    return [
        LABELS.get(model, model),
        summary["units"],
        f"{summary['parameters']:,}",
        "/".join(str(e) for e in summary["episodes"]),
        *metrics,
        f"{np.mean(summary['wall_s']):.0f}",
        paper or "— (not in the paper)",
    ]


def report(args, name: str, claims: list[tuple[str, bool, str]], png: Path, payload: dict) -> None:
    """Print the claims (``dp-fa``'s are ours, the rest the paper's) and write
    ``data/results/<name>.json`` (or ``--results``; none after ``--quick``)."""
    print()
    for text, ok, measured in claims:
        src = "ours" if "dp-fa" in text else "paper"
        print(C.claim(text, measured, ok, args.quick, src))
    results = args.results or (None if args.quick else Path(f"data/results/{name}.json"))
    if results is not None:
        payload = {
            "commands": commands(results),
            **payload,
            "lr": args.lr,
            "test_episodes": args.test_episodes,
            "claims": [{"claim": t, "holds": bool(o), "measured": m} for t, o, m in claims],
        }
        write_results(results, payload, png)
        print(f"wrote {results}")


def models(n_in: int, n_out: int, **options) -> dict[str, Callable[[int], Any]]:
    """``bioprop.plasticity.presets.models`` plus ``dp-fa``: the plastic RNN, trained
    without BPTT (:func:`run_cell` picks the rule by the model's name)."""
    from bioprop.plasticity import presets

    builders = presets.models(n_in, n_out, **options)
    return {**builders, "dp-fa": builders["plastic"]}


def seeds(args) -> list[int]:
    return list(range(args.first_seed, args.first_seed + args.seeds))


def load_cells(out: Path) -> dict[str, list[dict]]:
    """Every cell in ``<out>/cells``, by model (in :data:`LABELS` order)."""
    cells: dict[str, list[dict]] = {}
    for path in sorted((Path(out) / "cells").glob("*.json")):
        c = json.loads(path.read_text())
        cells.setdefault(c["model"], []).append(c)
    order = [m for m in LABELS if m in cells] + [m for m in cells if m not in LABELS]
    return {m: sorted(cells[m], key=lambda c: c["seed"]) for m in order}


def tail(curve: list[float], n: int = 50) -> float:
    return float(np.mean(curve[-n:])) if curve else math.nan


def first_below(curve: list[float], level: float, window: int = 20) -> float:
    """First episode at which the running mean over ``window`` episodes is below ``level``."""
    if len(curve) < window:
        return math.inf
    run = np.convolve(curve, np.ones(window) / window, mode="valid")
    below = np.nonzero(run < level)[0]
    return float(below[0] + window) if below.size else math.inf


def mean_sd(values: list[float], fmt: str) -> str:
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return "—"
    if len(vals) == 1:
        return format(vals[0], fmt)
    return f"{format(statistics.fmean(vals), fmt)} ± {format(statistics.stdev(vals), fmt)}"


def curves_panel(ax, cells: dict[str, list[dict]], ylabel: str, window: int = 20) -> None:
    """Training metric per episode (running mean over ``window``), mean ± sd over seeds."""
    for i, (model, cs) in enumerate(cells.items()):
        curves = [c["curve"] for c in cs if c["curve"]]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        if n < window:
            window = 1
        sm = np.stack([np.convolve(c[:n], np.ones(window) / window, "valid") for c in curves])
        C.band(ax, np.arange(window, n + 1), sm, LABELS.get(model, model), color=f"C{i}")
    ax.set_xlabel("episode")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)


def write_results(path: Path, payload: dict, figure: Path | None = None) -> Path:
    """The experiment's results (command, seeds, budget, numbers) as JSON, and a copy of its
    figure beside it (``<results>.png``, the one README shows)."""
    import shutil

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=float) + "\n")
    if figure is not None and Path(figure).exists():
        shutil.copyfile(figure, path.with_suffix(".png"))
    return path


def commands(results: Path) -> list[str]:
    """The commands that made the cells so far: those an earlier results file lists, then
    this one (each call adds the cells it trained to the same folder)."""
    import sys

    this = "python " + " ".join(sys.argv)
    old = []
    if Path(results).exists():
        old = json.loads(Path(results).read_text()).get("commands", [])
    trains = "--models none" not in this  # a call with --models none only re-tabulates
    return [c for c in old if c != this] + ([this] if trains else [])
