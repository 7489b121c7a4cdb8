"""Compare rules against backprop: every rule × seed on the same circuit, weights and data.

For each seed every rule's circuit is built from the task's architecture with initial
weights drawn from that seed (the same weights for every rule), and every run uses the same
seeded data order.  Each run writes a recording; the comparison writes ``summary.nc``
(variables over ``(rule, seed)``) and ``report.png``.  It is a sweep with no options, run in
this process (:func:`bioprop.experiments.sweep.execute`): ``bioprop sweep`` runs the same
runs on a dask cluster and adds options to vary.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from bioprop import analysis
from bioprop.experiments import tasks as _tasks
from bioprop.experiments.spec import SweepSpec
from bioprop.experiments.sweep import execute
from bioprop.recording.load import load
from bioprop.training.train import check_device

__all__ = ["compare", "check_output_dir", "format_table", "plot_report"]

DEFAULT_RULES = ("bp", "fa", "dfa", "sign-symmetry", "shallow", "node-perturbation")


def check_output_dir(out: Path, overwrite: bool) -> None:
    """Refuse an output directory that cannot be written or already holds results.

    With ``overwrite`` the recordings and summaries there are removed — only files bioprop
    wrote (known by their ``Conventions`` attribute); if the folder also holds other
    ``.h5``/``.nc`` files, or a recording another process is writing, nothing is removed
    and the error names them."""
    from bioprop.recording.lock import WriterLock, written_by_bioprop

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output path {out} exists and is not a directory; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"cannot create output directory {out}: {exc.strerror}") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise PermissionError(f"output directory {out} is not writable; choose another --out")
    existing = sorted(p.name for p in out.iterdir() if p.suffix in (".h5", ".nc") and p.is_file())
    if existing and not overwrite:
        shown = ", ".join(existing[:4]) + (" ..." if len(existing) > 4 else "")
        raise FileExistsError(
            f"output directory {out} already holds recordings ({shown}); pass --overwrite to "
            "replace them or choose another --out"
        )
    if overwrite and existing:
        foreign = [n for n in existing if not written_by_bioprop(out / n)]
        if foreign:
            shown = ", ".join(foreign[:4]) + (" ..." if len(foreign) > 4 else "")
            raise FileExistsError(
                f"--overwrite removes only files bioprop wrote, but {out} also holds {shown}; "
                "move them away or choose another --out (nothing was removed)"
            )
        locks = [WriterLock(out / n) for n in existing]
        try:
            for lock in locks:  # refuses, naming it, a recording another process writes
                lock.acquire()
            for name in existing:
                (out / name).unlink()
        finally:
            for lock in locks:
                lock.release()


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
    workers: int | None = None,
) -> xr.Dataset:
    """Train every rule × seed of ``task`` and summarise.

    The runs go one after another in this process, or, with ``workers`` > 1, on a local
    dask cluster of that many single-threaded worker processes (the same results: each
    run's weights and data order depend on its seed only).

    Each rule runs on the circuit kind it needs (``task.kind_for(rule)``: a layered
    circuit for bp/fa, a settling one for ep, a recurrent one for bptt/dni on sequence
    tasks, a spiking one for spiking-fa), built from the task's architecture with the same
    seed; a rule the task cannot build a circuit for is refused before any training.

    Returns the summary ``xarray.Dataset`` (also written to ``out/summary.nc``):
    ``final_loss`` (normalized squared error for regression, test loss otherwise),
    ``test_error`` (NaN where the task has none), ``angle_to_bp`` (degrees: the angle to
    the rule's family reference — ∠(δ_rule, δ_BP) at the last hidden population of layered
    and settling circuits, the whole update's angle elsewhere — mean of the last records;
    NaN for bp), ``wall_time`` (s), ``steps``, ``status`` (``ok`` or ``failed``),
    ``error`` (a failed run's message: a run that raises, e.g. diverges, does not stop the
    others) and ``resumed_from``, over dims ``(rule, seed)``, plus ``kind`` over ``rule``;
    ``test_error_by_epoch`` and ``loss_by_epoch`` over ``(rule, seed, epoch)``: the
    evaluation after every epoch (NaN where a run has none).
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
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    out = Path(out) if out is not None else Path("runs") / f"compare-{task}"
    spec = SweepSpec(
        task=t, rules=rules, seeds=list(range(seeds)), epochs=epochs, quick=quick, device=device
    ).validate()
    parallel = workers is not None and workers > 1
    return execute(
        spec,
        out,
        None if parallel else "serial",
        workers=workers if parallel else None,
        overwrite=overwrite,
        progress=progress,
        say=lambda s: None,
        resumable=False,
    )


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
        row = f"{rule:<18} {_cell(d.final_loss.values, '.3g', 'failed'):>22} "
        if err:
            row += f"{_cell(d.test_error.values * 100, '.2f'):>16} "
        row += f"{_cell(d.angle_to_bp.values, '.1f'):>16} "
        row += f"{np.nanmean(d.wall_time.values):>9.1f}"
        lines.append(row)
    if ds.attrs.get("diverged"):
        lines.append("diverged runs:\n" + ds.attrs["diverged"])
    other = [
        f
        for f in ds.attrs.get("failed", "").splitlines()
        if f and f not in ds.attrs.get("diverged", "")
    ]
    if other:
        lines.append("failed runs:\n" + "\n".join(other))
    return "\n".join(lines)
