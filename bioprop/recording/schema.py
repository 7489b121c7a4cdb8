"""What a recording holds and how its file is laid out before the first record.

:class:`Record` (what to record, where, how often), :class:`ExtraVariable` (a variable a
rule adds), the standard variables, and :func:`lay_out`, which creates the whole file —
groups, dimensions, variables, provenance and the committed-rows counter — with h5netcdf
(valid NetCDF4, HDF5 1.10 format so that it can be written in SWMR mode).  ``lay_out`` is
called on a temporary path that is then renamed (:func:`bioprop.recording.files.atomic_write`),
so a run killed while laying out never leaves a half-made file under the recording's name.

The counter ``/committed_rows`` has one entry per (group, growing dimension); its attribute
``rows_of`` (JSON) lists, in the same order, ``[group, dimension, [variables...]]``.  Rows
past a group's count belong to a record that was not completed and are ignored by
:func:`bioprop.load`.
"""

from __future__ import annotations

import io
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5netcdf
import numpy as np

from bioprop.recording.lock import CONVENTIONS
from bioprop.recording.provenance import to_attr as _provenance_attr

__all__ = [
    "Record",
    "ExtraVariable",
    "VARIABLES",
    "PATHWAY_VARIABLES",
    "POPULATION_VARIABLES",
    "COUNTER",
    "LIBVER",
    "lay_out",
    "to_attr",
    "pathway_group",
    "population_group",
]

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
COUNTER = "committed_rows"
#: HDF5 format bounds: 1.10 is the oldest that supports SWMR writing
LIBVER = ("v110", "v110")

LONG_NAMES = {
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


def to_attr(v: Any):
    """A value as an attribute (:func:`bioprop.recording.provenance.to_attr`), strings as
    plain ``str`` (h5py cannot store numpy's fixed-width unicode)."""
    return str(v) if isinstance(v, str) else _provenance_attr(v)


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
        The HDF5 file to write.  An existing file there is replaced only if bioprop wrote it
        (a recording) or it is empty; anything else is refused.
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
    background
        Store and commit each record on a writer thread while training goes on (at most
        one record in flight; a kill can lose that one, never part of a record).  False:
        every record is committed before training continues.
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
    background: bool = True

    def __post_init__(self):
        if not isinstance(self.path, (str, os.PathLike)) or not str(self.path):
            raise TypeError(f"Record(path=...) must be a file path, got {self.path!r}")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise ValueError(f"Record(every=...) must be a positive integer, got {self.every!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int):
            raise TypeError(f"Record(samples=...) must be an integer, got {self.samples!r}")
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


def pathway_group(parent, name: str, pw) -> Any:
    """Create ``parent/name`` for pathway ``pw``: its description as attributes, an
    unlimited ``step`` dimension with a ``step`` variable, and ``post``/``pre``
    dimensions of the weight's shape.  Shared by every recorder."""
    n_post, n_pre = pw.shape
    g = parent.create_group(name)
    for k, v in pw.describe().items():
        g.attrs[k] = to_attr(v)
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
        g.attrs[k] = to_attr(v)
    g.attrs["is_input"] = int(name == circuit.input)
    g.attrs["is_output"] = int(name == circuit.output)
    return g


@dataclass
class Layout:
    """The choices of one recorder: groups, variables, reference roles, extras."""

    spec: Record
    circuit: Any
    pathways: list[str]
    populations: list[str]
    variables: set[str]
    reference_roles: tuple[str, ...]
    extra: dict[str, dict[str, ExtraVariable]]


def lay_out(path: Path, layout: Layout, attrs: dict[str, Any]) -> None:
    """Create the recording at ``path`` with every group and variable and no record.

    The file is built in memory and written with one plain ``write``: a full disk then
    fails as an ``OSError`` of Python's, never inside HDF5 (whose failed close would leave
    the file open until a crash at exit).  The groups and variables (everything but the
    root's attributes) come from :func:`skeleton`, built once per process for each layout:
    h5netcdf takes ~70 ms to create a small circuit's thirty variables, which a sweep's
    every run (or the bench's every epoch) would pay again; adding the attributes to a
    copy of the built image takes ~4 ms."""
    root = {
        **attrs,
        **layout.spec.attrs,
        "Conventions": CONVENTIONS,
        "record_every": layout.spec.every,
    }
    image = _with_root_attrs(skeleton(layout), root)
    with open(path, "wb") as fh:
        fh.write(image)


#: built skeletons by layout key, most recently used last (at most IMAGE_CACHE_SIZE)
_SKELETONS: OrderedDict[str, bytes] = OrderedDict()
_SKELETONS_LOCK = threading.Lock()
IMAGE_CACHE_SIZE = 16


def layout_key(lay: Layout) -> str:
    """Everything the skeleton depends on, as a string: two layouts with the same key lay
    out the same groups, dimensions, variables and attributes below the root."""
    c = lay.circuit
    pathways = [
        (n, tuple(c.pathways[n].shape), sorted(c.pathways[n].describe().items()))
        for n in lay.pathways
    ]
    populations = [
        (n, sorted(c.populations[n].describe().items()), n == c.input, n == c.output)
        for n in lay.populations
    ]
    extra = [(gp, sorted(vs.items())) for gp, vs in lay.extra.items()]
    return repr(
        (
            pathways,
            populations,
            sorted(lay.variables),
            tuple(lay.reference_roles),
            lay.spec.samples,
            extra,
        )
    )


def skeleton(lay: Layout) -> bytes:
    """The image of the recording laid out for ``lay`` without root attributes (cached per
    :func:`layout_key`; the cache holds the last :data:`IMAGE_CACHE_SIZE` layouts)."""
    key = layout_key(lay)
    with _SKELETONS_LOCK:
        image = _SKELETONS.get(key)
    if image is None:
        image = _build(lay)  # outside the lock: two threads may both build; both are right
    with _SKELETONS_LOCK:  # recorders of a threaded sweep worker share the cache
        _SKELETONS[key] = image
        _SKELETONS.move_to_end(key)
        while len(_SKELETONS) > IMAGE_CACHE_SIZE:
            _SKELETONS.popitem(last=False)
    return image


def _with_root_attrs(image: bytes, attrs: dict[str, Any]) -> bytes:
    """A copy of ``image`` with the root attributes ``attrs`` (written by h5netcdf)."""
    buf = io.BytesIO(image)
    with h5netcdf.File(buf, "r+", libver=LIBVER) as f:
        for k, v in attrs.items():
            f.attrs[k] = to_attr(v)
    return buf.getvalue()


def _build(layout: Layout) -> bytes:
    """The bytes of the laid-out recording (HDF5's in-memory "core" driver)."""
    with h5netcdf.File("skeleton.h5", "w", libver=LIBVER, driver="core", backing_store=False) as f:
        _standard(f, layout)
        _extra(f, layout.extra)
        rows_of = []
        for gp in _groups(f):
            for dim, names in _growing(f[gp] if gp else f).items():
                rows_of.append([gp, dim, names])
        f.dimensions["growing"] = len(rows_of)
        v = f.create_variable(COUNTER, ("growing",), "i8", fillvalue=0)
        v[...] = np.zeros(len(rows_of), np.int64)
        v.attrs["long_name"] = (
            "rows of each (group, growing dimension) that belong to completed records; "
            "rows past it are ignored by readers (written last, after the rows)"
        )
        v.attrs["rows_of"] = json.dumps(rows_of)
        f.flush()
        f._h5file.flush()
        return f._h5file.id.get_file_image()


def _standard(f, lay: Layout) -> None:
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
    for name in lay.pathways:
        pw = lay.circuit.pathways[name]
        n_post, n_pre = pw.shape
        g = pathway_group(pws, name, pw)
        mat = [v for v in ("weight", "weight_update", "weight_update_bp") if v in lay.variables]
        if not pw.plastic:
            mat = [v for v in mat if v == "weight"]
        if pw.role not in lay.reference_roles:
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
                if v in lay.variables and needs in mat:
                    g.create_variable(
                        v, ("step", "post"), "f4", chunks=(1, n_post), fillvalue=np.nan
                    )
        for vname, v in g.variables.items():
            if vname != "step":
                v.attrs["long_name"] = LONG_NAMES[vname]
    pops = f.create_group("populations")
    k = lay.spec.samples
    for name in lay.populations:
        pop = lay.circuit.populations[name]
        g = population_group(pops, name, lay.circuit)
        g.dimensions["step"] = None
        g.dimensions["sample"] = k
        g.dimensions["neuron"] = pop.size
        g.create_variable("step", ("step",), "i8", chunks=(1024,))
        for v in POPULATION_VARIABLES:
            if v in lay.variables and k > 0:
                if v != "rate" and name == lay.circuit.input:
                    continue
                g.create_variable(
                    v, ("step", "sample", "neuron"), "f4", chunks=(1, k, pop.size), fillvalue=np.nan
                )
                g.variables[v].attrs["long_name"] = LONG_NAMES[v]


def _extra(f, extra: dict[str, dict[str, ExtraVariable]]) -> None:
    """Lay out the rule-specific variables declared by ``Rule.record_variables``."""
    for gp, variables in extra.items():
        g = f
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
                v.attrs[k] = to_attr(val)


def _groups(f) -> list[str]:
    """Every group path of an h5netcdf file ('' for the root), parents first."""
    out = [""]

    def visit(g, prefix: str) -> None:
        for name, child in g.groups.items():
            p = f"{prefix}/{name}" if prefix else name
            out.append(p)
            visit(child, p)

    visit(f, "")
    return out


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
