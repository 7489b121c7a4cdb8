"""Helpers shared by the circuit scripts: command line, seeds, learning curves, tables, figures.

Not a script itself (the leading underscore keeps it out of the script tests).  The
scripts import it as ``import _common`` — Python puts a script's own folder first on
``sys.path``, so this works from any working directory.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from matplotlib.figure import Figure  # no pyplot: no GUI backend, safe headless

import bioprop as bp

ROOT = Path(__file__).resolve().parents[1]

__all__ = [
    "parse_args",
    "TestCurve",
    "mean_sd",
    "table",
    "claim",
    "new_figure",
    "save_figure",
    "tail_mean",
    "steps_to",
    "band",
    "smooth",
    "wall",
    "image_parser",
    "image_setup",
    "seed_mean",
    "paper_table",
    "angle_axes",
]


def parse_args(
    script: str,
    description: str,
    default_seeds: int,
    argv: Sequence[str] | None = None,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
    check: Callable[[argparse.Namespace], str | None] | None = None,
) -> argparse.Namespace:
    """``--out DIR`` (default ``runs/<script>``), ``--quick``, ``--seeds N``; makes ``out``.

    ``extra(parser)`` adds a script's own options; ``check(args)`` returns an error message
    for bad values (reported like argparse's own errors) or None."""
    p = argparse.ArgumentParser(
        prog=f"{script}.py",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("runs") / script,
        help="folder for the recordings (.h5), the figure (.png) and curves (default: %(default)s)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a tiny budget that finishes in seconds (for tests; too short to test the claims)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        default=None,
        help=f"number of repetitions (seeds 0..N-1; default {default_seeds}, 1 with --quick)",
    )
    if extra is not None:
        extra(p)
    args = p.parse_args(argv)
    if args.seeds is None:
        args.seeds = 1 if args.quick else default_seeds
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    if check is not None and (msg := check(args)):
        p.error(msg)
    args.out.mkdir(parents=True, exist_ok=True)
    # These circuits are tiny: intra-op threads only add overhead, and on a busy machine
    # OpenMP threads spinning for a core make each step many times slower.
    torch.set_num_threads(1)
    args.t0 = time.perf_counter()
    return args


class TestCurve:
    """An ``on_step`` callback for :func:`bioprop.train`: the test-set normalized squared
    error every ``every`` steps (``run.history`` has one point per epoch only, and these
    experiments are single-pass, online learning)."""

    __test__ = False  # not a pytest class

    def __init__(self, circuit: bp.Circuit, data: bp.data.Dataset, every: int, loss="mse"):
        self.circuit, self.data, self.every = circuit, data, every
        self.loss = bp.losses.get(loss)
        self.steps: list[int] = [0]
        self.nse: list[float] = [self._nse()]

    def _nse(self) -> float:
        return bp.evaluate(self.circuit, self.data.x_test, self.data.y_test, self.loss)["nse"]

    def __call__(self, step: int, signals) -> None:
        if (step + 1) % self.every == 0:  # called after the update of step `step`
            self.steps.append(step + 1)
            self.nse.append(self._nse())

    def to_xarray(self, **coords) -> xr.DataArray:
        """The curve as a DataArray over ``step``, with scalar coords (rule, seed, ...)."""
        return xr.DataArray(
            np.array(self.nse),
            dims="step",
            coords={"step": self.steps, **coords},
            name="test_nse",
            attrs={"long_name": "normalized squared error on the test set"},
        )


def tail_mean(a: xr.DataArray, frac: float = 0.2) -> float:
    """Mean over the last ``frac`` of the ``step`` records (NaN skipped)."""
    n = a.sizes["step"]
    k = max(1, int(round(n * frac)))
    return float(a.isel(step=slice(n - k, n)).mean(skipna=True))


def steps_to(curve: xr.DataArray, level: float) -> float:
    """First step at which a learning curve falls below ``level`` (inf if never)."""
    below = np.nonzero(curve.values < level)[0]
    return float(curve["step"].values[below[0]]) if below.size else math.inf


def mean_sd(values: Sequence[float], fmt: str = ".3g") -> str:
    """``mean ± sd`` over seeds (just the value for one seed)."""
    vals = [float(v) for v in values]
    if any(math.isinf(v) for v in vals):
        return f"{sum(math.isinf(v) for v in vals)}/{len(vals)} never"
    m = statistics.fmean(vals)
    if len(vals) < 2:
        return format(m, fmt)
    return f"{format(m, fmt)} ± {format(statistics.stdev(vals), fmt)}"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table with aligned columns."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def claim(statement: str, measured: str, holds: bool, quick: bool, source: str = "paper") -> str:
    """A claim (the paper's, or e.g. ``source="control (ours)"``), our measurement, and
    whether the measurement supports it."""
    if quick:
        verdict = "not tested (--quick budget)"
    else:
        verdict = "HOLDS" if holds else "DOES NOT HOLD"
    return f"- {source}: {statement}\n  measured: {measured}\n  -> {verdict}"


def new_figure(ncols: int, nrows: int = 1, width: float = 4.6, height: float = 3.6):
    """A matplotlib Figure (Agg, no pyplot) and its axes."""
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def save_figure(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=120)
    return path


def band(ax, x, y: np.ndarray, label: str, log: bool = False, **kw) -> None:
    """Plot the mean over seeds (axis 0) with a ±sd band (geometric for log axes)."""
    y = np.asarray(y, dtype=float)
    if log:
        ly = np.log10(np.clip(y, 1e-16, None))
        m, s = ly.mean(0), ly.std(0)
        mid, lo, hi = 10**m, 10 ** (m - s), 10 ** (m + s)
    else:
        mid, sd = np.nanmean(y, 0), np.nanstd(y, 0)
        lo, hi = mid - sd, mid + sd
    (line,) = ax.plot(x, mid, label=label, **kw)
    if y.shape[0] > 1:
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)


def smooth(a: xr.DataArray, window: int) -> xr.DataArray:
    """Running mean over ``window`` records along ``step`` (single-example angles are noisy)."""
    if window <= 1:
        return a
    return a.rolling(step=window, center=True, min_periods=1).mean()


def wall(args) -> str:
    return f"{time.perf_counter() - args.t0:.1f} s"


# -- image-classification comparisons (lillicrap_mnist, bartunov_fc) -------------------------
def image_parser(
    script: str, doc: str, rules: str, epochs: int, workers: bool = True
) -> argparse.ArgumentParser:
    """The shared options of the image-classification scripts; add script-specific ones.
    ``workers``: offer ``--workers`` (scripts whose runs go through :func:`compare`)."""
    p = argparse.ArgumentParser(
        prog=f"{script}.py",
        description=doc.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", default="fashion-mnist", choices=["fashion-mnist", "mnist"])
    p.add_argument("--rules", default=rules, help="comma-separated (default %(default)s)")
    p.add_argument("--seeds", type=int, default=None, help="default 3 (1 with --quick)")
    p.add_argument("--epochs", type=int, default=epochs, help="default %(default)s")
    p.add_argument("--out", type=Path, default=None, help=f"default runs/{script}-DATASET")
    p.add_argument("--quick", action="store_true", help="2000 samples, a few dozen steps")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--overwrite", action="store_true", help="replace recordings in --out")
    if workers:
        p.add_argument(
            "--workers",
            type=int,
            default=1,
            help="run the rules × seeds on this many single-threaded worker processes "
            "(a local dask cluster; default 1: one after another in this process)",
        )
    p.add_argument(
        "--validation",
        action="store_true",
        help="for tuning: the last 10 000 training images stand in for the test set",
    )
    p.add_argument(
        "--results",
        type=Path,
        default=ROOT / "data" / "results",
        help="folder for the results JSON/PNG of a full run (default data/results)",
    )
    return p


def image_setup(args: argparse.Namespace, script: str) -> tuple[Path, list[str]]:
    """Seeds and threads defaults; returns (output folder, rule names)."""
    if args.seeds is None:
        args.seeds = 1 if args.quick else 3
    if args.seeds < 1:
        raise SystemExit("--seeds must be at least 1")
    if getattr(args, "workers", 1) < 1:
        raise SystemExit(f"--workers must be at least 1, got {args.workers}")
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or Path("runs") / f"{script}-{args.dataset}"
    return out, [r.strip() for r in args.rules.split(",") if r.strip()]


def seed_mean(
    out: Path, rule: str, seeds: int, measure: Callable[[xr.DataTree], xr.DataArray]
) -> xr.DataArray:
    """Mean over seeds of ``measure(recording)`` (a DataArray over ``step``, e.g.
    ``lambda r: bp.analysis.update_angle(r, "hidden")``) of the recordings
    ``out/<rule>-seed<s>.h5`` that :func:`bioprop.compare` wrote."""
    parts = []
    for s in range(seeds):
        rec = bp.load(out / f"{rule}-seed{s}.h5")
        try:
            parts.append(measure(rec).load())
        finally:
            rec.close()
    return xr.concat(parts, "seed").mean("seed")


def paper_table(ds: xr.Dataset, rules: Sequence[str], paper: dict, dataset: str) -> str:
    """Test error %: the paper's (MNIST) beside ours (mean ± sd over seeds)."""
    rows = []
    for rule in rules:
        err = ds.test_error.sel(rule=rule).values * 100
        ours = f"{np.nanmean(err):.2f} ± {np.nanstd(err):.2f}" if np.isfinite(err).any() else "—"
        rows.append([rule, f"{paper[rule]:g}" if rule in paper else "—", ours])
    return table(["rule", "paper, MNIST test error %", f"ours, {dataset} test error %"], rows)


def angle_axes(ax, title: str) -> None:
    """Title, labels, the 90° line and a legend for an angle-over-training panel."""
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel("degrees")
    ax.axhline(90, color="0.7", lw=0.8, ls="--")
    ax.legend(fontsize=8)


def synthetic_gradient_axes(ax, interface: str, title: str) -> None:
    """Labels, the 90° line, limits and legend of a ∠(ĝ, true gradient)-over-training panel."""
    ax.axhline(90, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="step", ylabel=f"∠(ĝ, ∂ℓ/∂{interface}) (degrees)", title=title, ylim=(0, 120))


def validation(ds: bp.data.Dataset, quick: bool) -> bp.data.Dataset:
    """``--validation``: the last 10 000 training images (500 with ``--quick``) stand in for
    the test set."""
    return ds.validation_split(500 if quick else 10_000)


def compare(task, rules: Sequence[str], args: argparse.Namespace, out: Path):
    """``bioprop.compare`` of ``rules`` on ``task`` with the image scripts' options (seeds,
    quick budget, overwrite; a quick run always overwrites), its table printed."""
    ds = bp.compare(
        task,
        rules=list(rules),
        seeds=args.seeds,
        out=out,
        quick=args.quick,
        overwrite=args.overwrite or args.quick,
        progress=False,
        workers=args.workers,
    )
    print(bp.compare_table(ds))
    return ds


def relu_task(
    name: str,
    description: str,
    data,
    sizes: Sequence[int],
    lr: float,
    epochs: int,
    max_steps: int,
    batch_size: int,
    **options,
):
    """A fixed-data task of a ReLU net with a linear read-out into softmax cross-entropy,
    Kaiming-uniform weights and Adam at ``lr`` (the synthetic-gradient scripts' setting); the
    quick budget keeps the epochs and stops after ``max_steps``.  ``options``: further
    :class:`bioprop.tasks.Task` fields (rule options and optimizers, reference)."""
    return bp.tasks.Task(
        name,
        description,
        lambda seed, quick: data,
        list(sizes),
        activation="relu",
        output_activation="linear",
        init=bp.init.kaiming_uniform(math.sqrt(2.0)),
        loss="cross-entropy",
        optimizer=("adam", {"lr": lr}),
        epochs=epochs,
        quick_epochs=epochs,
        quick_max_steps=max_steps,
        batch_size=batch_size,
        **options,
    )
