"""Recording and loading: one HDF5 writer (valid NetCDF4) for every circuit kind, one
provenance builder, and ``load`` → ``xarray.DataTree``."""
