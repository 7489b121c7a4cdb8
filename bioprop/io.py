"""Opening recordings: ``bioprop.load(path) -> xarray.DataTree``."""

from __future__ import annotations

import os
from pathlib import Path

import xarray as xr

__all__ = ["load"]


def load(path: str | os.PathLike) -> xr.DataTree:
    """Open a bioprop recording as an ``xarray.DataTree``.

    Groups: ``/metrics``, ``/pathways/<name>``, ``/populations/<name>`` (and,
    for spiking runs, ``/spikes/<population>``).  Weights are
    ``(step, post, pre)``; teaching signals ``(step, sample, neuron)``.
    Provenance is in the root's attrs.  Data load lazily from the file.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(
            f"no recording at {p}; pass the path a run wrote (Record(path=...))"
        )
    try:
        return xr.open_datatree(p, engine="h5netcdf")
    except OSError as exc:
        raise OSError(f"{p} is not a readable HDF5/NetCDF4 recording: {exc}") from exc
