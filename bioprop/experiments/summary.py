"""A sweep's summary: the per-run row files combined lazily into one dataset.

Every run writes ``OUT/rows/<run id>.nc`` over a ``cell`` dimension (see
:mod:`bioprop.experiments.runs`).  :func:`open_summary` opens them all with
``xarray.open_mfdataset`` (dask arrays: nothing is read until asked), concatenates the
cells and unstacks them into one variable per quantity over ``(rule, seed, *options)`` —
``(rule, seed)`` for ``bioprop compare``, ``(rule, seed, point)`` for a list of points.
It works on a sweep still running (unfinished cells are missing: NaN, status "missing").
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["open_summary", "finish_summary", "format_sweep_table", "cells", "failures"]


def open_summary(out: str | os.PathLike, dims: list[str] | None = None) -> xr.Dataset:
    """The rows in ``out/rows`` as one lazy dataset over ``(rule, seed, *dims)``.

    ``dims`` defaults to the dimensions the row files carry besides ``rule`` and ``seed``."""
    files = sorted((Path(out) / "rows").glob("*.nc"))
    if not files:
        raise FileNotFoundError(f"no finished runs in {out}/rows")
    rows = xr.open_mfdataset(
        files,
        combine="nested",
        concat_dim="cell",
        engine="h5netcdf",
        data_vars="all",
        join="outer",  # runs differ in their number of epochs (curves padded with NaN)
    )
    if dims is None:
        dims = [c for c in rows.coords if c not in ("rule", "seed") and rows[c].dims == ("cell",)]
    return rows.set_index(cell=["rule", "seed", *dims]).unstack("cell")


def finish_summary(
    out: str | os.PathLike,
    rules: list[str],
    seeds: list[int],
    axes: dict[str, list[Any]],
    kinds: dict[str, str],
    attrs: dict[str, Any],
    point_coords: dict[str, list[Any]] | None = None,
) -> xr.Dataset:
    """The summary in the spec's order (``axes``: each dimension's values), computed:
    ``kind`` over ``rule``, cells without a row marked ``status = "missing"``."""
    lazy = open_summary(out, list(axes))
    try:
        ds = lazy.reindex(rule=rules, seed=seeds, **axes).load()
    finally:
        lazy.close()
    for k in ("status", "error"):
        v = ds[k].values.astype(object)
        bad = np.array([not isinstance(x, str) for x in v.ravel()]).reshape(v.shape)
        v[bad] = "missing" if k == "status" else ""
        ds[k] = (ds[k].dims, v.astype(str))
    for k in ("steps", "resumed_from"):
        ds[k] = ds[k].fillna(0).astype(np.int64)
    for v in ds.variables.values():
        v.encoding = {}  # the first row file's (its string widths would truncate the others)
    ds = ds.transpose("rule", "seed", *axes, ...)
    ds["kind"] = ("rule", [kinds[r] for r in rules])
    for name, values in (point_coords or {}).items():
        ds = ds.assign_coords({name: ("point", values)})
    ds["wall_time"].attrs["units"] = "s"
    ds["status"].attrs["long_name"] = "ok, failed (see error) or missing (not run yet)"
    ds["resumed_from"].attrs["long_name"] = "step a retried run resumed from (0: from the start)"
    ds.attrs.update(attrs)
    return ds


def _cell(values: np.ndarray, spec: str) -> str:
    values = values[np.isfinite(values)]
    if not values.size:
        return "—"
    return f"{values.mean():{spec}} ± {values.std():{spec}}"


def cells(ds: xr.Dataset):
    """``(rule, {dim: value}, cell over seed)`` for every rule × option cell, once per run:
    an option of another rule (``fa.*`` for bp) does not change a rule's runs, so its
    value is None and the rule's cells along it are not repeated."""
    dims = [d for d in ds.final_loss.dims if d not in ("rule", "seed")]
    rules = [str(r) for r in ds.rule.values]
    for r in rules:
        own = [d for d in dims if d.split(".", 1)[0] not in rules or d.split(".", 1)[0] == r]
        sub = ds.sel(rule=r).isel({d: 0 for d in dims if d not in own})
        for idx in np.ndindex(*(sub.sizes[d] for d in own)):
            cell = sub.isel(dict(zip(own, idx, strict=True)))
            yield r, {d: (cell[d].values.item() if d in own else None) for d in dims}, cell


def format_sweep_table(ds: xr.Dataset) -> str:
    """One line per rule × option cell: mean ± sd over seeds, and failed runs."""
    dims = [d for d in ds.final_loss.dims if d not in ("rule", "seed")]
    err = bool(ds.test_error.notnull().any())
    cols = [(d, max(len(d), *(len(str(v)) for v in ds[d].values))) for d in dims]
    head = f"{'rule':<18} " + " ".join(f"{d:>{w}}" for d, w in cols)
    held_out = ds.attrs.get("evaluated_on")  # a tuning sweep reports a validation split
    on = "valid" if str(held_out).startswith("validation") else "test"
    head += f" {'final loss':>22}" + (f" {on + ' error %':>16}" if err else "")
    head += f" {'angle to bp (°)':>16} {'wall (s)':>9}"
    lines = [
        f"task {ds.attrs.get('task')}, {ds.sizes['seed']} seed(s), "
        f"{ds.attrs.get('epochs')} epoch(s), options: {', '.join(dims) or 'none'}"
        + (f"; evaluated on the {held_out}" if held_out else ""),
        head,
        "-" * len(head),
    ]
    for rule, coords, d in cells(ds):
        row = f"{rule:<18} "
        row += " ".join(f"{'·' if coords[c] is None else str(coords[c]):>{w}}" for c, w in cols)
        loss = _cell(d.final_loss.values, ".3g")
        failed = int((d.status.values == "failed").sum())
        if failed:
            loss = f"{loss} ({failed} failed)" if loss != "—" else "failed"
        row += f" {loss:>22}"
        if err:
            row += f" {_cell(d.test_error.values * 100, '.2f'):>16}"
        wall = d.wall_time.values
        mean_wall = float(np.nanmean(wall)) if np.isfinite(wall).any() else math.nan
        row += f" {_cell(d.angle_to_bp.values, '.1f'):>16} {mean_wall:>9.1f}"
        lines.append(row)
    failed = failures(ds)
    if failed:
        more = (
            f"\n... and {len(failed) - 5} more (`error` in summary.nc)" if len(failed) > 5 else ""
        )
        lines.append(f"failed runs ({len(failed)}):\n" + "\n".join(failed[:5]) + more)
    return "\n".join(lines)


def failures(ds: xr.Dataset) -> list[str]:
    """``"rule seed s [option=value ...]: message"`` for every failed cell, each run once."""
    seen: set[str] = set()
    out: list[str] = []
    dims = [d for d in ds.status.dims if d not in ("rule", "seed")]
    rules = [str(r) for r in ds.rule.values]
    st = ds.status.stack(_c=ds.status.dims)
    er = ds.error.stack(_c=ds.error.dims)
    for i in np.flatnonzero(st.values == "failed"):
        c = st.isel(_c=i)
        msg = str(er.values[i])
        rule = str(c.rule.values)
        own = [d for d in dims if d.split(".", 1)[0] in (rule,) or d.split(".", 1)[0] not in rules]
        opts = " ".join(f"{d}={c[d].values}" for d in own)
        line = f"{rule} seed {int(c.seed)}{' ' + opts if opts else ''}: {msg}"
        if line not in seen:  # a run standing for several cells is listed once
            seen.add(line)
            out.append(line)
    return out
