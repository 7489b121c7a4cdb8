"""Helpers of the target-propagation scripts (``dtp_lee``, ``dtp_meulemans``, the dtp rows of
``bartunov_fc``): run rule variants × seeds on one circuit, read the Gauss–Newton and bp
angles off the recordings, plot them per layer, write results under ``data/results/``.

Not a script (the leading underscore keeps it out of the script tests).  Every variant of a
seed starts from a deep copy of the same circuit and sees the same data order (``seed``).
"""

from __future__ import annotations

import copy
import json
import math
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

import bioprop as bp
from bioprop.analysis import target_propagation as tpa
from bioprop.recording.provenance import timestamp

import _common
from _common import claim, table  # noqa: F401 (re-exported for the tp scripts)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "data" / "results"
PAPERS = ROOT / "data" / "papers" / "target_propagation.csv"
QUICK_STEPS = 30
#: λ of the damped Gauss–Newton target Jᵀ(JJᵀ + λI)⁻¹Δ (Meulemans et al.'s figure configs use
#: 1 for most layers); the undamped one (λ = 0) is reported beside it
DAMPING = 1.0


@dataclass
class Variant:
    """One row of an experiment: a rule with its options, optimizer and budget.

    ``epochs`` counts passes over the data; ``forward_epochs`` the passes that train the
    forward weights (half of them under the alternating schedule), the budget compared."""

    label: str
    rule: str
    options: dict[str, Any] = field(default_factory=dict)
    optimizer: Any = ("adam", {"lr": 1e-4})
    epochs: int = 1

    @property
    def forward_epochs(self) -> int:
        if self.options.get("schedule") == "alternating":
            warm = self.options.get("inverse_warmup_epochs", 0)
            return (self.epochs - warm) // 2
        return self.epochs - self.options.get("inverse_warmup_epochs", 0)


def load(dataset: str, quick: bool, validation: bool) -> bp.data.Dataset:
    ds = bp.data.load_for_run(dataset, quick=quick)
    return _common.validation(ds, quick) if validation else ds


def run_variants(
    variants: Sequence[Variant],
    build: Callable[[int], bp.Circuit],
    data: bp.data.Dataset,
    out: Path,
    seeds: int,
    *,
    loss: str,
    batch_size: int,
    record_every: int,
    samples: int,
    quick: bool,
) -> dict[str, list[dict[str, float]]]:
    """Train every variant × seed; recordings ``out/<label>-seed<s>.h5``.  Returns per label
    a list (over seeds) of test error, final test loss and wall time."""
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    results: dict[str, list[dict[str, float]]] = {v.label: [] for v in variants}
    for s in range(seeds):
        base = build(s)
        for v in variants:
            circuit = copy.deepcopy(base)
            t0 = time.perf_counter()
            try:
                run = bp.train(
                    circuit,
                    bp.rules.get(v.rule, **v.options),
                    data,
                    loss=loss,
                    optimizer=v.optimizer,
                    epochs=v.epochs,
                    batch_size=batch_size,
                    seed=s,
                    record=bp.Record(
                        out / f"{v.label}-seed{s}.h5",
                        every=record_every if not quick else 10,
                        samples=samples,
                    ),
                    max_steps=QUICK_STEPS if quick else None,
                    progress=False,
                )
                row = {"test_error": run.test_error, "final_loss": run.final_loss}
            except bp.DivergenceError as exc:
                print(f"{v.label} seed {s}: {exc}", file=sys.stderr)
                row = {"test_error": math.nan, "final_loss": math.nan}
            row["wall_s"] = time.perf_counter() - t0
            results[v.label].append(row)
            print(
                f"  seed {s} {v.label:<18} test error {100 * row['test_error']:6.2f} %  "
                f"({row['wall_s']:.0f} s)",
                flush=True,
            )
    return results


@dataclass
class Experiment:
    """What :func:`run_experiment` hands back to a script: its arguments, data, variants,
    per-seed results, angle recordings per variant and the alignment figure."""

    args: Any
    data: bp.data.Dataset
    variants: list[Variant]
    results: dict[str, list[dict[str, float]]]
    angles: dict[str, dict[str, xr.Dataset]]
    figure: Path
    t0: float

    @property
    def error(self) -> dict[str, float]:
        """Mean test error over seeds per variant."""
        return {
            v.label: mean([r["test_error"] for r in self.results[v.label]]) for v in self.variants
        }


def run_experiment(
    name: str,
    doc: str,
    rules: str,
    epochs: int,
    variants: Callable[[list[str], int], list[Variant]],
    build: Callable[[int], bp.Circuit],
    argv: Sequence[str] | None,
    batch_size: int,
    record_every: int,
    samples: int,
) -> Experiment:
    """The shared body of a target-propagation script: parse the image-script arguments (plus
    ``--validation``), load the data, run every variant × seed (:func:`run_variants`, cross-
    entropy), read the angles off the recordings and plot them."""
    p = _common.image_parser(name, doc, rules, epochs, workers=False)
    args = p.parse_args(argv)
    out, chosen = _common.image_setup(args, name)
    t0 = time.perf_counter()
    data = load(args.dataset, args.quick, args.validation)
    vs = variants(chosen, args.epochs)
    print(f"{data.name}: {', '.join(v.label for v in vs)}, {args.seeds} seed(s)")
    res = run_variants(
        vs,
        build,
        data,
        out,
        args.seeds,
        loss="cross-entropy",
        batch_size=batch_size,
        record_every=record_every,
        samples=samples,
        quick=args.quick,
    )
    angles = {v.label: seed_angles(out, v.label, args.seeds) for v in vs}
    angles = {k: a for k, a in angles.items() if a}
    return Experiment(args, data, vs, res, angles, plot_angles(out / "alignment.png", angles), t0)


def summarize_angles(exp: Experiment, batch_size: int) -> dict:
    """:func:`angle_summary` of every variant that recorded angles."""
    steps_per_epoch = -(-exp.data.x_train.shape[0] // batch_size)
    by_label = {v.label: v for v in exp.variants}
    return {k: angle_summary(a, by_label[k], steps_per_epoch) for k, a in exp.angles.items()}


def mean_sd(values: Sequence[float], scale: float = 100.0, fmt: str = ".2f") -> str:
    """``mean ± sd`` of the finite values, saying how many runs diverged."""
    vals = [scale * v for v in values if math.isfinite(v)]
    lost = len(values) - len(vals)
    note = f" ({lost} of {len(values)} diverged)" if lost else ""
    if not vals:
        return "diverged"
    if len(vals) == 1:
        return format(vals[0], fmt) + note
    return f"{statistics.fmean(vals):{fmt}} ± {statistics.stdev(vals):{fmt}}" + note


def mean(values: Sequence[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    return statistics.fmean(vals) if vals else math.nan


def seed_angles(out: Path, label: str, seeds: int) -> dict[str, xr.Dataset]:
    """Per forward pathway into a population with a target: Meulemans et al.'s update angles
    (``bp``, ``gauss_newton`` undamped, ``gauss_newton_damped`` with λ = :data:`DAMPING`;
    degrees over steps), averaged over seeds."""
    per: dict[str, list[xr.Dataset]] = {}
    for s in range(seeds):
        with bp.load(out / f"{label}-seed{s}.h5") as rec:
            if not tpa.target_populations(rec):
                return {}  # not a target-propagation run
            plain = tpa.all_update_angles(rec)
            damped = tpa.all_update_angles(rec, DAMPING)
            for pw, a in plain.items():
                a = a.load()
                a["gauss_newton_damped"] = damped[pw]["gauss_newton"].load()
                per.setdefault(pw, []).append(a)
    return {pw: xr.concat(v, "seed", join="inner").mean("seed") for pw, v in per.items()}


def early_late(a: xr.DataArray, frac: float = 0.2) -> tuple[float, float]:
    """Mean of the first and of the last ``frac`` of the records (NaN skipped)."""
    v = a.values[np.isfinite(a.values)]
    if not v.size:
        return math.nan, math.nan
    k = max(1, int(round(v.size * frac)))
    return float(v[:k].mean()), float(v[-k:].mean())


def angle_summary(
    per: dict[str, xr.Dataset], variant: Variant, steps_per_epoch: int
) -> dict[str, dict[str, float]]:
    """Per pathway: the mean ∠ to bp and to the Gauss–Newton target update over the first
    epoch of forward learning (after the warm-up; the second pass when alternating) and over
    the last fifth of the records."""
    skip = variant.options.get("inverse_warmup_epochs", 0)
    if variant.options.get("schedule") == "alternating":
        skip += 1
    lo, hi = skip * steps_per_epoch, (skip + 1) * steps_per_epoch
    out = {}
    for pw, ds in per.items():
        first = ds.sel(step=(ds.step > lo) & (ds.step <= hi))
        out[pw] = {"bp_mean": float(ds["bp"].mean())}
        for key in ("bp", "gauss_newton", "gauss_newton_damped"):
            out[pw][f"{key}_first_forward_epoch"] = float(first[key].mean())
            out[pw][f"{key}_last_fifth"] = early_late(ds[key])[1]
    return out


def angle_claims(summary: dict[str, dict[str, dict[str, float]]], quick: bool) -> list[str]:
    """Meulemans et al.'s two alignment claims for every target-propagation variant."""
    claims = []
    for label, window in summary.items():
        gn = mean([w["gauss_newton_damped_first_forward_epoch"] for w in window.values()])
        gn0 = mean([w["gauss_newton_first_forward_epoch"] for w in window.values()])
        to_bp = mean([w["bp_first_forward_epoch"] for w in window.values()])
        worst = max(w["bp_mean"] for w in window.values())
        claims.append(
            claim(
                f"{label}: updates within 90° of bp's at every layer (mean over training)",
                f"largest per-layer mean ∠bp {worst:.0f}°",
                worst < 90,
                quick,
            )
        )
        claims.append(
            claim(
                f"{label}: closer to the (damped, λ = {DAMPING:g}) Gauss–Newton target update "
                "than to bp early in training (first forward epoch; Meulemans et al.)",
                f"mean over layers ∠GN {gn:.0f}° vs ∠bp {to_bp:.0f}° (undamped ∠GN {gn0:.0f}°)",
                gn < to_bp,
                quick,
            )
        )
    return claims


def plot_angles(path: Path, angles: dict[str, dict[str, xr.Dataset]]) -> Path:
    """One row per variant: ∠ to bp, to the Gauss–Newton target update and to the damped one
    of every layer below the first target, over training."""
    from matplotlib.figure import Figure

    rows = [k for k, v in angles.items() if v] or list(angles)
    fig = Figure(figsize=(14, 3.4 * max(1, len(rows))), layout="constrained")
    axes = fig.subplots(max(1, len(rows)), 3, squeeze=False)
    keys = ("bp", "gauss_newton", "gauss_newton_damped")
    whats = ("bp update", "Gauss-Newton target update", f"damped GN (λ={DAMPING:g}) update")
    for row, label in zip(axes, rows, strict=False):
        for j, (pw, ds) in enumerate(angles[label].items()):
            for ax, key in zip(row, keys, strict=True):
                ax.plot(ds.step, ds[key], color=f"C{j}", label=pw)
        for ax, what in zip(row, whats, strict=True):
            ax.set_title(f"{label}: angle to the {what}")
            ax.set_xlabel("step")
            ax.set_ylabel("degrees")
            ax.axhline(90, color="0.7", lw=0.8, ls="--")
            ax.set_ylim(0, 120)
            if ax.lines:
                ax.legend(fontsize=7)
    fig.savefig(path, dpi=110)
    return path


def variant_table(vs: Sequence[Variant], res: dict[str, list[dict]], paper: str, ours: str) -> str:
    """The printed table of a variants experiment: test error (mean ± sd over seeds), the
    forward-epoch budget, passes over the data and wall time per seed (no paper numbers:
    they could not be retrieved here, see data/papers)."""
    rows = []
    for v in vs:
        errs = [r["test_error"] for r in res[v.label]]
        wall = mean([r["wall_s"] for r in res[v.label]])
        rows.append([v.label, "—", mean_sd(errs), v.forward_epochs, v.epochs, f"{wall:.0f}"])
    headers = ["rule", paper, ours, "forward epochs", "passes", "wall/seed (s)"]
    return table(headers, rows)


def finish(name: str, exp: Experiment, summary: dict, claims: list[str]) -> int:
    """Print the claims and the budget, write ``data/results/<name>.json`` (full runs)."""
    args = exp.args
    print("\nclaims:")
    print("\n".join(claims))
    budget = "quick" if args.quick else f"{args.epochs} forward epoch(s)"
    print(f"\n{args.seeds} seed(s), {budget}; wrote {exp.figure.parent}/*.h5 and {exp.figure.name}")
    variants = {
        v.label: {
            "rule": v.rule,
            "options": {k: repr(x) for k, x in v.options.items()},
            "optimizer": repr(v.optimizer),
            "passes": v.epochs,
            "per_seed": exp.results[v.label],
        }
        for v in exp.variants
    }
    payload = {
        "dataset": exp.data.name,
        "seeds": args.seeds,
        "forward_epochs": args.epochs,
        "variants": variants,
        "angles": summary,
        "claims": claims,
        "wall_s": time.perf_counter() - exp.t0,
    }
    path = write_results(name, payload, args.quick, figure=exp.figure, results=args.results)
    if path:
        print(f"results: {path}")
    print(f"{time.perf_counter() - exp.t0:.0f} s")
    return 0


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def write_results(
    name: str,
    payload: dict[str, Any],
    quick: bool,
    figure: Path | None = None,
    results: Path = RESULTS,
) -> Path | None:
    """``<results>/<name>.json`` (default ``data/results``) with the command, seeds, budget
    and numbers, and a copy of ``figure`` as ``<name>.png`` (full runs only: a quick run's
    numbers are not results)."""
    if quick:
        return None
    results.mkdir(parents=True, exist_ok=True)
    if figure is not None and figure.exists():
        shutil.copyfile(figure, results / f"{name}.png")
    payload = {
        "command": " ".join(["python", *sys.argv]),
        "commit": _commit(),
        "machine": platform.platform(),
        "written": timestamp(),
        **payload,
    }
    path = results / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    return path
