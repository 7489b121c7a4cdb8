"""Tasks: a dataset plus the circuit and training budget that go with it.

``bioprop compare --task NAME`` runs every rule on a task's circuit with the
same initial weights and data order.  ``quick`` budgets finish in seconds
(used by the tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bioprop import rules as _rules
from bioprop.core import init as _init
from bioprop.core.circuit import Circuit
from bioprop.data.base import Dataset

__all__ = ["Task", "get", "names", "describe", "register"]


@dataclass
class Task:
    """Everything ``compare`` needs to run a rule on a problem.

    Attributes
    ----------
    load
        ``load(seed, quick) -> Dataset``.
    sizes, activation, output_activation, init, bias
        The layered circuit (see :meth:`Circuit.layered`).
    loss
        ``"mse"`` or ``"cross-entropy"``.
    optimizer
        Default optimizer spec; ``rule_optimizer`` overrides it per rule
        (e.g. node perturbation needs a smaller learning rate).
    rule_options
        Hyper-parameters passed to a rule's constructor, per rule name (e.g. the
        scale of fa's feedback weights, ``{"fa": {"feedback_init": uniform(0.25)}}``).
    epochs, batch_size, record_every
        Training budget and recording schedule; ``quick_*`` for ``--quick``.
    circuits
        Builders ``seed -> Circuit`` of further circuit kinds the task's architecture can
        take (e.g. ``"settling"`` for equilibrium propagation, ``"recurrent"``,
        ``"spiking"``); the layered circuit of ``sizes`` is always available unless
        ``layered=False``.
    kind_options, quick_kind_options
        ``bioprop.train`` options for circuits of a kind (``{"recurrent": {"steps": 3000}}``),
        and their overrides under ``--quick``.
    """

    name: str
    description: str
    load: Callable[[int, bool], Dataset]
    sizes: list[int]
    activation: str = "tanh"
    output_activation: str | None = None
    init: _init.Init | str | None = None
    bias: bool = True
    loss: str = "mse"
    optimizer: Any = ("sgd", {"lr": 0.01})
    rule_optimizer: dict[str, Any] = field(default_factory=dict)
    rule_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    epochs: int = 1
    batch_size: int = 1
    record_every: int = 100
    evaluate_on_record: bool = True
    quick_epochs: int = 1
    quick_max_steps: int | None = 200
    reference: str = ""
    circuits: dict[str, Callable[[int], Circuit]] = field(default_factory=dict)
    kind_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    quick_kind_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    layered: bool = True
    default_rules: tuple[str, ...] = ()
    #: applied to every new layered circuit (e.g. kickback's ``make_coherent`` initial signs)
    prepare: Callable[[Circuit], Circuit] | None = None

    def kinds(self) -> list[str]:
        """The circuit kinds this task can build."""
        return (["layered"] if self.layered else []) + [k for k in self.circuits if k != "layered"]

    def kind_for(self, rule: str) -> str:
        """The circuit kind ``rule`` runs on in this task; refuses a rule that runs on no
        kind this task builds, naming the tasks it can run on."""
        kinds = _rules.kinds_of(rule)
        if not kinds:
            _rules.get(rule)  # raises: unknown rule, with the registered names
        for k in kinds:
            if k in self.kinds():
                return k
        able = [t.name for t in _TASKS.values() if set(kinds) & set(t.kinds())]
        raise ValueError(
            f"rule {rule!r} trains {' or '.join(kinds)} circuits, and task {self.name!r} "
            f"builds {' and '.join(self.kinds())} circuits only; tasks rule {rule!r} can run "
            f"on: {', '.join(able) or 'none registered'}"
        )

    def circuit(self, seed: int, kind: str = "layered") -> Circuit:
        """A fresh circuit of ``kind`` with the task's architecture and initial weights of
        ``seed``."""
        if kind != "layered" or not self.layered:
            if kind not in self.circuits:
                raise ValueError(
                    f"task {self.name!r} builds {' and '.join(self.kinds())} circuits, not {kind}"
                )
            return self.circuits[kind](seed)
        c = Circuit.layered(
            self.sizes,
            activation=self.activation,
            output_activation=self.output_activation,
            init=self.init,
            bias=self.bias,
            seed=seed,
        )
        return self.prepare(c) if self.prepare is not None else c

    def optimizer_for(self, rule: str) -> Any:
        return self.rule_optimizer.get(rule, self.optimizer)

    def train_options(self, kind: str, rule: str, quick: bool = False) -> dict[str, Any]:
        """The options ``compare`` passes to :func:`bioprop.train` for ``rule`` on this
        task's ``kind`` circuit (budget, loss, optimizer, family options)."""
        if kind in ("layered", "settling"):
            opts: dict[str, Any] = {
                "loss": self.loss,
                "epochs": self.quick_epochs if quick else self.epochs,
                "batch_size": self.batch_size,
                "max_steps": self.quick_max_steps if quick else None,
            }
        else:
            opts = {}
        opts["optimizer"] = self.optimizer_for(rule)
        opts.update(self.kind_options.get(kind, {}))
        if quick:
            opts.update(self.quick_kind_options.get(kind, {}))
        return opts

    def rule(self, name: str, kind: str | None = None) -> _rules.Rule:
        """A new instance of rule ``name`` (for circuits of ``kind``, by default the kind
        this task runs it on) with this task's options for it."""
        kind = kind or self.kind_for(name)
        return _rules.get(name, kind=kind, **self.rule_options.get(name, {}))


_TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    _TASKS[task.name] = task
    return task


def get(name: str | Task) -> Task:
    """A task by name (or a :class:`Task`, returned as is); unknown names get an error
    listing the valid ones."""
    if isinstance(name, Task):
        return name
    try:
        return _TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; available tasks: {', '.join(names())}") from None


def names() -> list[str]:
    return list(_TASKS)


def describe() -> dict[str, str]:
    return {n: t.description for n, t in _TASKS.items()}


# the built-in tasks register themselves (imported last: they use Task and register)
from bioprop.experiments import catalog as _catalog  # noqa: E402, F401
