"""Recordings: NetCDF4-valid HDF5 files written step by step with h5netcdf.

Layout (see ``docs/recordings.md``)::

    /                       attrs: provenance (rule, hyper-parameters, seed, versions, ...)
    /metrics                step (unlimited): epoch, loss
    /pathways/<name>        step, post, pre: weight, bias, weight_update, weight_update_bp, ...
    /populations/<name>     step, sample, neuron: delta, delta_bp, rate

Every group has its own unlimited ``step`` dimension and ``step`` coordinate,
so groups may be recorded on their own schedules.  Each record is appended by
growing ``step`` by one and writing that slice, and the file is flushed after
every record: a killed run keeps every record written before the kill, and
nothing of the recording is held in memory beyond the current step.

``weight_update`` is the rule's proposed change per unit learning rate, −ĝ (the
negative of what the rule wrote into ``.grad``); ``weight_update_bp`` is −∂L/∂W of
the shadow backprop reference for the same batch and weights.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5netcdf
import h5py
import numpy as np
import torch

from bioprop.core.circuit import Circuit
from bioprop.rules.contract import Signals
from bioprop.rules.reference import Reference

__all__ = ["Record", "Recorder", "ExtraVariable", "VARIABLES"]

PATHWAY_VARIABLES = (
    "weight",
    "bias",
    "weight_update",
    "weight_update_bp",
    "bias_update",
    "bias_update_bp",
)
POPULATION_VARIABLES = ("delta", "delta_bp", "rate")
VARIABLES = PATHWAY_VARIABLES + POPULATION_VARIABLES


@dataclass(frozen=True)
class ExtraVariable:
    """A rule-specific variable recorded as ``(step, *dims)`` in a group of its choosing
    (declared by :meth:`bioprop.rules.Rule.record_variables`).

    ``grows`` names the unlimited dimension the variable grows along: ``"step"`` (one row
    per record, written by :meth:`Recorder.write`) or another one — e.g. ``"spike"`` for
    ragged spike trains, ``"time"`` for sampled states — whose rows are appended by
    :meth:`Recorder.extend`, independently of ``step``.  ``chunk_rows``: rows per HDF5
    chunk along it (default 1 for ``step``, 1024 otherwise)."""

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    long_name: str
    dtype: str = "f4"
    attrs: dict[str, Any] = field(default_factory=dict)
    grows: str = "step"
    chunk_rows: int | None = None


@dataclass
class Record:
    """What to record, where and how often.

    Parameters
    ----------
    path
        The HDF5 file to write.
    every
        Record every ``every`` training steps (step 0 included).
    pathways, populations
        Names to record (default: all).  Pass ``[]`` to record none.
    variables
        Which variables (default: all of :data:`VARIABLES`).
    samples
        How many samples of the batch to keep for per-sample signals
        (``delta``, ``delta_bp``, ``rate``); missing samples are NaN.
    shadow
        Compute and store the backprop reference (``weight_update_bp``,
        ``delta_bp``) on recording steps.
    evaluate
        Also evaluate the test set on recording steps (``metrics/test_*``), for
        learning curves finer than one point per epoch.
    """

    path: str | os.PathLike
    every: int = 100
    pathways: Sequence[str] | None = None
    populations: Sequence[str] | None = None
    variables: Sequence[str] | None = None
    samples: int = 16
    shadow: bool = True
    evaluate: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"Record(every=...) must be a positive integer, got {self.every!r}")
        if self.samples < 0:
            raise ValueError(f"Record(samples=...) must be >= 0, got {self.samples!r}")
        if self.variables is not None:
            unknown = sorted(set(self.variables) - set(VARIABLES))
            if unknown:
                raise ValueError(
                    f"Record(variables=...): unknown {unknown}; choose from {list(VARIABLES)}"
                )
        self.path = Path(self.path)

    def due(self, step: int) -> bool:
        return step % self.every == 0


def _to_attr(v: Any):
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, str):
        return str(v)
    if isinstance(v, (int, float, np.integer, np.floating)):
        return v
    return json.dumps(v, default=repr)


def pathway_group(parent, name: str, pw) -> Any:
    """Create ``parent/name`` for pathway ``pw``: its description as attributes, an
    unlimited ``step`` dimension with a ``step`` variable, and ``post``/``pre``
    dimensions of the weight's shape.  Shared by every recorder."""
    n_post, n_pre = pw.shape
    g = parent.create_group(name)
    for k, v in pw.describe().items():
        g.attrs[k] = _to_attr(v)
    g.dimensions["step"] = None
    g.dimensions["post"] = n_post
    g.dimensions["pre"] = n_pre
    g.create_variable("step", ("step",), "i8", chunks=(1024,))
    return g


def population_group(parent, name: str, circuit) -> Any:
    """Create ``parent/name`` for a population of ``circuit``: its description and
    whether it is the circuit's input or output, as attributes."""
    g = parent.create_group(name)
    for k, v in circuit.populations[name].describe().items():
        g.attrs[k] = _to_attr(v)
    g.attrs["is_input"] = int(name == circuit.input)
    g.attrs["is_output"] = int(name == circuit.output)
    return g


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy()


class Recorder:
    """Writes :class:`Record` s of a circuit under training to an HDF5 file.

    Use as a context manager; :meth:`close` is idempotent.  ``mode="a"``
    reopens an existing recording to continue it (after a resume), dropping
    records later than ``truncate_after``.  ``reference_roles``: the pathway roles that
    get the shadow backprop reference ``weight_update_bp`` (feedforward only by default;
    recurrent circuits add ``"lateral"``, whose full-BPTT gradient exists).
    """

    def __init__(
        self,
        spec: Record,
        circuit: Circuit,
        attrs: dict[str, Any] | None = None,
        mode: str = "w",
        truncate_after: int | None = None,
        extra: dict[str, dict[str, ExtraVariable]] | None = None,
        reference_roles: tuple[str, ...] = ("feedforward",),
    ):
        self.spec = spec
        self.reference_roles = tuple(reference_roles)
        self.circuit = circuit
        self.extra = extra or {}
        wanted_vars = set(spec.variables) if spec.variables is not None else set(VARIABLES)
        self._vars = wanted_vars
        all_pw = list(circuit.pathways)
        all_pop = [n for n in circuit.order()]
        self._pathways = list(spec.pathways) if spec.pathways is not None else all_pw
        self._populations = list(spec.populations) if spec.populations is not None else all_pop
        for n in self._pathways:
            if n not in circuit.pathways:
                raise ValueError(
                    f"Record(pathways=...): no pathway {n!r}; the circuit has {all_pw}"
                )
        for n in self._populations:
            if n not in circuit.populations:
                raise ValueError(
                    f"Record(populations=...): no population {n!r}; the circuit has {all_pop}"
                )
        path = Path(spec.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        appending = mode == "a" and path.exists()
        self.file = h5netcdf.File(path, "a" if appending else "w")
        if not appending:
            self._create(attrs or {})
            self._create_extra()
        self._open_appender(path)
        if appending:
            self._truncate(truncate_after)
        self.flush()
        self.closed = False

    # -- layout -------------------------------------------------------------------------
    def _create(self, attrs: dict[str, Any]) -> None:
        f = self.file
        for k, v in {**attrs, **self.spec.attrs}.items():
            f.attrs[k] = _to_attr(v)
        f.attrs["Conventions"] = "bioprop-recording-1"
        f.attrs["record_every"] = self.spec.every
        m = f.create_group("metrics")
        m.dimensions["step"] = None
        m.create_variable("step", ("step",), "i8", chunks=(1024,))
        m.create_variable("epoch", ("step",), "i8", chunks=(1024,))
        m.create_variable("loss", ("step",), "f8", chunks=(1024,), fillvalue=np.nan)
        m.variables["loss"].attrs["long_name"] = "batch loss L of the clean sweep"
        for v, long in (
            ("test_loss", "mean loss on the test set"),
            ("test_error", "test error rate (classification)"),
            ("test_nse", "test normalized squared error (regression)"),
        ):
            m.create_variable(v, ("step",), "f8", chunks=(1024,), fillvalue=np.nan)
            m.variables[v].attrs["long_name"] = long
        pws = f.create_group("pathways")
        for name in self._pathways:
            pw = self.circuit.pathways[name]
            n_post, n_pre = pw.shape
            g = pathway_group(pws, name, pw)
            mat = [v for v in ("weight", "weight_update", "weight_update_bp") if v in self._vars]
            if not pw.plastic:
                mat = [v for v in mat if v == "weight"]
            if pw.role not in self.reference_roles:
                mat = [v for v in mat if v != "weight_update_bp"]
            for v in mat:
                g.create_variable(
                    v, ("step", "post", "pre"), "f4", chunks=(1, n_post, n_pre), fillvalue=np.nan
                )
            if pw.bias is not None:
                vec = {
                    "bias": "weight",
                    "bias_update": "weight_update",
                    "bias_update_bp": "weight_update_bp",
                }
                for v, needs in vec.items():
                    if v in self._vars and needs in mat:
                        g.create_variable(
                            v, ("step", "post"), "f4", chunks=(1, n_post), fillvalue=np.nan
                        )
            for vname, v in g.variables.items():
                if vname != "step":
                    v.attrs["long_name"] = _LONG_NAMES[vname]
        pops = f.create_group("populations")
        k = self.spec.samples
        for name in self._populations:
            pop = self.circuit.populations[name]
            g = population_group(pops, name, self.circuit)
            g.dimensions["step"] = None
            g.dimensions["sample"] = k
            g.dimensions["neuron"] = pop.size
            g.create_variable("step", ("step",), "i8", chunks=(1024,))
            for v in POPULATION_VARIABLES:
                if v in self._vars and k > 0:
                    if v != "rate" and name == self.circuit.input:
                        continue
                    g.create_variable(
                        v,
                        ("step", "sample", "neuron"),
                        "f4",
                        chunks=(1, k, pop.size),
                        fillvalue=np.nan,
                    )
                    g.variables[v].attrs["long_name"] = _LONG_NAMES[v]

    def _open_appender(self, path: Path) -> None:
        """Reopen the laid-out file with h5py and keep a handle on every variable that grows
        along ``step``: appending is then a resize and a slice write per variable (h5netcdf's
        own per-write dimension bookkeeping costs tens of ms per record)."""
        paths = ["metrics"]
        paths += [f"pathways/{n}" for n in self.file["pathways"].groups]
        paths += [f"populations/{n}" for n in self.file["populations"].groups]
        paths += [gp for gp in self.extra if gp not in paths]
        along = {gp: _growing(self.file[gp]) for gp in paths}
        self.file.close()
        self.h5 = h5py.File(path, "a")
        self._grow: dict[str, dict[str, h5py.Dataset]] = {}
        self._count: dict[str, int] = {}
        # variables growing along an unlimited dimension other than step (Recorder.extend)
        self._along: dict[tuple[str, str], dict[str, h5py.Dataset]] = {}
        for gp in paths:
            g = self.h5[gp]
            for dim, names in along[gp].items():
                grow = {k: g[k] for k in names}
                if dim == "step":
                    self._grow[gp] = grow
                    self._count[gp] = grow["step"].shape[0]
                else:
                    self._along[(gp, dim)] = grow
        self._rows = {
            gp: {k: _Row(ds) for k, ds in grow.items()} for gp, grow in self._grow.items()
        }
        self._this_record: set[str] = set()

    def _truncate(self, last_step: int | None) -> None:
        """Drop records with step > last_step (continuing after a checkpoint)."""
        if last_step is None:
            return
        for gp, grow in self._grow.items():
            steps = grow["step"][:]
            keep = int(np.searchsorted(steps, last_step, side="right"))
            if keep < len(steps):
                for r in self._rows[gp].values():
                    r.grow(keep)
                self._count[gp] = keep

    def _append(self, gp: str, step: int) -> tuple[int, dict[str, _Row]]:
        """Grow every variable of group ``gp`` by one row; returns the row index and writers."""
        if gp in self._this_record:
            return self._count[gp] - 1, self._rows[gp]
        rows = self._rows[gp]
        i = self._count[gp]
        for r in rows.values():
            r.grow(i + 1)
        rows["step"].write(i, np.asarray(step, dtype=np.int64))
        self._count[gp] = i + 1
        self._this_record.add(gp)
        return i, rows

    def _create_extra(self) -> None:
        """Lay out the rule-specific variables declared by ``Rule.record_variables``."""
        for gp, variables in self.extra.items():
            g = self.file
            for part in gp.split("/"):
                g = g[part] if part in g.groups else g.create_group(part)
            if "step" not in g.dimensions and any(ev.grows == "step" for ev in variables.values()):
                g.dimensions["step"] = None
                g.create_variable("step", ("step",), "i8", chunks=(1024,))
            for name, ev in variables.items():
                if ev.grows not in g.dimensions:
                    g.dimensions[ev.grows] = None
                for dim, size in zip(ev.dims, ev.shape, strict=True):
                    if dim not in g.dimensions:
                        g.dimensions[dim] = size
                    elif g.dimensions[dim].size != size:
                        raise ValueError(
                            f"{gp}: dimension {dim!r} has size {g.dimensions[dim].size}, "
                            f"variable {name!r} wants {size}"
                        )
                rows = ev.chunk_rows or (1 if ev.grows == "step" else 1024)
                fill = {"fillvalue": np.nan} if np.dtype(ev.dtype).kind == "f" else {}
                v = g.create_variable(
                    name, (ev.grows, *ev.dims), ev.dtype, chunks=(rows, *ev.shape), **fill
                )
                v.attrs["long_name"] = ev.long_name
                for k, val in ev.attrs.items():
                    v.attrs[k] = _to_attr(val)

    # -- writing ------------------------------------------------------------------------
    def write(
        self,
        step: int,
        epoch: int,
        signals: Signals,
        reference: Reference | None = None,
        evaluation: dict[str, float] | None = None,
    ) -> None:
        """Append one record: the circuit's current weights, the rule's ``.grad`` and
        ``signals``, and the family's exact ``reference`` for the same batch."""
        ref_grads, ref_delta = ({}, {}) if reference is None else (reference.grads, reference.delta)
        self._this_record = set()
        i, gv = self._append("metrics", step)
        gv["epoch"].write(i, epoch)
        gv["loss"].write(i, float(signals.loss))
        for k, v in (evaluation or {}).items():
            if f"test_{k}" in gv:
                gv[f"test_{k}"].write(i, v)
        for name in self._pathways:
            pw = self.circuit.pathways[name]
            i, gv = self._append(f"pathways/{name}", step)
            if "weight" in gv:
                gv["weight"].write(i, _np(pw.effective_weight()))
            if "bias" in gv:
                gv["bias"].write(i, _np(pw.bias))
            if "weight_update" in gv:
                gr = pw.weight.grad
                gv["weight_update"].write(i, -_np(gr) if gr is not None else 0.0)
            if "bias_update" in gv:
                gr = pw.bias.grad
                gv["bias_update"].write(i, -_np(gr) if gr is not None else 0.0)
            if "weight_update_bp" in gv and f"{name}.weight" in ref_grads:
                gv["weight_update_bp"].write(i, -_np(ref_grads[f"{name}.weight"]))
            if "bias_update_bp" in gv and f"{name}.bias" in ref_grads:
                gv["bias_update_bp"].write(i, -_np(ref_grads[f"{name}.bias"]))
        k = self.spec.samples
        for name in self._populations:
            i, gv = self._append(f"populations/{name}", step)
            if k == 0:
                continue
            for var, source in (
                ("delta", signals.delta),
                ("delta_bp", ref_delta),
                ("rate", signals.rates),
            ):
                if var in gv and name in source:
                    arr = _np(source[name][:k])
                    if arr.shape[0] < k:
                        pad = np.full((k - arr.shape[0], arr.shape[1]), np.nan, np.float32)
                        arr = np.concatenate([arr, pad])
                    gv[var].write(i, arr)
        for gp, values in signals.records.items():
            if gp not in self._grow:
                rule = self.h5.attrs.get("rule", "(unnamed)")
                rule = rule.decode() if isinstance(rule, bytes) else str(rule)
                raise KeyError(
                    f"rule {rule!r} recorded into {gp!r}, which its record_variables() did "
                    "not declare; declare it there (an ExtraVariable per variable)"
                )
            i, gv = self._append(gp, step)
            for var, value in values.items():
                gv[var].write(i, _np(value) if isinstance(value, torch.Tensor) else value)
        self.flush()

    def has(self, group: str, variable: str) -> bool:
        """Whether the recording lays out ``group/variable``."""
        return f"{group}/{variable}" in self.h5

    def extend(self, group: str, dim: str, values: dict[str, Any]) -> int:
        """Append rows along the unlimited dimension ``dim`` of ``group``: every variable
        named in ``values`` gets its rows (all the same number, first axis), the group's
        other variables along ``dim`` grow with fill values.  For ``dim="step"`` the rows'
        steps are ``values["step"]``.  Returns the index of the first new row.  Used by
        families whose records come in batches (spiking runs: spikes, rates, states,
        per-presentation metrics); call :meth:`flush` after a batch."""
        grow = self._grow.get(group) if dim == "step" else self._along.get((group, dim))
        if grow is None:
            raise KeyError(f"the recording has no variables along {dim!r} in {group!r}")
        unknown = sorted(set(values) - set(grow))
        if unknown:
            raise KeyError(f"{group}: no variables {unknown} along {dim!r}; it has {sorted(grow)}")
        arrays = {k: np.asarray(v) for k, v in values.items()}
        sizes = {a.shape[0] for a in arrays.values()}
        if len(sizes) != 1:
            raise ValueError(f"{group}: rows of different lengths {sorted(sizes)} along {dim!r}")
        k = sizes.pop()
        n = self._count[group] if dim == "step" else next(iter(grow.values())).shape[0]
        for name, ds in grow.items():
            ds.resize(n + k, axis=0)
            if name in arrays and k:
                ds[n : n + k] = arrays[name]
        if dim == "step":
            self._count[group] = n + k
        return n

    def put(self, group: str, step: int, values: dict[str, Any]) -> None:
        """Write ``values`` into the row of ``group`` recorded at ``step`` (which must
        exist), e.g. a quantity known only after the row was appended."""
        steps = self._grow[group]["step"][: self._count[group]]
        rows = np.flatnonzero(steps == step)
        if not rows.size:
            raise KeyError(f"{group}: no record at step {step}")
        for name, value in values.items():
            self._grow[group][name][int(rows[-1])] = value

    def annotate(self, path: str, **attrs: Any) -> None:
        """Set attributes (e.g. ``units``, ``long_name``) of a group or variable."""
        obj = self.h5[path]
        for k, v in attrs.items():
            obj.attrs[k] = _to_attr(v)

    def flush(self) -> None:
        """Write everything to disk, so a killed run keeps every record so far."""
        self.h5.flush()

    def close(self) -> None:
        if not self.closed:
            self.h5.close()
            self.closed = True

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _growing(group) -> dict[str, list[str]]:
    """``{unlimited dimension: names of the datasets growing along it}`` of an h5netcdf
    group (a dimension without a variable of its name has a dimension-scale dataset)."""
    out: dict[str, list[str]] = {}

    def unlimited(dim: str) -> bool:
        g = group
        while dim not in g.dimensions and g.parent is not None and g.parent is not g:
            g = g.parent
        return dim in g.dimensions and g.dimensions[dim].isunlimited()

    for name, var in group.variables.items():
        if var.dimensions and unlimited(var.dimensions[0]):
            out.setdefault(var.dimensions[0], []).append(name)
    for name, dim in group.dimensions.items():
        if dim.isunlimited() and name not in group.variables:
            out.setdefault(name, []).append(name)
    return out


class _Row:
    """Appends rows to one HDF5 dataset through h5py's low-level API (the high-level
    ``dataset[i] = x`` costs ~0.2 ms of selection bookkeeping per call)."""

    __slots__ = ("ds", "shape", "dtype", "mspace")

    def __init__(self, ds: h5py.Dataset):
        self.ds = ds
        self.shape = ds.shape[1:]
        self.dtype = ds.dtype
        self.mspace = h5py.h5s.create_simple((1, *self.shape)) if self.shape else None

    def grow(self, n: int) -> None:
        self.ds.id.set_extent((n, *self.shape))

    def write(self, i: int, value) -> None:
        arr = np.ascontiguousarray(np.broadcast_to(np.asarray(value, dtype=self.dtype), self.shape))
        fspace = self.ds.id.get_space()
        fspace.select_hyperslab((i, *([0] * len(self.shape))), (1, *self.shape))
        mspace = self.mspace if self.mspace is not None else h5py.h5s.create_simple((1,))
        self.ds.id.write(mspace, fspace, arr.reshape((1, *self.shape)))


_LONG_NAMES = {
    "weight": "weight W (post x pre) before this step's update",
    "bias": "bias b before this step's update",
    "weight_update": "rule's update per unit learning rate, -g_rule",
    "weight_update_bp": "shadow backprop update for the same batch and weights, -dL/dW",
    "bias_update": "rule's bias update per unit learning rate, -g_rule",
    "bias_update_bp": "shadow backprop bias update, -dL/db",
    "delta": "rule's teaching signal per sample (~ dl/du)",
    "delta_bp": "backprop teaching signal per sample, dl/du",
    "rate": "rate r = f(u) per sample",
}
