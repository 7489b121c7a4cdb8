"""A sweep's specification: task, rules, seeds and a grid (or a list) of options.

A spec is a small TOML file (or the same as ``bioprop sweep`` flags)::

    task = "linear"
    rules = ["bp", "fa"]
    seeds = 3                      # or a list of seeds, [0, 5, 7]

    [grid]                         # every combination: one summary dimension per option
    fa.feedback_init = ["uniform(0.05)", "uniform(0.25)"]
    optimizer.lr = [0.05, 0.1, 0.2]

or, instead of ``[grid]``, an explicit list of points (one summary dimension ``point``)::

    [[points]]
    optimizer.lr = 0.1
    fa.feedback_init = "uniform(0.05)"

An option is ``<rule>.<argument>`` (an argument of that rule's constructor, for runs of
that rule only), ``optimizer.<option>`` (an option of the task's ``torch.optim`` optimizer,
or ``<group>_lr``, for every rule trained by one) or ``task.<field>`` (a field of the
:class:`~bioprop.experiments.tasks.Task`, e.g. ``task.batch_size``).  ``validation = 0.2``
holds out 20 % of each run's training set and reports on it instead of the test set (tune
on it; report the test set once, with the chosen options).  A string that reads
like an initialiser call, ``"uniform(0.05)"``, becomes that initialiser.  Everything is
checked here, before any run starts; a mistake is refused with its line and the valid names.
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bioprop.core import init as _init
from bioprop.core import losses as _losses
from bioprop.experiments import tasks as _tasks
from bioprop.rules import registry as _registry
from bioprop.training.optim import OPTIMIZERS

__all__ = ["SweepSpec", "SpecError", "load_spec", "parse_value", "resolve_value", "TASK_OPTIONS"]

TOP_KEYS = (
    "task",
    "rules",
    "seeds",
    "epochs",
    "quick",
    "device",
    "out",
    "workers",
    "scheduler",
    "checkpoint_every",
    "validation",
    "grid",
    "points",
)
#: the Task fields a sweep may set (``task.<field>``)
TASK_OPTIONS = (
    "epochs",
    "batch_size",
    "record_every",
    "activation",
    "output_activation",
    "init",
    "bias",
    "loss",
    "quick_epochs",
    "quick_max_steps",
    "evaluate_on_record",
)
_POSITIVE = ("epochs", "batch_size", "record_every", "quick_epochs", "quick_max_steps")


class SpecError(ValueError):
    """A sweep spec that cannot run; the message names the line (or flag) and what to do."""


def parse_value(text: str) -> Any:
    """A command-line value as TOML reads it (``0.1`` → float, ``true`` → bool), else the
    string itself (``uniform(0.05)``)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text.strip()


def resolve_value(value: Any) -> Any:
    """An option value as the library takes it: ``"uniform(0.05)"`` → ``init.uniform(0.05)``
    (:func:`bioprop.core.init.from_call`); other values unchanged."""
    called = _init.from_call(value) if isinstance(value, str) else None
    return value if called is None else called


@dataclass
class SweepSpec:
    """What to run: every rule × seed × option cell of ``task``.

    ``grid`` maps an option to its values (every combination runs); ``points`` is a list of
    ``{option: value}`` (each point runs).  ``where`` maps spec keys to where they came from
    (``"sweep.toml, line 7"``, ``"--grid optimizer.lr"``), for error messages; ``source``
    names the file (or "the command line").
    """

    task: Any = "linear"
    rules: list[str] | None = None
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    grid: dict[str, list[Any]] = field(default_factory=dict)
    points: list[dict[str, Any]] | None = None
    epochs: int | None = None
    quick: bool = False
    device: str = "cpu"
    out: str | None = None
    workers: int | None = None
    scheduler: str | None = None
    checkpoint_every: int = 100
    validation: float | None = None
    source: str = "the command line"
    where: dict[str, str] = field(default_factory=dict)

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str, where: dict[str, str]) -> SweepSpec:
        spec = cls(source=source, where=dict(where))
        for key, value in raw.items():
            if key not in TOP_KEYS:
                spec.fail(key, f"unknown key {key!r}; valid keys: {', '.join(TOP_KEYS)}")
            if key == "grid":
                spec.grid = _flat_options(value, spec, "grid")
            elif key == "points":
                if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
                    spec.fail("points", "points must be a list of tables: [[points]] ...")
                spec.points = [_flat_options(p, spec, f"points.{i}") for i, p in enumerate(value)]
            elif key == "seeds":
                spec.seeds = value
            else:
                setattr(spec, key, value)
        return spec

    def fail(self, key: str, message: str) -> None:
        """Raise :class:`SpecError` for ``key``, at its line (or flag) when known."""
        raise SpecError(f"{self.where.get(key, self.source)}: {message}")

    # -- what the sweep varies ----------------------------------------------------------

    @property
    def options(self) -> list[str]:
        """The swept options, in the order the spec gives them."""
        if self.points:
            return list(dict.fromkeys(k for p in self.points for k in p))
        return list(self.grid)

    @property
    def dims(self) -> list[str]:
        """The summary's dimensions besides ``rule`` and ``seed``."""
        if self.points:
            return ["point"]
        return list(self.grid)

    def cells(self) -> list[dict[str, Any]]:
        """Every option cell: ``{option: value}`` (and ``"point": i`` for a list)."""
        if self.points:
            return [{**p, "point": i} for i, p in enumerate(self.points)]
        keys = list(self.grid)
        return [
            dict(zip(keys, vals, strict=True)) for vals in itertools.product(*self.grid.values())
        ]

    def identity(self) -> dict[str, Any]:
        """What must not change between a sweep and its ``--resume``."""
        return {
            "task": self.task_obj().name,
            "rules": list(self.rules or []),
            "seeds": [int(s) for s in self.seeds],
            "grid": {k: list(v) for k, v in self.grid.items()},
            "points": self.points,
            "epochs": self.epochs,
            "quick": bool(self.quick),
            "validation": self.validation,
        }

    def task_obj(self) -> _tasks.Task:
        return _tasks.get(self.task)

    # -- checks, all before any run -----------------------------------------------------

    def validate(self, local: bool = True) -> SweepSpec:
        """Check everything a run will use; raises :class:`SpecError` naming the line.

        ``local``: the runs execute on this machine, so a CUDA ``device`` must be usable
        here (for a remote cluster the workers are asked instead, before any run)."""
        from bioprop.training.train import check_device

        try:
            t = _tasks.get(self.task)
        except ValueError as exc:
            self.fail("task", str(exc))
        if self.rules is None:
            from bioprop.experiments.compare import DEFAULT_RULES

            self.rules = list(t.default_rules or DEFAULT_RULES)
        if isinstance(self.rules, str) or not isinstance(self.rules, list) or not self.rules:
            self.fail("rules", f"rules must be a non-empty list of rule names, got {self.rules!r}")
        for r in self.rules:
            if not isinstance(r, str) or not r:
                self.fail("rules", f"rules must be non-empty rule names, got {self.rules!r}")
            if not _registry.kinds_of(r):
                self.fail(
                    "rules", f"unknown rule {r!r}; registered rules: {', '.join(_registry.names())}"
                )
            try:
                t.rule(r, t.kind_for(r))
            except (ValueError, TypeError) as exc:
                self.fail("rules", str(exc))
        if len(set(self.rules)) != len(self.rules):
            self.fail("rules", f"rules listed twice: {self.rules}")
        self._check_seeds()
        for key in ("epochs", "checkpoint_every", "workers"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                self.fail(key, f"{key} must be a positive integer, got {v!r}")
        v = self.validation
        if v is not None:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
                self.fail("validation", f"validation must be a fraction in (0, 1), got {v!r}")
            if any(t.kind_for(r) == "recurrent" for r in self.rules):
                self.fail("validation", "validation splits datasets; sequence tasks have none")
        if not isinstance(self.quick, bool):
            self.fail("quick", f"quick must be true or false, got {self.quick!r}")
        try:
            if local:
                check_device(self.device)
            elif not isinstance(self.device, str) or torch.device(self.device).type not in (
                "cpu",
                "cuda",
            ):
                raise ValueError(f"device {self.device!r}: bioprop runs on 'cpu' or 'cuda[:N]'")
        except (ValueError, RuntimeError) as exc:
            self.fail("device", str(exc))
        if self.grid and self.points:
            self.fail("points", "give a [grid] or a list of [[points]], not both")
        if self.points is not None and not self.points:
            self.fail("points", "the list of points is empty; give at least one [[points]]")
        if "grid" in self.where and not self.grid and not self.points:
            self.fail("grid", "the grid is empty; give at least one option, e.g. optimizer.lr")
        for key, values in self.grid.items():
            if not isinstance(values, list):
                values = self.grid[key] = [values]
            if not values:
                self.fail(key, f"grid option {key!r} has no values; give at least one")
            self._check_option(t, key, values)
        for i, p in enumerate(self.points or []):
            if set(p) != set(self.options):
                self.fail(f"points.{i}", f"every point must set the same options {self.options}")
            for key, v in p.items():
                self._check_option(t, key, [v], f"points.{i}.{key}")
        return self

    def _check_seeds(self) -> None:
        s = self.seeds
        if isinstance(s, int) and not isinstance(s, bool):
            if s < 1:
                self.fail("seeds", f"seeds must be a positive integer or a list, got {s!r}")
            self.seeds = list(range(s))
            return
        ok = isinstance(s, list) and s and all(isinstance(x, int) and x >= 0 for x in s)
        if not ok or len(set(s)) != len(s):
            self.fail("seeds", f"seeds must be a count or a list of distinct seeds ≥ 0, got {s!r}")

    def _check_option(self, t: _tasks.Task, key: str, values: list, at: str | None = None) -> None:
        at = at or key
        where = key.split(".", 1)
        namespaces = ["optimizer", "task", *self.rules]
        if len(where) != 2 or not where[1]:
            self.fail(at, f"option {key!r} must read NAMESPACE.NAME, NAMESPACE one of {namespaces}")
        ns, name = where
        for v in values:
            if not isinstance(v, (str, int, float, bool)):
                self.fail(at, f"option {key!r}: values must be numbers, strings or booleans")
            if isinstance(v, float) and not math.isfinite(v):
                self.fail(at, f"option {key!r}: {v!r} is not a finite number")
        if len({repr(v) for v in values}) != len(values):
            self.fail(at, f"option {key!r} lists a value twice: {values}")
        try:
            if ns == "task":
                self._check_task_option(t, name, values)
            elif ns == "optimizer":
                self._check_optimizer_option(t, name, values)
            elif ns in self.rules:
                self._check_rule_option(t, ns, name, values)
            elif _registry.kinds_of(ns):
                raise ValueError(f"rule {ns!r} is not among the sweep's rules {self.rules}")
            else:
                raise ValueError(f"unknown namespace {ns!r}; use one of {namespaces}")
        except (ValueError, TypeError) as exc:
            self.fail(at, f"option {key!r}: {exc}")

    def _check_task_option(self, t: _tasks.Task, name: str, values: list) -> None:
        if name not in TASK_OPTIONS:
            raise ValueError(f"unknown task option; valid: {', '.join(TASK_OPTIONS)}")
        for v in values:
            if name in _POSITIVE and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ValueError(f"{v!r} is not a positive integer")
            if name == "loss":
                _losses.get(v)
            t2 = dataclasses.replace(t, **{name: resolve_value(v)})
            if t2.layered and name in ("activation", "output_activation", "init", "bias"):
                t2.circuit(0, "layered")

    def _check_optimizer_option(self, t: _tasks.Task, name: str, values: list) -> None:
        used = False
        for r in self.rules:
            spec = optimizer_spec(t, r, self.quick)
            if spec is None:
                continue
            used = True
            opt, kwargs = spec
            cls = OPTIMIZERS[opt]
            valid = [
                p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params")
            ]
            if name.endswith("_lr"):
                continue  # a parameter group's rate: checked by the optimizer builder
            if name not in valid:
                raise ValueError(
                    f"unknown option of {opt!r} (the optimizer of rule {r!r}); valid: "
                    f"{', '.join(valid)}, or <group>_lr"
                )
            # per-group rates (``module_lr``, ``input->hidden_lr``) are the builder's, not
            # the torch optimizer's keywords
            plain = {k: a for k, a in kwargs.items() if not k.endswith("_lr")}
            for v in values:
                cls([torch.zeros(1, requires_grad=True)], **{**plain, name: v})
        if not used:
            raise ValueError(f"no rule of {self.rules} is trained by a configurable optimizer")

    def _check_rule_option(self, t: _tasks.Task, rule: str, name: str, values: list) -> None:
        kind = t.kind_for(rule)
        cls = _registry.lookup(rule, kind)
        params = inspect.signature(cls.__init__).parameters
        valid = [p for p, v in params.items() if p != "self" and v.kind not in (v.VAR_POSITIONAL,)]
        if name not in valid and not any(v.kind == v.VAR_KEYWORD for v in params.values()):
            shown = [p for p in valid if params[p].kind != params[p].VAR_KEYWORD]
            raise ValueError(
                f"rule {rule!r} takes no {name!r}; valid: {', '.join(shown) or 'none'}"
            )
        for v in values:
            _registry.get(
                rule, kind=kind, **{**t.rule_options.get(rule, {}), name: resolve_value(v)}
            )


def optimizer_spec(t: _tasks.Task, rule: str, quick: bool) -> tuple[str, dict] | None:
    """``(name, options)`` of the optimizer that trains ``rule`` in ``t``, or None where it is
    not a named ``torch.optim`` one (a spiking rule writes weights itself; a callable)."""
    spec = t.train_options(t.kind_for(rule), rule, quick).get("optimizer")
    if isinstance(spec, str):
        spec = (spec, {})
    if isinstance(spec, tuple) and len(spec) == 2 and spec[0] in OPTIMIZERS:
        return spec[0], dict(spec[1])
    return None


def _flat_options(table: Any, spec: SweepSpec, where: str) -> dict[str, Any]:
    """TOML's dotted keys ``{"fa": {"feedback_init": v}}`` → ``{"fa.feedback_init": v}``."""
    if not isinstance(table, dict):
        spec.fail(where, f"{where.split('.')[0]} must be a table of options")
    out: dict[str, Any] = {}

    def walk(prefix: str, node: dict) -> None:
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else k
            if isinstance(v, dict):
                walk(key, v)
            else:
                out[key] = v

    walk("", table)
    return out


def _locate(text: str, path: str) -> dict[str, str]:
    """``{key: "PATH, line N"}`` for the top-level keys, grid options and points of a TOML text."""
    where: dict[str, str] = {}
    section, point = "", -1
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("[["):
            section = _norm(s.split("#", 1)[0].strip().strip("[] "))
            point += 1
            where.setdefault(f"{section}.{point}", f"{path}, line {n}")
            where.setdefault(section, f"{path}, line {n}")
            continue
        if s.startswith("["):
            section = _norm(s.split("#", 1)[0].strip().strip("[] "))
            where.setdefault(section.split(".")[0], f"{path}, line {n}")
            continue
        if "=" not in s:
            continue
        key = _norm(s.split("=", 1)[0])
        if section.startswith("points"):
            sub = section[len("points") :].lstrip(".")
            where.setdefault(f"points.{point}.{sub + '.' if sub else ''}{key}", f"{path}, line {n}")
        elif section.startswith("grid"):
            sub = section[len("grid") :].lstrip(".")
            where.setdefault(f"{sub + '.' if sub else ''}{key}", f"{path}, line {n}")
        else:
            where.setdefault(key, f"{path}, line {n}")
    return where


def _norm(key: str) -> str:
    return re.sub(r"\s*\.\s*", ".", key.strip()).replace('"', "").replace("'", "")


def load_spec(path: str | Path) -> SweepSpec:
    """Read a TOML sweep spec (not yet validated: see :meth:`SweepSpec.validate`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"no sweep spec at {path}; give a TOML file (see docs/sweeps.md)") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    spec = SweepSpec.from_dict(raw, str(path), _locate(text, str(path)))
    if spec.out is None:
        spec.out = str(Path("runs") / f"sweep-{path.stem}")
    return spec
