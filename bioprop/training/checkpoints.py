"""Checkpoints of the batch loop: written atomically, read without running code, and
continued only by the run that wrote them.

* **Atomic**: the state is serialised in memory, written to a temporary name in the same
  folder, synced and renamed (:func:`bioprop.recording.files.atomic_write`), so a kill leaves
  the old checkpoint or the new one, and a full disk raises an ``OSError`` naming the path.
* **Safe to read**: ``torch.load(..., weights_only=True)`` — tensors and plain data only, so
  a crafted file cannot run code on resume; it is refused with :class:`CheckpointError`.
* **Checked**: a checkpoint stores what its run was (rule, kind and hyper-parameters, the
  circuit, the optimizer with every group's options, loss, batch size, seed, task).  Resume
  compares that with the run asked for and refuses any difference
  (:class:`CheckpointMismatchError`, listing them), except learning rates with
  ``resume="allow-lr-change"``: those are applied, and every resume is noted in the
  recording's ``resumed`` attribute.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from bioprop.recording.files import atomic_write
from bioprop.recording.provenance import timestamp
from bioprop.training.optim import groups_of

__all__ = [
    "FORMAT",
    "RESUME_MODES",
    "CheckpointError",
    "CheckpointMismatchError",
    "check_resume_mode",
    "describe_run",
    "save",
    "read",
    "differences",
    "check_same_run",
    "apply_lrs",
    "note_resume",
]

FORMAT = "bioprop-checkpoint-1"
RESUME_MODES = (False, True, "allow-lr-change")
_STATE = ("circuit", "optimizer", "rule", "step", "epoch", "batch", "history")


class CheckpointError(ValueError):
    """A file given to resume from is not a (safe, readable) bioprop checkpoint."""


class CheckpointMismatchError(ValueError):
    """A checkpoint was written by a different run than the one asked to continue it."""


def check_resume_mode(resume: Any) -> None:
    if not any(resume is m or (isinstance(m, str) and resume == m) for m in RESUME_MODES):
        raise ValueError(f"resume must be False, True or 'allow-lr-change', got {resume!r}")


def describe_run(circuit, rule, optimizer, *, loss: str, batch_size: int, seed: int, task: str):
    """What a checkpoint must agree on with the run that continues it (plain strings and
    numbers: read back with ``weights_only=True``)."""
    return {
        "rule": rule.name,
        "rule_kind": rule.kind,
        "rule_hyperparameters": _json(rule.hyperparameters()),
        "circuit": circuit.describe(),
        "optimizer": type(optimizer).__name__,
        "optimizer_groups": _json(groups_of(optimizer)),
        "loss": loss,
        "batch_size": int(batch_size),
        "seed": int(seed),
        "task": task,
    }


def _json(v: Any) -> str:
    """Canonical JSON; reprs lose their memory addresses (``<... at 0x7f...>``), which
    differ from process to process."""
    return re.sub(r" at 0x[0-9a-fA-F]+", "", json.dumps(v, sort_keys=True, default=repr))


def save(path: str | os.PathLike, state: dict[str, Any], run: dict[str, Any]) -> Path:
    """Write ``state`` (circuit, optimizer, rule, step, epoch, batch, history) and the
    run's description to ``path`` atomically."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "run": run, **state}, buf)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(buf.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, write)


def read(path: str | os.PathLike, map_location=None) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; :class:`CheckpointError` for anything
    that is not one (truncated, another kind of file, or objects beyond tensors and plain
    data — a crafted pickle is refused before any of it runs)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint path {path} is a directory; give a file (e.g. run.pt)")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            raise CheckpointError(
                f"refusing checkpoint {path}: it holds objects other than tensors and plain "
                "data (a crafted or foreign file; loading it could run code); delete it or "
                "pass resume=False"
            ) from None
        raise CheckpointError(_unreadable(path, exc)) from None
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - garbage fails in many ways inside the unpickler
        raise CheckpointError(_unreadable(path, exc)) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a bioprop checkpoint (no format {FORMAT!r}: another torch file, or "
            "one from an older bioprop); delete it or pass resume=False"
        )
    missing = [k for k in (*_STATE, "run") if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; delete it or pass resume=False")
    return state


def _unreadable(path: Path, exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"{path} is not a readable checkpoint (truncated, or another kind of file: {first}); "
        "delete it or pass resume=False"
    )


def differences(stored: dict[str, Any], asked: dict[str, Any]) -> tuple[list[str], list[str]]:
    """``(learning-rate changes, other differences)`` between a checkpoint's run and the
    run asked for, each as sentences ``what: checkpoint → asked``."""
    lr, other = [], []
    for key in sorted(set(stored) | set(asked)):
        if key == "optimizer_groups":
            continue
        a, b = stored.get(key), asked.get(key)
        if a != b:
            other.append(f"{key}: {_short(a)} (checkpoint) vs {_short(b)} (asked)")
    ga = json.loads(stored.get("optimizer_groups", "[]"))
    gb = json.loads(asked.get("optimizer_groups", "[]"))
    if [g.get("name") for g in ga] != [g.get("name") for g in gb]:
        other.append(
            f"optimizer groups: {[g.get('name') for g in ga]} (checkpoint) vs "
            f"{[g.get('name') for g in gb]} (asked)"
        )
        return lr, other
    for x, y in zip(ga, gb, strict=True):
        for k in sorted(set(x) | set(y)):
            if x.get(k) != y.get(k):
                line = (
                    f"{x.get('name')} group {k}: {x.get(k)!r} (checkpoint) vs {y.get(k)!r} (asked)"
                )
                (lr if k == "lr" else other).append(line)
    return lr, other


def check_same_run(
    path: Path, stored: dict[str, Any], asked: dict[str, Any], resume: bool | str
) -> list[str]:
    """Refuse to continue a checkpoint of another run (:class:`CheckpointMismatchError`
    listing every difference); returns the learning-rate changes to apply (only with
    ``resume="allow-lr-change"``)."""
    lr, other = differences(stored, asked)
    if resume != "allow-lr-change":
        other, lr = other + lr, []
    if other:
        hint = ", or pass resume='allow-lr-change' to apply new learning rates"
        raise CheckpointMismatchError(
            f"cannot resume from {path}: it was saved by a different run ("
            + "; ".join(other)
            + "); resume with the same settings or start afresh (resume=False or another "
            "checkpoint path)" + (hint if any(" group lr:" in o for o in other) else "")
        )
    return lr


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def apply_lrs(optimizer: torch.optim.Optimizer, asked: dict[str, Any]) -> None:
    """Set every group's learning rate to the one asked for (after loading the checkpoint's
    optimizer state, which carries the old ones)."""
    for g, want in zip(optimizer.param_groups, json.loads(asked["optimizer_groups"]), strict=True):
        g["lr"] = want["lr"]


def note_resume(recorder, step: int, path: Path, changes: list[str]) -> None:
    """Append this resume (step, time, checkpoint, applied changes) to the recording's
    root attribute ``resumed`` (a JSON list)."""
    if recorder is None:
        return
    old = recorder.h5.attrs.get("resumed", "[]")
    notes = json.loads(old.decode() if isinstance(old, bytes) else str(old))
    notes.append(
        {"step": int(step), "time": timestamp(), "checkpoint": str(path), "changes": changes}
    )
    recorder.annotate("/", resumed=json.dumps(notes))
