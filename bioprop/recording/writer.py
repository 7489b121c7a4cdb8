"""Recordings: NetCDF4-valid HDF5 files written record by record, crash-consistent.

Layout (see ``docs/recordings.md``)::

    /                       attrs: provenance (rule, hyper-parameters, seed, versions, ...)
    /metrics                step (unlimited): epoch, loss
    /pathways/<name>        step, post, pre: weight, bias, weight_update, weight_update_bp, ...
    /populations/<name>     step, sample, neuron: delta, delta_bp, rate
    /committed_rows         rows of each group that belong to completed records

Every group has its own unlimited ``step`` dimension and ``step`` coordinate, so groups may
be recorded on their own schedules.  How a record is made all-or-nothing and how a killed
writer's file stays readable is in :mod:`bioprop.recording.rows`; how the file is laid out
(atomically, before the first record) in :mod:`bioprop.recording.schema`; one writer per
recording, and never over a file bioprop did not write, in :mod:`bioprop.recording.lock`.
Nothing of the recording is held in memory beyond the current record.

``weight_update`` is the rule's proposed change per unit learning rate, −ĝ (the
negative of what the rule wrote into ``.grad``); ``weight_update_bp`` is −∂L/∂W of
the shadow backprop reference for the same batch and weights.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bioprop.core.circuit import Circuit
from bioprop.recording.files import atomic_write
from bioprop.recording.lock import WriterLock, check_replaceable, is_recording
from bioprop.recording.rows import Rows
from bioprop.recording.schema import (
    PATHWAY_VARIABLES,
    POPULATION_VARIABLES,
    VARIABLES,
    ExtraVariable,
    Layout,
    Record,
    lay_out,
    pathway_group,
    population_group,
    to_attr,
)
from bioprop.recording.superblock import clear_write_flags
from bioprop.rules.contract import Signals
from bioprop.rules.reference import Reference

__all__ = [
    "Record",
    "Recorder",
    "ExtraVariable",
    "VARIABLES",
    "PATHWAY_VARIABLES",
    "POPULATION_VARIABLES",
    "pathway_group",
    "population_group",
]


def _np(t: torch.Tensor, copy: bool = False) -> np.ndarray:
    """``t`` as float32 numpy; ``copy`` for a record written after training moved on."""
    return t.detach().to("cpu", torch.float32, copy=copy).numpy()


#: one record's values: per group, in order, its variables' values
Snapshot = list[tuple[str, dict[str, Any]]]


class Recorder:
    """Writes :class:`Record` s of a circuit under training to an HDF5 file.

    Use as a context manager; :meth:`close` is idempotent.  ``mode="a"`` reopens an existing
    recording to continue it (after a resume), dropping records later than
    ``truncate_after``.  ``reference_roles``: the pathway roles that get the shadow backprop
    reference ``weight_update_bp`` (feedforward only by default; recurrent circuits add
    ``"lateral"``, whose full-BPTT gradient exists).

    Raises
    ------
    RecordingLockedError
        Another process writes the same path (the message names its pid, host and start).
    FileExistsError, IsADirectoryError
        The path holds something bioprop did not write; it is left untouched.
    RecordingFullError
        (an ``OSError``, from :meth:`write`/:meth:`flush`) the disk is full; the records
        committed before stay readable and the recorder takes no more writes.

    With ``spec.background`` (the default) :meth:`write` takes a copy of the record's values
    on the caller's thread and a writer thread stores and commits it while training goes
    on; at most one record is in flight (the next :meth:`write` first waits for it), and
    every other method waits for it before touching the file, so a checkpoint or
    :meth:`close` finds every record committed.  A kill can lose the record in flight —
    never part of one — and an error of the writer thread is raised by the next call.
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
        if mode not in ("w", "a"):
            raise ValueError(f"Recorder mode must be 'w' or 'a', got {mode!r}")
        self.spec = spec
        self.reference_roles = tuple(reference_roles)
        self.circuit = circuit
        self.extra = extra or {}
        self._vars = set(spec.variables) if spec.variables is not None else set(VARIABLES)
        all_pw = list(circuit.pathways)
        all_pop = list(circuit.order())
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
        self.closed = True
        self.lock = WriterLock(path).acquire()  # before anything is created or truncated
        try:
            appending = mode == "a" and path.exists()
            if appending:
                if not is_recording(path):
                    raise FileExistsError(
                        f"cannot continue {path}: it is not a bioprop recording; start a new one"
                    )
                clear_write_flags(path)  # left by a killed writer; we hold the lock
            else:
                check_replaceable(path)
                _remove_stale_temporaries(path)
                layout = Layout(
                    spec,
                    circuit,
                    self._pathways,
                    self._populations,
                    self._vars,
                    self.reference_roles,
                    self.extra,
                )
                atomic_write(path, lambda tmp: lay_out(tmp, layout, attrs or {}))
            self.rows = Rows(path)
            self.h5 = self.rows.h5
            if appending and truncate_after is not None:
                self.rows.truncate_after(truncate_after)
        except BaseException:
            self.lock.release()
            raise
        self.closed = False
        self._this_record: dict[str, int] = {}
        self._buffers: dict[tuple[str, str], torch.Tensor] = {}
        self.background = spec.background
        self._writer: ThreadPoolExecutor | None = None
        self._in_flight: Future | None = None

    # -- writing ---------------------------------------------------------------------------
    def _append(self, gp: str, step: int) -> tuple[int, dict]:
        """The row of group ``gp`` for the record being written (grown on first use)."""
        if gp in self._this_record:
            return self._this_record[gp], self.rows.rows[(gp, "step")]
        key = (gp, "step")
        i = self.rows.grow(key)
        rows = self.rows.rows[key]
        rows["step"].write(i, np.asarray(step, dtype=np.int64))
        self.rows.advance(key)
        self._this_record[gp] = i
        return i, rows

    def write(
        self,
        step: int,
        epoch: int,
        signals: Signals,
        reference: Reference | None = None,
        evaluation: dict[str, float] | None = None,
    ) -> None:
        """Append one record: the circuit's current weights, the rule's ``.grad`` and
        ``signals``, and the family's exact ``reference`` for the same batch.  The record
        is committed all groups at once — before this returns, or (``background``) by the
        writer thread while training goes on; if it fails half-way none of it is."""
        # a bounded queue: at most one record in flight — and the snapshot's buffers, which
        # the record in flight is written from, are free again once it is committed
        self._wait()
        snapshot = self._snapshot(epoch, signals, reference, evaluation)
        if not self.background:
            self._commit_record(step, snapshot)
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="bioprop-recorder")
        self._in_flight = self._writer.submit(self._commit_record, step, snapshot)

    def _wait(self) -> None:
        """Wait for the record in flight; raise its error, if it failed."""
        pending, self._in_flight = self._in_flight, None
        if pending is not None:
            pending.result()

    def _commit_record(self, step: int, snapshot: Snapshot) -> None:
        """Store ``snapshot`` as the record of ``step`` and commit it (all or nothing)."""
        self._this_record = {}
        try:
            for gp, values in snapshot:
                i, gv = self._append(gp, step)
                for var, value in values.items():
                    gv[var].write(i, value)
        except Exception as exc:
            self.rows.rollback()
            err = self.rows.fail(exc)
            if err is exc:
                raise
            raise err from exc
        self.rows.commit()

    def _snapshot(self, epoch, signals, reference, evaluation) -> Snapshot:
        """The record's values, per group in writing order: the large ones are copied into
        this recorder's buffers (:meth:`_buffer`), so training may move on."""
        ref_grads, ref_delta = ({}, {}) if reference is None else (reference.grads, reference.delta)
        out: Snapshot = []
        have = self.rows.rows
        metrics = {"epoch": epoch, "loss": float(signals.loss)}
        gv = have[("metrics", "step")]
        metrics.update({f"test_{k}": v for k, v in (evaluation or {}).items() if f"test_{k}" in gv})
        out.append(("metrics", metrics))
        for name in self._pathways:
            pw = self.circuit.pathways[name]
            gp = f"pathways/{name}"
            gv, values = have[(gp, "step")], {}
            if "weight" in gv:
                values["weight"] = self._buffer(gp, "weight", pw.effective_weight())
            if "bias" in gv:
                values["bias"] = self._buffer(gp, "bias", pw.bias)
            for var, param in (("weight_update", pw.weight), ("bias_update", pw.bias)):
                if var in gv:  # −ĝ; a rule that left no update: a row of zeros
                    g = param.grad
                    values[var] = 0.0 if g is None else self._buffer(gp, var, g, negate=True)
            for var, key in (("weight_update_bp", "weight"), ("bias_update_bp", "bias")):
                if var in gv and f"{name}.{key}" in ref_grads:
                    values[var] = self._buffer(gp, var, ref_grads[f"{name}.{key}"], negate=True)
            out.append((gp, values))
        k = self.spec.samples
        for name in self._populations:
            gp = f"populations/{name}"
            gv, values = have[(gp, "step")], {}
            sources = (("delta", signals.delta), ("delta_bp", ref_delta), ("rate", signals.rates))
            for var, source in sources if k else ():
                if var in gv and name in source:
                    arr = self._buffer(gp, var, source[name][:k])
                    if arr.shape[0] < k:
                        pad = np.full((k - arr.shape[0], arr.shape[1]), np.nan, np.float32)
                        arr = np.concatenate([arr, pad])
                    values[var] = arr
            out.append((gp, values))
        for gp, values in signals.records.items():
            if (gp, "step") not in have:
                rule = self.h5.attrs.get("rule", "(unnamed)")
                rule = rule.decode() if isinstance(rule, bytes) else str(rule)
                raise KeyError(
                    f"rule {rule!r} recorded into {gp!r}, which its record_variables() did "
                    "not declare; declare it there (an ExtraVariable per variable)"
                )
            out.append((gp, {var: _value(v, self.background) for var, v in values.items()}))
        return out

    def _buffer(self, group: str, var: str, t: torch.Tensor, negate: bool = False) -> np.ndarray:
        """``t`` (``−t`` with ``negate``) as float32 numpy, copied into this recorder's
        buffer for ``group/var``.  One buffer per variable, reused record after record
        (the record written from it is committed before the next snapshot): no allocation,
        and no fresh pages to fault in, per record."""
        t = t.detach()
        buf = self._buffers.get((group, var))
        if buf is None or buf.shape != t.shape:
            buf = self._buffers[(group, var)] = torch.empty(t.shape, dtype=torch.float32)
        if negate and t.device.type == "cpu" and t.dtype == torch.float32:
            torch.neg(t, out=buf)
        else:
            buf.copy_(t)
            if negate:
                buf.neg_()
        return buf.numpy()

    def has(self, group: str, variable: str) -> bool:
        """Whether the recording lays out ``group/variable``."""
        self._wait()
        return f"{group}/{variable}" in self.h5

    def extend(self, group: str, dim: str, values: dict[str, Any]) -> int:
        """Append rows along the unlimited dimension ``dim`` of ``group``: every variable
        named in ``values`` gets its rows (all the same number, first axis), the group's
        other variables along ``dim`` grow with fill values.  For ``dim="step"`` the rows'
        steps are ``values["step"]``.  Returns the index of the first new row.  Used by
        families whose records come in batches (spiking runs: spikes, rates, states,
        per-presentation metrics); the rows are committed by :meth:`flush`."""
        self._wait()
        key = (group, dim)
        grow = self.rows.rows.get(key)
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
        try:
            n = self.rows.grow(key, k)
            for name, arr in arrays.items():
                if k:
                    grow[name].write_rows(n, arr)
        except Exception as exc:
            err = self.rows.fail(exc)
            if err is exc:
                raise
            raise err from exc
        self.rows.advance(key, k)
        return n

    def put(self, group: str, step: int, values: dict[str, Any]) -> None:
        """Write ``values`` into the row of ``group`` recorded at ``step`` (which must
        exist), e.g. a quantity known only after the row was appended."""
        self._wait()
        key = (group, "step")
        rows = np.flatnonzero(self.rows.steps(key) == step)
        if not rows.size:
            raise KeyError(f"{group}: no record at step {step}")
        try:
            for name, value in values.items():
                self.rows.rows[key][name].ds[int(rows[-1])] = value
        except Exception as exc:
            err = self.rows.fail(exc)
            if err is exc:
                raise
            raise err from exc

    def annotate(self, path: str, **attrs: Any) -> None:
        """Set attributes (e.g. ``units``, ``long_name``) of a group or variable."""
        self._wait()
        obj = self.h5[path]
        for k, v in attrs.items():
            obj.attrs[k] = to_attr(v)

    def flush(self) -> None:
        """Commit every row written so far and write it to disk (a killed run keeps it)."""
        self._wait()
        self.rows.commit()

    def close(self) -> None:
        """Commit what was written and close the file (idempotent); release the lock."""
        if self.closed:
            return
        self.closed = True
        try:
            try:
                self._wait()  # the record in flight is committed (or its error raised)
            finally:
                if self._writer is not None:
                    self._writer.shutdown()
                self.rows.close()
        finally:
            self.lock.release()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _value(v: Any, copy: bool) -> Any:
    """A rule's recorded value as numpy (a copy when written later) or as given."""
    if isinstance(v, torch.Tensor):
        return _np(v, copy)
    if copy and isinstance(v, np.ndarray):
        return v.copy()
    return v


def _remove_stale_temporaries(path: Path) -> None:
    """Layouts left half-made by a writer killed while laying out (we hold the lock)."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        tmp.unlink(missing_ok=True)
