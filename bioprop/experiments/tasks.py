"""Tasks: a dataset plus the circuit and training budget that go with it.

``bioprop compare --task NAME`` runs every rule on a task's circuit with the
same initial weights and data order.  ``quick`` budgets finish in seconds
(used by the tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bioprop import data as _data
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


def _linear(seed: int, quick: bool) -> Dataset:
    n_train = 200 if quick else 1500
    return _data.linear_teacher(n_train=n_train, n_test=500, seed=seed)


def _nonlinear(seed: int, quick: bool) -> Dataset:
    n_train = 200 if quick else 5000
    return _data.nonlinear_teacher(n_train=n_train, n_test=1000, seed=seed)


def _image(name: str) -> Callable[[int, bool], Dataset]:
    def load(seed: int, quick: bool) -> Dataset:
        # quick: 2000/1000 samples, or a synthetic stand-in when the files are not on disk
        return _data.load_for_run(name, quick=quick, quick_size=(2000, 1000))

    return load


def _mnist1d(seed: int, quick: bool) -> Dataset:
    return _data.load("mnist1d", n_train=4000, n_test=1000, seed=0)


_RANDOM_FEEDBACK = ("fa", "dfa", "sign-symmetry")
#: Lillicrap et al. 2016 draw the fixed feedback matrix B from U[−0.5, 0.5] (Fig. 1 and the
#: nonlinear supplement), far larger than the forward init U[±0.01]; at the forward init's
#: scale fa's hidden teaching signal is ~50× too small and it looks orders of magnitude worse
_LILLICRAP_FEEDBACK = {r: {"feedback_init": _init.uniform(0.5)} for r in _RANDOM_FEEDBACK}


def _teacher_task(name: str, description: str, load, epochs: int, record_every: int, **fields):
    """Lillicrap et al.'s student-teacher set-up: a 30-20-10 student, squared error,
    per-example SGD at lr 0.01, their feedback scale for fa/dfa/sign-symmetry."""
    return Task(
        name,
        description,
        load,
        [30, 20, 10],
        loss="mse",
        optimizer=("sgd", {"lr": 0.01}),
        rule_options=_LILLICRAP_FEEDBACK,
        epochs=epochs,
        batch_size=1,
        record_every=record_every,
        quick_max_steps=200,
        **fields,
    )


register(
    _teacher_task(
        "linear",
        "Lillicrap et al. 2016 Fig. 1: linear 30-20-10 student of y = T x, per-example updates",
        _linear,
        2,
        100,
        activation="linear",
        init=_init.uniform(0.01),
        bias=False,
        # shallow trains only the read-out of a fixed random 20-unit layer whose activity is
        # ~100× smaller than x (weights U[±0.01]); it needs a correspondingly larger step
        rule_optimizer={
            "node-perturbation": ("sgd", {"lr": 0.003}),
            "shallow": ("sgd", {"lr": 3.0}),
        },
        reference="Lillicrap et al. 2016, Fig. 1a",
    )
)
register(
    _teacher_task(
        "nonlinear",
        "30-20-10 tanh student of a fixed random 30-20-10 tanh teacher",
        _nonlinear,
        5,
        500,
        activation="tanh",
        output_activation="linear",
        init=_init.uniform(0.1),
        rule_optimizer={"node-perturbation": ("sgd", {"lr": 0.002})},
        reference="Lillicrap et al. 2016, Supplementary (nonlinear teacher)",
    )
)
for _name, _desc in (
    ("fashion-mnist", "Fashion-MNIST, 784-1000-10 logistic, squared error on one-hot targets"),
    ("mnist", "MNIST, 784-1000-10 logistic, squared error on one-hot targets (Lillicrap Fig. 2)"),
):
    register(
        Task(
            _name,
            _desc,
            _image(_name),
            [784, 1000, 10],
            activation="logistic",
            init=_init.uniform(0.05),
            loss="mse",
            # lr ≥ 0.5 sends every logistic output to 0 (the all-zero attractor of squared
            # error on one-hot targets) within an epoch here; 0.2 learns steadily
            optimizer=("sgd", {"lr": 0.2, "weight_decay": 1e-6}),
            rule_optimizer={
                "node-perturbation": ("sgd", {"lr": 0.02, "weight_decay": 1e-6}),
                # synthetic-gradient modules at the network's lr 0.2 blow up within 25 steps;
                # at 1e-3 they are stable (a stability choice, not tuned on error)
                **{
                    r: ("sgd", {"lr": 0.2, "weight_decay": 1e-6, "module_lr": 1e-3})
                    for r in ("dni", "cdni", "vfbn")
                },
            },
            # B at the forward init's scale (U[±0.05]) stays ~5x smaller than the trained
            # W of hidden->output (std 0.03 -> 0.14), which slows fa's hidden layer 5-fold
            # and leaves it 1.5-2 points behind bp; U[±0.25] matches the trained scale
            rule_options={r: {"feedback_init": _init.uniform(0.25)} for r in _RANDOM_FEEDBACK},
            epochs=10,
            batch_size=32,
            record_every=500,
            evaluate_on_record=False,
            quick_max_steps=60,
            reference="Lillicrap et al. 2016, Fig. 2a (MNIST: bp 2.4 %, fa 2.1 %, shallow 7.2 %)",
        )
    )
register(
    Task(
        "mnist1d",
        "MNIST-1D (40 features, 10 classes; Greydanus 2020), 40-100-100-10 relu, cross-entropy",
        _mnist1d,
        [40, 100, 100, 10],
        activation="relu",
        output_activation="linear",
        init=_init.kaiming_uniform(2**0.5),
        loss="cross-entropy",
        optimizer=("adam", {"lr": 1e-3}),
        epochs=40,
        batch_size=64,
        record_every=200,
        quick_max_steps=40,
    )
)


def _add_equilibrium_propagation(task_name: str) -> None:
    """Let ``ep`` run on an image task: Scellier & Bengio's settling circuit (784-500-10
    leaky hard-sigmoid, ε = 0.5, 20 free steps), their β with a random sign and persistent
    particles, and their per-layer learning rates (:mod:`bioprop.settling.presets`) at half
    scale, lr = (0.1, 0.05): at the task's batch of 32, the full rates (0.2, 0.1) overshoot
    in the first steps and can leave every output clipped at 0 for good (the synthetic
    stand-in, within 8 steps), while half rates learn as fast on Fashion-MNIST (test error
    after 2 epochs on 20 000 images: 17.0 % vs 17.3 % at full rates).  The layered rules keep
    the task's own circuit; every rule sees the same data order."""
    from bioprop.settling import presets

    t = get(task_name)
    t.circuits["settling"] = presets.circuit
    t.rule_options["ep"] = presets.rule_options()
    t.rule_optimizer["ep"] = presets.optimizer(scale=0.5)


for _name in ("fashion-mnist", "mnist"):
    _add_equilibrium_propagation(_name)


def _add_recurrent_task(
    task_name: str, presets, kind_options: dict, record_every: int, reference: str, **more
) -> None:
    """Register a task of recurrent circuits built by a family's ``presets`` module (its
    ``DESCRIPTIONS``, ``load``, ``circuit``, ``quick_kind_options`` and ``RULES``)."""
    register(
        Task(
            task_name,
            presets.DESCRIPTIONS[task_name],
            presets.load(task_name),
            [],
            layered=False,
            circuits={"recurrent": presets.circuit(task_name)},
            kind_options={"recurrent": kind_options},
            quick_kind_options={"recurrent": presets.quick_kind_options()},
            default_rules=presets.RULES,
            record_every=record_every,
            evaluate_on_record=False,
            reference=reference,
            **more,
        )
    )


def _add_sequence_task(task_name: str) -> None:
    """Copy and repeat copy for the recurrent rules (bptt, dni, dni-aux; Jaderberg et al.
    2017 §3.2): an LSTM circuit, a sequence task with its curriculum, the paper's budget
    (:mod:`bioprop.recurrent.presets`).  ``final_loss`` is bits per character."""
    from bioprop.recurrent import presets

    _add_recurrent_task(
        task_name,
        presets,
        presets.kind_options(),
        250,
        "Jaderberg et al. 2017, Table 2 (max N modelled)",
        rule_options=presets.rule_options(),
    )


for _name in ("copy", "repeat-copy"):
    _add_sequence_task(_name)


def _spiking_fashion_mnist() -> Task:
    """Spiking feedback alignment on Fashion-MNIST 14×14 (``spiking-fa``, brian2), beside
    its layered rate twin (``fa`` with the very same B, and ``bp``) on the same samples in
    the same order: the circuit and data are :mod:`bioprop.spiking.presets` (imported on
    use: brian2 loads only when the task runs); the budget is the experiment's (4000
    training samples online, 100 ms each, test on 500 images every 1000)."""
    from bioprop.core.init import uniform

    def spiking_circuit(seed: int) -> Circuit:
        from bioprop.spiking import presets

        return presets.circuit(seed)

    def load(seed: int, quick: bool) -> Dataset:
        from bioprop.spiking import presets

        return presets.load(seed, quick)

    spiking = {"optimizer": None, "present": "100 ms", "settle": "20 ms", "dt": "0.5 ms"}
    return Task(
        "spiking-fashion-mnist",
        "Fashion-MNIST 14x14, 196-100-10: spiking LIF circuit (brian2) and its logistic rate twin",
        load,
        [196, 100, 10],
        activation="logistic",
        loss="mse",
        optimizer=("sgd", {"lr": 0.5}),
        epochs=1,
        batch_size=1,
        record_every=200,
        evaluate_on_record=False,
        quick_max_steps=40,
        circuits={"spiking": spiking_circuit},
        kind_options={
            "spiking": {**spiking, "target": "cython", "n_train": 4000, "test_every": 1000},
            "layered": {"max_steps": 4000},
        },
        quick_kind_options={
            "spiking": {"target": "numpy", "present": "50 ms", "dt": "1 ms", "n_train": 40},
            "layered": {"max_steps": 40},
        },
        rule_options={
            "spiking-fa": {"eta": "8 Hz", "target_rate": "200 Hz", "feedback_init": uniform(1.0)},
            "fa": {"feedback_init": uniform(1.0)},
        },
        default_rules=("spiking-fa", "fa", "bp"),
        reference="docs/spiking.md (spiking 69.4 %, rate-fa 75.4 %, rate-bp 75.6 % test accuracy)",
    )


register(_spiking_fashion_mnist())


def _add_plasticity_task(task_name: str) -> None:
    """Pattern memorisation and image completion for differentiable plasticity (``dp-bptt``,
    ``dp-fa``; Miconi et al. 2018 §4.1–4.2): the paper's plastic RNN, its episodes and
    outer-loop settings (:mod:`bioprop.plasticity.presets`).  ``final_loss`` is the task's
    metric over the last 50 episodes (wrong signs on the zeroed bits; squared error per
    erased pixel)."""
    from bioprop.plasticity import presets

    _add_recurrent_task(
        task_name,
        presets,
        presets.kind_options(task_name),
        500,
        "Miconi, Clune & Stanley 2018 (differentiable plasticity)",
    )


for _name in ("pattern-memorisation", "image-completion"):
    _add_plasticity_task(_name)


def _add_target_propagation(task_name: str) -> None:
    """Let the target-propagation rules (``tp``, ``dtp``, ``dtp-drl``, ``ddtp-linear``;
    :mod:`bioprop.rules.target_propagation`) run on an image task's layered circuit.  Their
    first target is ĥ = h − η̂ ∂L/∂h of the batch-mean L, so the layer under it learns
    2η̂/N times bp's update (N = batch size); with the task's one hidden layer, tp and dtp
    *are* bp scaled by that factor, and η̂ = N/2 = 16 gives them bp's step at the task's
    learning rate.  The inverses (dtp-drl, ddtp-linear: the output's map to the hidden layer)
    learn at the task's rate in the optimizer group ``inverse``.  Deep circuits and the
    papers' settings are in ``circuits/dtp_lee.py``, ``circuits/dtp_meulemans.py`` and
    ``circuits/bartunov_fc.py``."""
    t = get(task_name)
    step = t.batch_size / 2
    for rule in ("tp", "dtp", "dtp-drl", "ddtp-linear"):
        t.rule_options[rule] = {"target_step": step}


for _name in ("fashion-mnist", "mnist"):
    _add_target_propagation(_name)


def _arm() -> Task:
    """Balduzzi, Vanchinathan & Buhmann 2015's regression (kickback): the inverse dynamics
    of a planar 2-link arm (``planar-arm``, SARCOS-sized, the same data for every seed),
    their 6-10-100-200-2 network of rectilinear units with coherent initial weights
    (:func:`bioprop.rules.kickback.make_coherent`), plain SGD at batch 16 with each rule's
    learning rate as chosen on a validation split by ``circuits/kickback_regression.py``."""

    def load(seed: int, quick: bool) -> Dataset:
        if quick:
            return _data.load("planar-arm", n_train=2000, n_test=500)
        return _data.load("planar-arm")

    def prepare(c: Circuit) -> Circuit:
        from bioprop.rules.kickback import make_coherent

        return make_coherent(c, _data.load("planar-arm", n_test=1).x_train[:1024])

    return Task(
        "arm",
        "planar-arm inverse dynamics, 6-10-100-200-2 rectilinear (kickback's regression), SGD",
        load,
        [6, 10, 100, 200, 2],
        activation="rectilinear",
        output_activation="linear",
        loss="mse",
        optimizer=("sgd", {"lr": 0.01}),
        rule_optimizer={
            "bp": ("sgd", {"lr": 0.1}),
            "fa": ("sgd", {"lr": 0.003}),
            "dfa": ("sgd", {"lr": 0.003}),
        },
        epochs=10,
        batch_size=16,
        record_every=500,
        quick_max_steps=100,
        prepare=prepare,
        default_rules=("bp", "kickback", "fa", "dfa", "shallow"),
        reference="Balduzzi et al. 2015 (kickback matches bp's NMSE on SARCOS / Barrett WAM)",
    )


register(_arm())
