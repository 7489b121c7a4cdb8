"""Compare rules against backprop: every rule × seed on the same circuit, weights and data.

For each seed one circuit is built (the task's architecture, initial weights
drawn from that seed) and deep-copied for every rule, and every run uses the
same seeded data order.  Each run writes a recording; the comparison writes
``summary.nc`` (variables over ``(rule, seed)``) and ``report.png``.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from bioprop import analysis
from bioprop.experiments import tasks as _tasks
from bioprop.recording.files import atomic_write
from bioprop.recording.load import load
from bioprop.recording.writer import Record
from bioprop.training.run import DivergenceError
from bioprop.training.train import check_device, train

__all__ = ["compare", "check_output_dir", "format_table", "plot_report"]

FINAL_WINDOW = 5  # records averaged for the final angle to bp
DEFAULT_RULES = ("bp", "fa", "dfa", "sign-symmetry", "shallow", "node-perturbation")


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse an output directory that cannot be written or already holds results."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {out} exists and is not a directory; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"cannot create output directory {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(f"output directory {out} is not writable; choose another --out")
    existing = sorted(p.name for p in out.iterdir() if p.suffix in (".h5", ".nc"))
    if existing and not overwrite:
        shown = ", ".join(existing[:4]) + (" ..." if len(existing) > 4 else "")
        raise FileExistsError(
            f"output directory {out} already holds recordings ({shown}); pass --overwrite to "
            "replace them or choose another --out"
        )
    if overwrite:
        for name in existing:
            (out / name).unlink()


def _final_angle(path: Path, population: str | None) -> float:
    """Mean over the last records that carry one (a spiking run's test presentations
    carry none) of the angle to the family's exact reference."""
    with load(path) as rec:
        vals = analysis.reference_angle(rec, population).values
    vals = vals[np.isfinite(vals)][-FINAL_WINDOW:]
    return float(vals.mean()) if vals.size else math.nan


def _probe(circuit) -> str | None:
    """The population whose teaching signal compare's angle reads: the last hidden one of
    layered and settling circuits (None elsewhere: the whole update is compared)."""
    if circuit.kind not in ("layered", "settling"):
        return None
    hidden = circuit.hidden()
    return hidden[-1] if hidden else None


def compare(
    task: str | _tasks.Task = "linear",
    rules: Sequence[str] | None = None,
    seeds: int = 3,
    epochs: int | None = None,
    out: str | os.PathLike | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    quick: bool = False,
    progress: bool = True,
) -> xr.Dataset:
    """Train every rule × seed of ``task`` and summarise.

    Each rule runs on the circuit kind it needs (``task.kind_for(rule)``: a layered
    circuit for bp/fa, a settling one for ep, a recurrent one for bptt/dni on sequence
    tasks, a spiking one for spiking-fa), built from the task's architecture with the same
    seed; a rule the task cannot build a circuit for is refused before any training.

    Returns the summary ``xarray.Dataset`` (also written to ``out/summary.nc``):
    ``final_loss`` (normalized squared error for regression, test loss otherwise),
    ``test_error`` (NaN where the task has none), ``angle_to_bp`` (degrees: the angle to
    the rule's family reference — ∠(δ_rule, δ_BP) at the last hidden population of layered
    and settling circuits, the whole update's angle elsewhere — mean of the last records;
    NaN for bp), ``wall_time`` (s), over dims ``(rule, seed)``, plus ``kind``.
    """
    t = _tasks.get(task)
    task = t.name
    rules = list(rules) if rules is not None else list(t.default_rules or DEFAULT_RULES)
    if not rules or any(not r for r in rules):
        raise ValueError(f"rules must be non-empty rule names, got {rules}")
    if len(set(rules)) != len(rules):
        raise ValueError(f"rules listed twice: {rules}")
    kinds = {r: t.kind_for(r) for r in rules}  # refuses a rule/task mismatch, naming tasks
    for r in rules:
        t.rule(r, kinds[r])  # raises for a bad option
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
    check_device(device)
    out = Path(out) if out is not None else Path("runs") / f"compare-{task}"
    check_output_dir(out, overwrite)

    shape = (len(rules), seeds)
    res = {k: np.full(shape, np.nan) for k in ("final_loss", "test_error", "angle_to_bp")}
    res["wall_time"] = np.full(shape, np.nan)
    res["steps"] = np.zeros(shape, dtype=np.int64)
    diverged = []
    curves: dict[str, list[Path]] = {r: [] for r in rules}
    probes: dict[str, str | None] = {}
    n_ep = None
    for s in range(seeds):
        data = t.load(s, quick)
        bases: dict[str, object] = {}
        for i, r in enumerate(rules):
            kind = kinds[r]
            if kind not in bases:
                bases[kind] = t.circuit(s, kind)
            circuit = copy.deepcopy(bases[kind])
            probes[r] = _probe(circuit)
            rule = t.rule(r, kind)
            options = t.train_options(kind, r, quick)
            if epochs is not None and "epochs" in options:
                options["epochs"] = epochs
            n_ep = options.get("epochs", n_ep)
            path = out / f"{r}-seed{s}.h5"
            every = t.record_every if not quick else 20
            rec = Record(path, every=every, evaluate=t.evaluate_on_record)
            t0 = time.perf_counter()
            try:
                run = train(
                    circuit,
                    rule,
                    data,
                    seed=s,
                    record=rec,
                    device=device,
                    progress=progress,
                    **options,
                )
            except DivergenceError as exc:
                diverged.append(f"{r} seed {s}: {exc}")
                res["wall_time"][i, s] = time.perf_counter() - t0
                continue
            res["wall_time"][i, s] = time.perf_counter() - t0
            res["steps"][i, s] = run.steps
            res["final_loss"][i, s] = run.final_loss
            res["test_error"][i, s] = run.test_error
            if not rule.is_reference:
                res["angle_to_bp"][i, s] = _final_angle(path, probes[r])
            curves[r].append(path)
    coords = {"rule": rules, "seed": np.arange(seeds)}
    ds = xr.Dataset({k: (("rule", "seed"), v) for k, v in res.items()}, coords=coords)
    ds["kind"] = ("rule", [kinds[r] for r in rules])
    ds["final_loss"].attrs["long_name"] = (
        "test normalized squared error"
        if t.loss == "mse" and "mnist" not in task and t.layered
        else "final test loss"
    )
    ds["test_error"].attrs.update(long_name="test error rate", units="1")
    ds["angle_to_bp"].attrs.update(
        long_name="angle between the rule's learning and its family's exact reference "
        f"(δ at the last hidden population, else the whole update), mean of the last "
        f"{FINAL_WINDOW} records",
        units="degree",
    )
    ds["wall_time"].attrs["units"] = "s"
    ds.attrs.update(
        task=task,
        epochs=n_ep if n_ep is not None else -1,
        quick=int(quick),
        device=device,
        diverged="\n".join(diverged),
        reference=t.reference,
    )
    atomic_write(out / "summary.nc", lambda p: ds.to_netcdf(p, engine="h5netcdf"))
    atomic_write(out / "report.png", lambda p: plot_report(ds, curves, p, probes))
    return ds


def plot_report(
    ds: xr.Dataset, curves: dict[str, list[Path]], path: Path, probes: dict[str, str | None]
) -> None:
    """Learning curves (test metric or batch loss over steps) and angles to the reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(11, 4))
    colors = {r: f"C{i}" for i, r in enumerate(ds.rule.values)}
    for rule, paths in curves.items():
        losses, angles = [], []
        for p in paths:
            with load(p) as rec:
                if "metrics" in rec.children:
                    m = rec["metrics"].to_dataset()
                    names = [v for v in ("test_nse", "test_error", "loss") if v in m]
                    filled = [v for v in names if m[v].notnull().any()]
                    if filled or names:
                        losses.append(m[(filled or names)[0]].load())
                if rule != "bp":
                    angles.append(analysis.reference_angle(rec, probes.get(rule)).load())
        if losses:
            c = xr.concat(losses, "seed", join="inner")
            ax_l.plot(c.step, c.mean("seed"), label=rule, color=colors[rule])
            ax_l.set_ylabel(c.name)
        if angles and all(a.sizes.get("step", 0) for a in angles):
            a = xr.concat(angles, "seed", join="inner")
            if a.notnull().any():
                ax_a.plot(a.step, a.mean("seed"), label=rule, color=colors[rule])
    ax_l.set_yscale("log")
    ax_l.set_xlabel("step")
    ax_l.set_title(f"{ds.attrs['task']}: learning curves (mean over seeds)")
    ax_l.legend(fontsize=8)
    ax_a.set_xlabel("step")
    ax_a.set_ylabel("degrees")
    ax_a.axhline(90, color="0.7", lw=0.8, ls="--")
    ax_a.set_title("angle to the family's exact reference")
    ax_a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def _fmt(mean: float, sd: float, spec: str) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:{spec}} ± {sd:{spec}}"


def _cell(values: np.ndarray, spec: str, missing: str = "—") -> str:
    if not np.isfinite(values).any():
        return missing
    return _fmt(float(np.nanmean(values)), float(np.nanstd(values)), spec)


def format_table(ds: xr.Dataset) -> str:
    """The summary as a plain-text table (mean ± sd over seeds)."""
    err = ds.test_error.notnull().any()
    head = f"{'rule':<18} {'final loss':>22} " + (f"{'test error %':>16} " if err else "")
    head += f"{'angle to bp (°)':>16} {'wall (s)':>9}"
    lines = [
        f"task {ds.attrs['task']}, {ds.sizes['seed']} seed(s), {ds.attrs['epochs']} epoch(s)",
        head,
        "-" * len(head),
    ]
    for rule in ds.rule.values:
        d = ds.sel(rule=rule)
        row = f"{rule:<18} {_cell(d.final_loss.values, '.3g', 'diverged'):>22} "
        if err:
            row += f"{_cell(d.test_error.values * 100, '.2f'):>16} "
        row += f"{_cell(d.angle_to_bp.values, '.1f'):>16} "
        row += f"{np.nanmean(d.wall_time.values):>9.1f}"
        lines.append(row)
    if ds.attrs.get("diverged"):
        lines.append("diverged runs:\n" + ds.attrs["diverged"])
    return "\n".join(lines)
