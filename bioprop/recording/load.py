"""Opening recordings: ``bioprop.load(path) -> xarray.DataTree``.

Recordings are NetCDF4 files, and ``xarray.open_datatree(path, engine="h5netcdf")`` opens
them too; but h5netcdf recomputes every unlimited dimension's size by scanning its group,
which costs ~1–2 s per file here.  ``load`` reads the same structure directly with h5py
(dimension names from the NetCDF4 dimension scales) and wraps each variable as a lazy dask
array, so opening is fast and data are read only when used.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

import dask.array as da
import h5py
import numpy as np
import xarray as xr

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


def _dataset(group: h5py.Group, lazy: bool) -> xr.Dataset:
    data_vars, coords = {}, {}
    for name, obj in group.items():
        if not isinstance(obj, h5py.Dataset) or _is_dimension_only(obj):
            continue
        dims = _dims(obj)
        if len(dims) == 1 and dims[0] == name:  # a coordinate variable: read it now
            coords[name] = (dims, obj[()], _attrs(obj))
            continue
        if lazy and obj.size > _LAZY_ABOVE:
            data = da.from_array(obj, chunks=obj.chunks or obj.shape, lock=True)
        else:
            data = obj[()]
        data_vars[name] = (dims, data, _attrs(obj))
    return xr.Dataset(data_vars, coords, attrs=_attrs(group))


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
    try:
        f = h5py.File(p, "r")
    except OSError as exc:
        raise OSError(f"{p} is not a readable HDF5/NetCDF4 recording: {exc}") from exc
    nodes: dict[str, xr.Dataset] = {}

    def visit(g: h5py.Group, path: str) -> None:
        nodes[path] = _dataset(g, lazy)
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
