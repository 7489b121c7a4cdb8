"""Sweeps: rules × seeds × options on a laptop, a workstation or a cluster, resumable.

``bioprop sweep SPEC`` (or :func:`sweep`) reads a spec (:mod:`bioprop.experiments.spec`),
plans its runs (:mod:`bioprop.experiments.runs`: one per rule × seed × the options that
apply to the rule), runs each as one dask task (:mod:`bioprop.experiments.cluster`: a
``LocalCluster`` by default, any scheduler address for a cluster), and combines the per-run
rows lazily into ``OUT/summary.nc`` (:mod:`bioprop.experiments.summary`) with a report
figure.  ``bioprop compare`` is the same machinery with no options, run in this process.

The output folder holds::

    sweep.json              the spec's identity (what --resume must match)
    <run id>.h5             one recording per run
    rows/<run id>.nc        one summary row per run (written when the run finishes)
    checkpoints/<run id>.pt the state of unfinished runs (removed when they finish)
    summary.nc, report.png  the combined summary and its figure
    .bioprop-sweep.lock     while a sweep writes here

``--resume`` skips every run with a row and finishes the rest (from their checkpoints);
two sweeps cannot write into one folder at once.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import xarray as xr

from bioprop.experiments.runs import FINAL_WINDOW, RunConfig, plan, row_path
from bioprop.experiments.spec import SpecError, SweepSpec, load_spec, parse_value
from bioprop.experiments.summary import cells, failures, finish_summary, format_sweep_table
from bioprop.recording.files import atomic_write
from bioprop.recording.lock import FileLock

__all__ = ["sweep", "execute", "sweep_table", "format_sweep_table", "parse_grid_flag", "SpecError"]


def parse_grid_flag(text: str) -> tuple[str, list[Any]]:
    """``"optimizer.lr=0.05,0.1"`` → ``("optimizer.lr", [0.05, 0.1])`` (commas inside
    parentheses do not split: ``"x=normal(0.1),kaiming_uniform(2)"``)."""
    key, sep, values = text.partition("=")
    if not sep or not key.strip() or not values.strip():
        raise SpecError(
            f"--grid {text!r}: write --grid OPTION=VALUE[,VALUE...], e.g. optimizer.lr=0.05,0.1"
        )
    parts, depth, cur = [], 0, ""
    for ch in values:
        depth += ch in "([" and 1 or (-1 if ch in ")]" else 0)
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return key.strip(), [parse_value(p) for p in parts if p.strip()]


def sweep(
    spec: SweepSpec | str | os.PathLike | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_result: Callable[[RunConfig, dict], None] | None = None,
    say: Callable[[str], None] = print,
    flags: set[str] | None = None,
    **overrides: Any,
) -> xr.Dataset:
    """Run a sweep and return its summary (also written to ``OUT/summary.nc``).

    Parameters
    ----------
    spec
        A :class:`SweepSpec`, the path of a TOML spec, or None (everything from
        ``overrides``).
    resume
        Finish the sweep already in ``out``: runs with a row are skipped, unfinished ones
        continue from their checkpoints.  The spec must match the one it started with.
    overwrite
        Replace what ``out`` holds.
    on_result
        Called with ``(config, row)`` as each run finishes.
    flags
        The overrides given as command-line flags (``"rules"``, ``"grid:optimizer.lr"``):
        errors in them name the flag instead of the spec's line.
    **overrides
        Spec fields set here win over the file's: ``task``, ``rules``, ``seeds``, ``grid``
        (``{option: [values]}``, merged into the file's), ``points``, ``epochs``, ``quick``,
        ``device``, ``out``, ``scheduler`` (``"serial"``, ``"local"``, an address, a Client
        or a cluster), ``workers``, ``checkpoint_every``.

    Returns
    -------
    xarray.Dataset
        ``final_loss``, ``test_error``, ``angle_to_bp``, ``wall_time``, ``steps``,
        ``status`` and ``error`` (a failed run's message), ``resumed_from`` over
        ``(rule, seed, *options)`` (``point`` for a list), and ``kind`` over ``rule``.
    """
    if spec is None:
        spec = SweepSpec()
    elif not isinstance(spec, SweepSpec):
        spec = load_spec(spec)
    grid = overrides.pop("grid", None)
    for flag in flags or ():
        name = flag.split(":", 1)[-1]
        spec.where[name] = f"--grid {name}" if flag.startswith("grid:") else f"--{name}"
    if grid:
        spec.grid = {**spec.grid, **{k: v if isinstance(v, list) else [v] for k, v in grid.items()}}
    for key, value in overrides.items():
        if key not in SweepSpec.__dataclass_fields__ or key in ("source", "where"):
            raise TypeError(f"sweep() got an unexpected option {key!r}")
        if value is not None:
            setattr(spec, key, value)
    spec.validate(local=spec.scheduler in (None, "local", "serial"))
    out = spec.out or str(Path("runs") / f"sweep-{spec.task_obj().name}")
    scheduler = spec.scheduler
    return execute(spec, out, scheduler, spec.workers, resume, overwrite, progress, on_result, say)


def execute(
    spec: SweepSpec,
    out: str | os.PathLike,
    scheduler: Any = None,
    workers: int | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_result: Callable[[RunConfig, dict], None] | None = None,
    say: Callable[[str], None] = print,
    resumable: bool = True,
) -> xr.Dataset:
    """Run a validated spec into ``out`` (shared by :func:`sweep` and ``bioprop compare``)."""
    from tqdm import tqdm

    from bioprop.experiments.cluster import run_all

    out = Path(out)
    lock = _prepare_output(out, spec, resume, overwrite, resumable)
    try:
        configs = plan(spec, out, session=secrets.token_hex(4))
        serial = scheduler == "serial"
        for c in configs:
            c.progress = progress and serial
        todo = [c for c in configs if not row_path(out, c.run_id).exists()]
        if resume:
            say(
                f"resuming {out}: {len(configs) - len(todo)} of {len(configs)} runs done, "
                f"{len(todo)} to run"
            )
        bar = tqdm(
            total=len(configs),
            initial=len(configs) - len(todo),
            disable=not progress or serial,
            desc="sweep",
            unit="run",
        )
        failed = []

        def done(c: RunConfig, row: dict) -> None:
            bar.update(1)
            if row["status"] == "failed":
                failed.append(c.run_id)
                bar.set_postfix(failed=len(failed))
            if on_result is not None:
                on_result(c, row)

        t0 = time.perf_counter()
        try:
            run_all(todo, scheduler, workers, done, say)
        except KeyboardInterrupt:
            bar.close()
            n = sum(row_path(out, c.run_id).exists() for c in configs)
            say(
                f"interrupted: {n} of {len(configs)} runs finished in {out}; the same "
                "command with --resume finishes the rest"
            )
            raise
        finally:
            bar.close()
        ds = _summary(spec, out, configs)
        ds.attrs.update(wall_time=time.perf_counter() - t0, runs_now=len(todo))
        atomic_write(out / "summary.nc", lambda p: ds.to_netcdf(p, engine="h5netcdf"))
        atomic_write(out / "report.png", lambda p: _report(ds, out, configs, p))
        return ds
    finally:
        lock.release()


def _prepare_output(
    out: Path, spec: SweepSpec, resume: bool, overwrite: bool, resumable: bool
) -> FileLock:
    """Take the folder's lock; check ``--resume`` against the stored spec, or refuse a
    folder holding results (unless ``overwrite``: then clear it) and store the spec."""
    from bioprop.experiments.compare import check_output_dir

    stored = out / "sweep.json"
    if resume and overwrite:
        raise ValueError(
            "--resume finishes the sweep in the folder, --overwrite replaces it: pass one"
        )
    if resume and not stored.exists():
        raise FileNotFoundError(
            f"nothing to resume in {out}: it holds no sweep.json; run without --resume"
        )
    if not out.is_dir():
        check_output_dir(out, False)  # creates it, or says why it cannot
    lock = FileLock(out / ".bioprop-sweep.lock", f"output folder {out}")
    lock.acquire()
    try:
        identity = spec.identity()
        if resume:
            old = json.loads(stored.read_text())["identity"]
            diff = [k for k in identity if old.get(k) != json.loads(json.dumps(identity[k]))]
            if diff:
                shown = "; ".join(f"{k}: {old.get(k)!r} then, {identity[k]!r} now" for k in diff)
                raise ValueError(
                    f"the sweep in {out} was started with another spec ({shown}); resume with "
                    "the same spec, or choose another --out"
                )
        else:
            if stored.exists() and not overwrite:
                hint = "--resume to finish it, " if resumable else ""
                raise FileExistsError(
                    f"output directory {out} already holds a sweep (sweep.json); pass {hint}"
                    "--overwrite to replace it, or choose another --out"
                )
            check_output_dir(out, overwrite)
            if overwrite:
                for sub in ("rows", "checkpoints"):
                    shutil.rmtree(out / sub, ignore_errors=True)
                stored.unlink(missing_ok=True)
            record = {
                "identity": identity,
                "source": spec.source,
                "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
            atomic_write(stored, lambda p: p.write_text(json.dumps(record, indent=1) + "\n"))
    except BaseException:
        lock.release()
        raise
    return lock


def _summary(spec: SweepSpec, out: Path, configs: list[RunConfig]) -> xr.Dataset:
    t = spec.task_obj()
    kinds = {r: t.kind_for(r) for r in spec.rules}
    n_ep = None
    for r in spec.rules:
        opts = t.train_options(kinds[r], r, spec.quick)
        if spec.epochs is not None and "epochs" in opts:
            opts["epochs"] = spec.epochs
        n_ep = opts.get("epochs", n_ep)
    axes = {"point": list(range(len(spec.points)))} if spec.points else dict(spec.grid)
    points = {k: [p[k] for p in spec.points] for k in spec.options} if spec.points else None
    ds = finish_summary(
        out,
        list(spec.rules),
        list(spec.seeds),
        axes,
        kinds,
        {"task": t.name, "epochs": n_ep if n_ep is not None else -1},
        points,
    )
    failed = failures(ds)
    on = "validation" if spec.validation else "test"
    ds["final_loss"].attrs["long_name"] = (
        f"{on} normalized squared error"
        if t.loss == "mse" and "mnist" not in t.name and t.layered
        else f"final {on} loss"
    )
    ds["test_error"].attrs.update(long_name=f"{on} error rate", units="1")
    ds["angle_to_bp"].attrs.update(
        long_name="angle between the rule's learning and its family's exact reference "
        f"(δ at the last hidden population, else the whole update), mean of the last "
        f"{FINAL_WINDOW} records",
        units="degree",
    )
    ds.attrs.update(
        Conventions="bioprop-summary-1",
        quick=int(spec.quick),
        device=spec.device,
        diverged="\n".join(f for f in failed if ": training diverged" in f),
        failed="\n".join(failed),
        reference=t.reference,
        options=json.dumps(spec.options),
        runs=len(configs),
        out=str(out),
        evaluated_on=(
            f"validation: {spec.validation:g} of each run's training set held out"
            if spec.validation
            else "test set"
        ),
    )
    return ds


def _report(ds: xr.Dataset, out: Path, configs: list[RunConfig], path: Path) -> None:
    """compare's figure (learning curves, angles) without options; else the sweep's."""
    from bioprop.experiments.runs import read_row

    dims = [d for d in ds.final_loss.dims if d not in ("rule", "seed")]
    if dims:
        from bioprop.experiments.sweep_report import plot_sweep

        plot_sweep(ds, path)
        return
    from bioprop.experiments.compare import plot_report

    curves: dict[str, list[Path]] = {r: [] for r in ds.rule.values}
    probes: dict[str, str | None] = {}
    for c in configs:
        rp = row_path(out, c.run_id)
        if not rp.exists():
            continue
        row = read_row(rp)
        probes.setdefault(c.rule, row.get("probe") or None)
        if row["status"] == "ok":
            curves[c.rule].append(c.recording)
    plot_report(ds, curves, path, probes)


def sweep_table(ds: xr.Dataset) -> str:
    """The table ``bioprop sweep`` prints (compare's without options)."""
    dims = [d for d in ds.final_loss.dims if d not in ("rule", "seed")]
    if not dims:
        from bioprop.experiments.compare import format_table

        return format_table(ds)
    return format_sweep_table(ds)


def cell_results(ds: xr.Dataset) -> list[dict[str, Any]]:
    """One entry per rule × option cell (once per run, see
    :func:`bioprop.experiments.summary.cells`): its options, and mean, sd and n over the
    seeds whose run finished, and how many failed."""
    import numpy as np

    rows = []
    for rule, coords, d in cells(ds):
        row: dict[str, Any] = {"rule": rule, **{k: v for k, v in coords.items() if v is not None}}
        if "point" in coords:  # the options of the point
            row.update({c: d[c].item() for c in d.coords if d[c].ndim == 0 and c != "rule"})
        for v in ("final_loss", "test_error", "angle_to_bp", "wall_time"):
            x = d[v].values[np.isfinite(d[v].values)]
            if x.size:
                row[v] = {"mean": float(x.mean()), "sd": float(x.std()), "n": int(x.size)}
        row["failed"] = int((d.status.values == "failed").sum())
        rows.append(row)
    return rows


def write_results(ds: xr.Dataset, prefix: str | os.PathLike, command: str) -> list[Path]:
    """``PREFIX.json`` (command, spec, seeds, budget, machine, every cell's mean ± sd) and
    ``PREFIX.png`` (the report figure) — what README tables are made from."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    out = Path(ds.attrs["out"])
    record = {
        "command": command,
        "spec": json.loads((out / "sweep.json").read_text())["identity"],
        "evaluated_on": ds.attrs.get("evaluated_on"),
        "epochs": int(ds.attrs.get("epochs", -1)),
        "steps_per_run": int(ds.steps.max()),
        "seeds": [int(s) for s in ds.seed.values],
        "runs": int(ds.attrs.get("runs", 0)),
        "sweep_wall_time_s": round(float(ds.attrs.get("wall_time", float("nan"))), 1),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
            "platform": platform.platform(),
        },
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cells": cell_results(ds),
        "failed": ds.attrs.get("failed", "").splitlines(),
    }
    paths = [prefix.with_suffix(".json"), prefix.with_suffix(".png")]
    atomic_write(paths[0], lambda p: p.write_text(json.dumps(record, indent=1) + "\n"))
    shutil.copyfile(out / "report.png", paths[1])
    return paths
