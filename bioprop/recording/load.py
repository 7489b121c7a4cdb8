"""Opening recordings: ``bioprop.load(path) -> xarray.DataTree``.

Recordings are NetCDF4 files, and ``xarray.open_datatree(path, engine="h5netcdf")`` opens
them too; but h5netcdf recomputes every unlimited dimension's size by scanning its group,
which costs ~1–2 s per file here.  ``load`` reads the same structure directly with h5py
(dimension names from the NetCDF4 dimension scales) and wraps each variable as a lazy dask
array, so opening is fast and data are read only when used.
"""

from __future__ import annotations

import json
import os
import posixpath
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import xarray as xr

from bioprop.recording.lock import CONVENTIONS
from bioprop.recording.schema import COUNTER
from bioprop.recording.superblock import SIGNATURE

__all__ = ["load"]

# attributes that encode NetCDF4/HDF5 structure rather than meaning
_INTERNAL = {
    "DIMENSION_LIST",
    "REFERENCE_LIST",
    "CLASS",
    "NAME",
    "_Netcdf4Dimid",
    "_Netcdf4Coordinates",
    "_NCProperties",
    "_FillValue",
    "_nc3_strict",
}
_LAZY_ABOVE = 2**20  # elements: larger variables stay in the file (dask), smaller are read
_HIDDEN = {f"/{COUNTER}", "/growing"}  # the writer's bookkeeping, not data
_NOT_A_VARIABLE = "This is a netCDF dimension but not a netCDF variable"


def _attr(v):
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, np.ndarray) and v.size == 1:  # NetCDF attributes are 1-element arrays
        return _attr(v.reshape(()).item())
    if isinstance(v, np.generic):
        return v.item()
    return v


def _attrs(obj) -> dict:
    return {k: _attr(v) for k, v in obj.attrs.items() if k not in _INTERNAL}


def _is_dimension_only(ds: h5py.Dataset) -> bool:
    name = ds.attrs.get("NAME")
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    return isinstance(name, str) and name.startswith(_NOT_A_VARIABLE)


def _dims(ds: h5py.Dataset) -> tuple[str, ...]:
    if ds.attrs.get("CLASS") == b"DIMENSION_SCALE":  # a coordinate: its own dimension
        return (posixpath.basename(ds.name),)
    out = []
    for i, d in enumerate(ds.dims):
        out.append(posixpath.basename(d[0].name) if len(d) else f"dim_{i}")
    return tuple(out)


def _dataset(group: h5py.Group, lazy: bool, rows: dict[str, int]) -> xr.Dataset:
    """The variables of ``group``; those growing along a dimension named in ``rows`` are
    cut to its committed rows (a record the writer did not complete is left out)."""
    data_vars, coords = {}, {}
    for name, obj in group.items():
        if not isinstance(obj, h5py.Dataset) or _is_dimension_only(obj):
            continue
        if obj.name in _HIDDEN:
            continue
        dims = _dims(obj)
        cut = rows.get(dims[0]) if dims else None
        if len(dims) == 1 and dims[0] == name:  # a coordinate variable: read it now
            coords[name] = (dims, obj[:cut] if cut is not None else obj[()], _attrs(obj))
            continue
        if lazy and obj.size > _LAZY_ABOVE:
            data = da.from_array(obj, chunks=obj.chunks or obj.shape, lock=True)
            data = data[:cut] if cut is not None else data
        else:
            data = obj[:cut] if cut is not None else obj[()]
        data_vars[name] = (dims, data, _attrs(obj))
    return xr.Dataset(data_vars, coords, attrs=_attrs(group))


def _committed(f: h5py.File) -> dict[str, dict[str, int]]:
    """``{group path: {dimension: committed rows}}`` from the writer's counter (empty for
    files written before it existed: every row counts)."""
    if COUNTER not in f:
        return {}
    ds = f[COUNTER]
    out: dict[str, dict[str, int]] = {}
    for (gp, dim, _), n in zip(json.loads(_attr(ds.attrs["rows_of"])), ds[()], strict=True):
        out.setdefault("/" + gp if gp else "/", {})[dim] = int(n)
    return out


def _open(p: Path) -> h5py.File:
    """Open as a SWMR reader (works while the writer runs, and after it was killed), else
    plainly (files of other HDF5 formats); a clear error for anything else."""
    if p.is_dir():
        raise IsADirectoryError(f"{p} is a directory, not a recording; pass a .h5 file in it")
    with open(p, "rb") as fh:
        head = fh.read(8)
    if head != SIGNATURE:
        what = "an empty file" if not head else "not an HDF5 file"
        raise ValueError(f"{p} is {what}, not a bioprop recording (HDF5/NetCDF4)")
    errors = []
    for swmr in (True, False):
        try:
            return h5py.File(p, "r", swmr=swmr, locking=False)
        except Exception as exc:  # noqa: BLE001 - HDF5 fails on a broken file in many ways
            errors.append(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    raise OSError(f"{p} is not a readable HDF5/NetCDF4 recording: {errors[-1]}")


def load(path: str | os.PathLike, lazy: bool = True) -> xr.DataTree:
    """Open a bioprop recording as an ``xarray.DataTree``.

    Groups: ``/metrics``, ``/pathways/<name>``, ``/populations/<name>`` (and groups that
    rules add, e.g. ``/settling``, ``/interfaces/<name>``).  Weights are
    ``(step, post, pre)``; teaching signals ``(step, sample, neuron)``.  Provenance is in
    the root's attrs.  With ``lazy=True`` (default) variables of more than 2²⁰ elements stay
    in the file until used (dask arrays) and smaller ones are read at once; ``lazy=False``
    reads everything now.  ``tree.close()`` closes the file.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"no recording at {p}; pass the path a run wrote (Record(path=...))"
        )
    f = _open(p)
    try:
        conventions = _attr(f.attrs.get("Conventions", ""))
        if conventions != CONVENTIONS:
            raise ValueError(
                f"{p} is an HDF5 file but not a bioprop recording (Conventions = "
                f"{conventions or 'absent'!s}, a recording has {CONVENTIONS!r}); open other "
                "NetCDF/HDF5 files with xarray.open_datatree(path, engine='h5netcdf')"
            )
        rows = _committed(f)
    except BaseException:
        f.close()
        raise
    nodes: dict[str, xr.Dataset] = {}

    def visit(g: h5py.Group, path: str) -> None:
        nodes[path] = _dataset(g, lazy, rows.get(g.name, {}))
        for name, obj in g.items():
            if isinstance(obj, h5py.Group):
                visit(obj, posixpath.join(path, name))

    try:
        visit(f, "/")
    except Exception:
        f.close()
        raise
    tree = xr.DataTree.from_dict(nodes)
    if lazy:
        tree.set_close(f.close)
    else:
        f.close()
    return tree
