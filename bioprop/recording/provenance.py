"""The one provenance builder: what every recording says about how it was made.

Attributes are plain scalars or JSON strings (nested values), the timestamp is ISO 8601
UTC to the second, and the optimizer is written group by group (name, size, learning rate
and the rest), so a synthetic-gradient module's or an inverse's own learning rate is kept.
"""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from typing import Any

__all__ = ["provenance", "versions", "timestamp", "to_attr"]


def timestamp() -> str:
    """Now, ISO 8601 UTC to the second (the one timestamp format of recordings)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def versions() -> dict[str, str]:
    """Versions of bioprop and of the libraries a result depends on."""
    import h5netcdf
    import numpy
    import torch
    import xarray

    import bioprop

    out = {
        "bioprop_version": bioprop.__version__,
        "torch_version": torch.__version__,
        "numpy_version": numpy.__version__,
        "xarray_version": xarray.__version__,
        "h5netcdf_version": h5netcdf.__version__,
        "python_version": platform.python_version(),
    }
    try:  # brian2 only where it is installed and used
        import sys

        if "brian2" in sys.modules:
            out["brian2_version"] = sys.modules["brian2"].__version__
    except Exception:  # noqa: BLE001 - versions are best effort
        pass
    return out


def to_attr(v: Any):
    """A value as an HDF5/NetCDF attribute: numbers and strings as they are, bools as 0/1,
    anything else as JSON."""
    import numpy as np

    if isinstance(v, bool):
        return int(v)
    if isinstance(v, (str, int, float, np.integer, np.floating)):
        return v
    return json.dumps(v, default=repr)


def provenance(
    circuit,
    rule,
    *,
    task: str,
    loss: str,
    optimizer=None,
    seed: int,
    **budget: Any,
) -> dict[str, Any]:
    """Provenance attributes of a recording: rule (name, kind, hyper-parameters), task,
    loss, optimizer (class and every parameter group), seed, the budget (``epochs``,
    ``batch_size``, ``steps``, … as given), the circuit, versions and the creation time."""
    from bioprop.training.optim import groups_of

    attrs: dict[str, Any] = {
        "rule": rule.name,
        "rule_kind": rule.kind,
        "rule_hyperparameters": rule.hyperparameters(),
        "task": task,
        "loss": loss,
        "seed": int(seed),
    }
    if optimizer is not None:
        attrs["optimizer"] = type(optimizer).__name__
        attrs["optimizer_groups"] = groups_of(optimizer)
        attrs["optimizer_hyperparameters"] = {
            k: v for k, v in optimizer.defaults.items() if isinstance(v, (int, float, bool, str))
        }
    attrs.update(budget)
    attrs.update(
        circuit=circuit.describe(),
        circuit_kind=circuit.kind,
        populations=list(circuit.order()),
        input_population=circuit.input,
        output_population=circuit.output,
        hidden_populations=circuit.hidden(),
    )
    attrs.update(versions())
    attrs["created"] = timestamp()
    return attrs
