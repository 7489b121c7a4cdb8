"""The built-in tasks, registered in :mod:`bioprop.experiments.tasks`' registry.

Each block states the paper whose set-up it reproduces, its data, architecture and budget,
and each rule's paper setting (feedback scale, learning rate) as ``rule_options`` and
``rule_optimizer``; family tasks (settling, recurrent, spiking, plastic) name the circuit kind
each rule needs.  ``bioprop tasks`` lists them.
"""

from __future__ import annotations

from collections.abc import Callable

from bioprop import data as _data
from bioprop.core import init as _init
from bioprop.core.circuit import Circuit
from bioprop.data.base import Dataset
from bioprop.experiments.tasks import Task, get, register


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
            "node-perturbation": ("sgd", {"lr": 0.0005}),
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
        rule_optimizer={"node-perturbation": ("sgd", {"lr": 0.0005})},
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
            # B's scale acts as the hidden layer's learning rate: chosen on the validation
            # split from U[±0.05] (the forward init's) … U[±2] at 30 epochs, seed 0
            # (circuits/lillicrap_mnist.py --select-feedback-scales; README): U[±2], the
            # grid's largest (validation error still falling: 15.7 % at 0.05, 11.5 % at 2)
            rule_options={r: {"feedback_init": _init.uniform(2.0)} for r in _RANDOM_FEEDBACK},
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
    scale, lr = (0.1, 0.05), chosen on a validation split at the task's budget (10 epochs,
    batch 32, 2 seeds: 12.81 ± 0.38 % against 12.97 ± 0.59 % at the full rates (0.2, 0.1);
    ``bioprop sweep circuits/sweeps/ep_rate_scale.toml``, stored in
    ``data/results/sweep_ep_rate_scale.json``).  The full rates can also overshoot at this
    batch size: on the synthetic stand-in they left every output clipped at 0 within 8
    steps.  The layered rules keep the task's own circuit; every rule sees the same data
    order."""
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
            # η and the presentation time (100 ms) chosen on the validation split
            # (η 4 / 8 / 16 Hz × 50 / 100 ms, 2 seeds): circuits/spiking_feedback_alignment.py
            # --select-eta 4,8,16 --select-present 50,100
            "spiking-fa": {"eta": "16 Hz", "target_rate": "200 Hz", "feedback_init": uniform(1.0)},
            "fa": {"feedback_init": uniform(1.0)},
        },
        default_rules=("spiking-fa", "fa", "bp"),
        reference="docs/spiking.md (3 seeds: spiking 61.7 %, rate-fa 67.9 %, rate-bp 70.5 % "
        "test accuracy)",
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
