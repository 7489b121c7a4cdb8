"""One run of a sweep: a pure function ``RunConfig → recording + summary row``.

:func:`plan` turns a validated :class:`~bioprop.experiments.spec.SweepSpec` into runs: one
per rule × seed × the options that *apply* to the rule (an option of ``fa`` does not change
a ``bp`` run, so one bp run stands for every ``fa.*`` value; its row is repeated in each of
those summary cells).  :func:`execute_run` trains one run wherever it is called — in this
process or on a dask worker — and writes

* ``OUT/<run id>.h5``: the recording (:class:`bioprop.Record`),
* ``OUT/rows/<run id>.nc``: its summary row, over a ``cell`` dimension with the
  coordinates (``rule``, ``seed``, each option or ``point``) of every cell it stands for.

It is idempotent: a run whose row exists returns that row, so a task dask re-runs (its
worker died after finishing) changes nothing.  Batch-loop runs (layered and settling
circuits) save a :class:`bioprop.Checkpoint` every ``checkpoint_every`` steps and resume
from it, so a run retried after its worker was killed continues where it stopped.  A run
that raises (divergence, a bad option value) returns a row with ``status = "failed"`` and
the message; it never stops the others.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from bioprop.experiments import tasks as _tasks
from bioprop.experiments.spec import SweepSpec, optimizer_spec, resolve_value
from bioprop.recording.files import atomic_write
from bioprop.recording.lock import FileLock

__all__ = ["RunConfig", "plan", "execute_run", "failed_row", "ROW_VARIABLES", "row_path"]

FINAL_WINDOW = 5  # records averaged for the final angle to the reference
ROW_VARIABLES = (
    "final_loss",
    "test_error",
    "angle_to_bp",
    "wall_time",
    "steps",
    "status",
    "error",
    "resumed_from",
)
#: per-epoch curves in a row (over ``epoch``, 1..E; NaN past a run's last epoch): the
#: evaluation after each epoch, from ``Run.history`` (test set, or the validation split)
CURVE_VARIABLES = {
    "test_error_by_epoch": "test_error",
    "loss_by_epoch": ("test_nse", "test_loss"),
}
_BATCH_KINDS = ("layered", "settling")  # kinds trained by training.loop.fit (checkpoints)


@dataclass
class RunConfig:
    """Everything one run needs, picklable for a dask worker."""

    run_id: str
    rule: str
    seed: int
    kind: str
    task: _tasks.Task
    options: dict[str, Any]
    cells: list[dict[str, Any]]
    dims: list[str]
    out: str
    epochs: int | None = None
    quick: bool = False
    device: str = "cpu"
    checkpoint_every: int = 100
    validation: float | None = None
    threads: int | None = None
    progress: bool = False
    session: str = ""
    dtypes: dict[str, str] = field(default_factory=dict)

    @property
    def recording(self) -> Path:
        return Path(self.out) / f"{self.run_id}.h5"


def row_path(out: str | os.PathLike, run_id: str) -> Path:
    return Path(out) / "rows" / f"{run_id}.nc"


def _applies(option: str, rule: str, t: _tasks.Task, quick: bool) -> bool:
    ns = option.split(".", 1)[0]
    if ns == "task":
        return True
    if ns == "optimizer":
        return optimizer_spec(t, rule, quick) is not None
    return ns == rule


def _slug(value: Any) -> str:
    return re.sub(r"[^A-Za-z0-9._()+=-]", "_", str(value))


def plan(spec: SweepSpec, out: str | os.PathLike, session: str = "") -> list[RunConfig]:
    """The runs of a validated spec, each with the summary cells it stands for."""
    t = spec.task_obj()
    cells = spec.cells()
    options = spec.options
    dtypes = {}
    for k in options:
        vals = [c[k] for c in cells]
        dtypes[k] = np.asarray(vals).dtype.str if not all(isinstance(v, str) for v in vals) else ""
    short = {k: k.split(".", 1)[1] for k in options}
    if len(set(short.values())) != len(short):
        short = {k: k for k in options}
    runs: dict[tuple, RunConfig] = {}
    for r in spec.rules:
        kind = t.kind_for(r)
        applied = [k for k in options if _applies(k, r, t, spec.quick)]
        for s in spec.seeds:
            for cell in cells:
                opts = {k: cell[k] for k in applied}
                key = (r, s, tuple(repr(v) for v in opts.values()))
                coords = {"rule": r, "seed": int(s), **{d: cell[d] for d in spec.dims}}
                if key in runs:
                    runs[key].cells.append(coords)
                    continue
                run_id = "-".join(
                    [f"{r}-seed{s}", *(f"{short[k]}={_slug(v)}" for k, v in opts.items())]
                )
                runs[key] = RunConfig(
                    run_id=run_id,
                    rule=r,
                    seed=int(s),
                    kind=kind,
                    task=t,
                    options=opts,
                    cells=[coords],
                    dims=list(spec.dims),
                    out=str(Path(out).resolve()),
                    epochs=spec.epochs,
                    quick=spec.quick,
                    device=spec.device,
                    checkpoint_every=spec.checkpoint_every,
                    validation=spec.validation,
                    session=session,
                    dtypes=dtypes,
                )
    configs = list(runs.values())
    ids = [c.run_id for c in configs]
    if len(set(ids)) != len(ids):  # two values that read alike once made file-name safe
        for i, c in enumerate(configs):
            c.run_id = f"{c.run_id}-{i}"
    return configs


def _build(config: RunConfig):
    """The task with its swept fields, the rule, the data, the circuit and train options."""
    task_opts = {
        k[5:]: resolve_value(v) for k, v in config.options.items() if k.startswith("task.")
    }
    t = dataclasses.replace(config.task, **task_opts) if task_opts else config.task
    rule_opts = {
        k.split(".", 1)[1]: resolve_value(v)
        for k, v in config.options.items()
        if k.split(".", 1)[0] == config.rule
    }
    from bioprop.rules import registry

    rule = registry.get(
        config.rule, kind=config.kind, **{**t.rule_options.get(config.rule, {}), **rule_opts}
    )
    options = t.train_options(config.kind, config.rule, config.quick)
    if config.epochs is not None and "epochs" in options:
        options["epochs"] = config.epochs
    opt_opts = {k[10:]: v for k, v in config.options.items() if k.startswith("optimizer.")}
    if opt_opts:
        name, kwargs = optimizer_spec(t, config.rule, config.quick)
        options["optimizer"] = (name, {**kwargs, **opt_opts})
    return t, rule, options


def _probe(circuit) -> str | None:
    """The population whose teaching signal the summary's angle reads: the last hidden one of
    layered and settling circuits (None elsewhere: the whole update is compared)."""
    if circuit.kind not in _BATCH_KINDS:
        return None
    hidden = circuit.hidden()
    return hidden[-1] if hidden else None


def _final_angle(path: Path, population: str | None) -> float:
    """Mean over the last records that carry one (a spiking run's test presentations carry
    none) of the angle to the family's exact reference."""
    from bioprop import analysis
    from bioprop.recording.load import load

    with load(path) as rec:
        vals = analysis.reference_angle(rec, population).values
    vals = vals[np.isfinite(vals)][-FINAL_WINDOW:]
    return float(vals.mean()) if vals.size else math.nan


def execute_run(config: RunConfig) -> dict[str, Any]:
    """Train one run (or return its finished row) and write its recording and row."""
    path = row_path(config.out, config.run_id)
    if path.exists():
        return read_row(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(
        path.parent / f".{config.run_id}.lock",
        f"run {config.run_id}",
        stale_after=600,
    )
    lock.acquire(wait=float("inf"))  # another live attempt of this run: wait for its row
    try:
        if path.exists():
            return read_row(path)
        with in_this_process():
            return _train_and_write(config, lock)
    finally:
        lock.release()


def in_this_process() -> AbstractContextManager:
    """A context in which dask computes in the calling thread.  Inside a task on a dask
    worker, dask's default is to send any computation back to the cluster; a recording's
    lazy (h5py-backed) arrays, read at the end of a run for its angle to the reference, must
    not travel: another process reopening the file, or this one reopening it with other
    locking flags, fails, and the worker loses its connection to the scheduler."""
    import dask

    return dask.config.set(scheduler="synchronous")


def _train_and_write(config: RunConfig, lock: FileLock) -> dict[str, Any]:
    from bioprop.recording.writer import Record
    from bioprop.training.run import Checkpoint
    from bioprop.training.train import train

    if config.threads is not None:
        torch.set_num_threads(config.threads)
    row: dict[str, Any] = {"status": "ok", "error": "", "resumed_from": 0, "steps": 0}
    row.update(final_loss=math.nan, test_error=math.nan, angle_to_bp=math.nan)
    row["curves"] = {}
    ckpt_path = Path(config.out) / "checkpoints" / f"{config.run_id}.pt"
    probe = None
    t0 = time.perf_counter()
    try:
        t, rule, options = _build(config)
        data = t.load(config.seed, config.quick)
        if config.validation is not None:
            data = data.validation_split(config.validation, seed=config.seed)  # same for every rule
        circuit = t.circuit(config.seed, config.kind)
        probe = _probe(circuit)
        every = t.record_every if not config.quick else 20
        extra: dict[str, Any] = {}
        if config.kind in _BATCH_KINDS:
            ckpt_path.parent.mkdir(exist_ok=True)
            if ckpt_path.exists():
                from bioprop.training import checkpoints

                try:
                    state = checkpoints.read(ckpt_path, map_location="cpu")
                    row["resumed_from"] = int(state["step"])
                except checkpoints.CheckpointError:
                    ckpt_path.unlink()  # unreadable (it was never ours to keep): start over
            beat = [time.monotonic()]

            def heartbeat(step, signals):
                if time.monotonic() - beat[0] > 10:
                    beat[0] = time.monotonic()
                    lock.touch()

            extra = {
                "checkpoint": Checkpoint(ckpt_path, every=config.checkpoint_every),
                "resume": True,
                "on_step": heartbeat,
            }
        run = train(
            circuit,
            rule,
            data,
            seed=config.seed,
            record=Record(config.recording, every=every, evaluate=t.evaluate_on_record),
            device=config.device,
            progress=config.progress,
            **options,
            **extra,
        )
        row.update(steps=run.steps, final_loss=run.final_loss, test_error=run.test_error)
        row["curves"] = epoch_curves(run.history)
        if not rule.is_reference:
            row["angle_to_bp"] = _final_angle(config.recording, probe)
    except Exception as exc:  # noqa: BLE001 - a failed run is a result, not the sweep's end
        from bioprop.training.run import DivergenceError

        row["status"] = "failed"
        row["error"] = (
            str(exc) if isinstance(exc, DivergenceError) else f"{type(exc).__name__}: {exc}"
        )
        row["diverged"] = isinstance(exc, DivergenceError)
        row["steps"] = 0
    row["wall_time"] = time.perf_counter() - t0
    row["probe"] = probe or ""
    ds = write_row(config, row)
    ckpt_path.unlink(missing_ok=True)
    return _first(ds)


def epoch_curves(history: dict[str, list[float]]) -> dict[str, list[float]]:
    """The :data:`CURVE_VARIABLES` of a run's ``history`` (one value per evaluation: after
    every epoch, and after a last partial epoch where the run stopped inside one); a
    variable the history lacks is left out (NaN in the summary)."""
    curves = {}
    for name, keys in CURVE_VARIABLES.items():
        for k in (keys,) if isinstance(keys, str) else keys:
            if history.get(k):
                curves[name] = [float(v) for v in history[k]]
                break
    return curves


def failed_row(config: RunConfig, message: str) -> dict[str, Any]:
    """Record ``config`` as failed with ``message`` (e.g. its worker died too often)."""
    row = {k: math.nan for k in ("final_loss", "test_error", "angle_to_bp", "wall_time")}
    row.update(status="failed", error=message, resumed_from=0, steps=0, probe="")
    return _first(write_row(config, row))


def write_row(config: RunConfig, row: dict[str, Any]) -> xr.Dataset:
    """Write the run's row file (one entry per summary cell it stands for); returns it."""
    n = len(config.cells)
    coords: dict[str, Any] = {
        "rule": ("cell", [c["rule"] for c in config.cells]),
        "seed": ("cell", np.array([c["seed"] for c in config.cells], dtype=np.int64)),
    }
    for d in config.dims:
        vals = [c[d] for c in config.cells]
        dt = config.dtypes.get(d) if d != "point" else "<i8"
        coords[d] = ("cell", np.asarray(vals, dtype=dt or None))
    data = {}
    for k in ROW_VARIABLES:
        v = row[k]
        if k in ("status", "error"):
            data[k] = ("cell", np.array([str(v)] * n, dtype=object))
        elif k in ("steps", "resumed_from"):
            data[k] = ("cell", np.full(n, int(v), dtype=np.int64))
        else:
            data[k] = ("cell", np.full(n, float(v)))
    curves = row.get("curves") or {}
    length = max((len(c) for c in curves.values()), default=0)
    for k in CURVE_VARIABLES:
        c = np.full(length, np.nan)
        c[: len(curves.get(k, ()))] = curves.get(k, ())
        data[k] = (("cell", "epoch"), np.tile(c, (n, 1)))
    coords["epoch"] = ("epoch", np.arange(1, length + 1, dtype=np.int64))
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update(
        run_id=config.run_id,
        recording=config.recording.name,
        kind=config.kind,
        probe=row.get("probe", ""),
        diverged=int(bool(row.get("diverged", False))),
        session=config.session,
        host=socket.gethostname(),
        pid=os.getpid(),
    )
    path = row_path(config.out, config.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: ds.to_netcdf(p, engine="h5netcdf"))
    return ds


def _first(ds: xr.Dataset) -> dict[str, Any]:
    """A row dataset's values (those of its first cell) and attributes."""
    row: dict[str, Any] = {}
    for k in ROW_VARIABLES:
        v = ds[k].values[0]
        row[k] = v.item() if isinstance(v, np.generic) else v
    row.update(ds.attrs)
    row["diverged"] = bool(row.get("diverged", 0))
    return row


def read_row(path: Path) -> dict[str, Any]:
    """A row file's values (those of its first cell) and attributes."""
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return _first(ds)
