"""Lillicrap et al. 2016, Fig. 2a: a 784-1000-10 network on MNIST-type images.

Logistic hidden and output units, one-hot targets, squared error, SGD with weight decay
1e-6; rules bp, fa, dfa, sign-symmetry and shallow on the same initial weights and data
order (``bioprop.experiments.compare``).  The paper's MNIST test errors: bp 2.4 %, fa 2.1 %,
shallow 7.2 %.  MNIST is downloaded where the network allows; Fashion-MNIST (Debian package
``dataset-fashion-mnist``) is the default here.

The scale of the feedback weights B of fa, dfa and sign-symmetry acts as the hidden layer's
learning rate (the hidden update is ∝ Bδ): it is chosen on the validation split,
``--select-feedback-scales 0.05,0.125,0.25,0.5,1,2`` (the task's default, U[±2], is that
choice).  Its control is bp with its own hidden-layer rate chosen the same way,
``--select-hidden-lrs 0.2,0.5,1,2,4`` (``--hidden-lr`` sets it); ``--feedback-scale``
sets ω by hand.  ``--select-epochs`` chooses each rule's number of epochs with it (the
epoch of least validation error within ``--epochs``: early stopping) and trains the test
runs that long; ``--workers 2`` runs the rules × seeds side by side.

    python circuits/lillicrap_mnist.py --dataset fashion-mnist --seeds 3 --epochs 10

``--setup strong`` trains the same 784-1000-10 shape the way a practitioner would (ReLU
hidden units, softmax cross-entropy, Adam, batch 128, Kaiming-uniform init), so that bp is a
baseline at a known-good level (~11 % on Fashion-MNIST) rather than an under-trained one;
``--select-lrs`` first picks every rule's Adam learning rate on the validation split (the
last 10 000 training images, one seed) and then reports the test set once, with each
rule's chosen rate, writing ``<results>/lillicrap_mnist_strong.json``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import xarray as xr

import bioprop as bp

import _common

PAPER_MNIST = {"bp": 2.4, "fa": 2.1, "shallow": 7.2}  # test error %, Lillicrap et al. 2016
#: the rules whose feedback weights B are drawn at random (their scale is a setting)
RANDOM_FEEDBACK = ("fa", "dfa", "sign-symmetry")


def plot_alignment(out: Path, rules: list[str], seeds: int) -> Path:
    """Angle of each rule's hidden teaching signal and hidden-layer update to bp's, and
    ∠(Wᵀ, B) of the output pathway, over training (mean over seeds)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8), layout="constrained")
    ax_d, ax_w, ax_b = fig.subplots(1, 3)
    for i, rule in enumerate(r for r in rules if r != "bp"):
        color = f"C{i + 1}"
        for ax, measure in (
            (ax_d, lambda r: bp.analysis.update_angle(r, "hidden")),
            (ax_w, lambda r: bp.analysis.update_angle(r, "input->hidden")),
            (ax_b, lambda r: bp.analysis.weight_alignment(r, "hidden->output")),
        ):
            try:
                a = _common.seed_mean(out, rule, seeds, measure)
            except KeyError:  # no feedback pathway to align with (e.g. shallow)
                continue
            if np.isfinite(a.values).any():
                ax.plot(a.step, a.values, label=rule, color=color)
    for ax, title in (
        (ax_d, "∠(δ_hidden, δ_BP)"),
        (ax_w, "∠(ΔW_input→hidden, ΔW_BP)"),
        (ax_b, "∠(Wᵀ, B), hidden→output"),
    ):
        _common.angle_axes(ax, title)
    path = out / "alignment.png"
    fig.savefig(path, dpi=110)
    return path


def strong(task: bp.tasks.Task) -> bp.tasks.Task:
    """The task's 784-1000-10 shape trained the way a practitioner would: ReLU hidden units,
    a linear output under softmax cross-entropy, Kaiming-uniform init, Adam (lr 1e-3 unless
    chosen), batch 128; fa, dfa and sign-symmetry draw their feedback from U[±0.25]
    (untuned; the stored results used it)."""
    return replace(
        task,
        rule_options={
            **task.rule_options,
            **{r: {"feedback_init": bp.init.uniform(0.25)} for r in RANDOM_FEEDBACK},
        },
        activation="relu",
        output_activation="linear",
        init=bp.init.kaiming_uniform(2**0.5),
        loss="cross-entropy",
        optimizer=("adam", {"lr": 1e-3}),
        rule_optimizer={},
        batch_size=128,
    )


class Setting(NamedTuple):
    """What a ``--select-…`` option chooses per rule."""

    label: str
    applies: tuple[str, ...] | None  # the rules it applies to (None: all)
    apply: Callable[[bp.tasks.Task, dict[str, float]], bp.tasks.Task]  # one value per rule


SETTINGS = {
    "lr": Setting(
        "Adam lr",
        None,
        lambda task, per_rule: replace(
            task,
            rule_optimizer={
                **task.rule_optimizer,
                **{r: ("adam", {"lr": v}) for r, v in per_rule.items()},
            },
        ),
    ),
    "hidden_lr": Setting(
        "hidden-layer SGD lr (input->hidden)",
        ("bp",),
        lambda task, per_rule: replace(
            task,
            rule_optimizer={
                **task.rule_optimizer,
                **{
                    r: (task.optimizer[0], {**task.optimizer[1], "input->hidden_lr": v})
                    for r, v in per_rule.items()
                },
            },
        ),
    ),
    "feedback_scale": Setting(
        "feedback scale ω (B ~ U[±ω])",
        RANDOM_FEEDBACK,
        lambda task, per_rule: replace(
            task,
            rule_options={
                **task.rule_options,
                **{r: {"feedback_init": bp.init.uniform(v)} for r, v in per_rule.items()},
            },
        ),
    ),
}


def validation_error(ds, rule: str, by_epoch: bool, epochs: int) -> tuple[float, int]:
    """A selection run's validation error (seed 0) and the epoch count it stands for: the
    least error over the epochs with ``by_epoch`` (early stopping; the earliest epoch on a
    tie), else the error after all ``epochs``.  A failed run (e.g. one that diverged) reads
    NaN and is never chosen."""
    if not by_epoch:
        return float(ds.test_error.sel(rule=rule).mean()), epochs
    curve = ds.test_error_by_epoch.sel(rule=rule, seed=0)
    if curve.isnull().all():
        return float("nan"), epochs
    i = int(curve.argmin("epoch", skipna=True))
    return float(curve[i]), int(curve.epoch[i])


def select_then_test(task, rules, setting: str, values, args, out: Path, argv) -> int:
    """Every rule's ``setting`` (a key of :data:`SETTINGS`) from ``values`` on the
    validation split (seed 0, the full budget), then every rule at its chosen value on the
    test set, ``args.seeds`` seeds; prints the claims and stores the result as
    ``<results>/lillicrap_mnist_<setup>.json`` (Adam rates) or
    ``<results>/lillicrap_mnist_<setup>_<setting>.json`` (``…_early_stopping.json`` with
    ``args.select_epochs``).  Rules the setting does not apply to (bp
    and shallow have no feedback weights) keep the task's setting and skip the selection.

    With ``args.select_epochs`` each rule's number of epochs is chosen too: the epoch of
    least validation error within ``task.epochs`` (jointly with the setting), and the test
    runs train for that many epochs; rules the setting does not apply to then run on the
    validation split once, to choose theirs."""
    t0 = time.perf_counter()
    label, applies, apply = SETTINGS[setting]
    by_epoch = args.select_epochs
    tuned = [r for r in rules if applies is None or r in applies]
    untuned = [r for r in rules if r not in tuned] if by_epoch else []
    base = task.load
    val = replace(task, load=lambda seed, quick: _common.validation(base(seed, quick), quick))
    n_seeds, args.seeds = args.seeds, 1
    errors: dict[str, dict[float, float]] = {r: {} for r in tuned}
    at_epoch: dict[str, dict[float, int]] = {r: {} for r in tuned}
    for v in values:
        print(f"\n== validation, {label} {v:g}")
        ds = _common.compare(
            apply(val, {r: v for r in tuned}), tuned, args, out / f"select-{setting}{v:g}"
        )
        for r in tuned:
            errors[r][v], at_epoch[r][v] = validation_error(ds, r, by_epoch, task.epochs)
    own: dict[str, tuple[float, int]] = {}
    if untuned:
        print(f"\n== validation, the task's setting (epochs only): {', '.join(untuned)}")
        ds = _common.compare(val, untuned, args, out / "select-epochs")
        own = {r: validation_error(ds, r, True, task.epochs) for r in untuned}
    chosen = {}
    for r in tuned:
        finite = {v: e for v, e in errors[r].items() if np.isfinite(e)}
        if not finite:
            raise SystemExit(f"{r}: every {label} in {values} failed on validation")
        chosen[r] = min(finite, key=finite.get)
    epochs = (
        dict.fromkeys(rules, task.epochs)
        | {r: at_epoch[r][chosen[r]] for r in tuned}
        | {r: n for r, (_, n) in own.items()}
    )
    args.seeds = n_seeds
    print(f"\n== test set, chosen {label}: {chosen}; epochs: {epochs}")
    groups: dict[int, list[str]] = {}
    for r in rules:
        groups.setdefault(epochs[r], []).append(r)
    parts = [
        _common.compare(
            replace(apply(task, chosen), epochs=n),
            group,
            args,
            out / ("test" if len(groups) == 1 else f"test-{n}epochs"),
        )
        for n, group in groups.items()
    ]
    ds = xr.concat([p[["test_error"]] for p in parts], "rule").sel(rule=rules)
    per_seed = {r: [float(v) for v in ds.test_error.sel(rule=r).values] for r in rules}
    print(f"\nvalidation error % per {label} (seed 0{', at the best epoch' if by_epoch else ''}):")
    print(
        "\n".join(
            f"  {r:<14} "
            + "  ".join(
                f"{v:g}: {100 * e:.2f}" + (f" (epoch {at_epoch[r][v]})" if by_epoch else "")
                for v, e in errors[r].items()
            )
            for r in tuned
        )
    )
    for r, (e, n) in own.items():
        print(f"  {r:<14} task's setting: {100 * e:.2f} (epoch {n})")
    print(_common.paper_table(ds, rules, PAPER_MNIST, args.dataset))
    claims = paper_claims(per_seed, args.quick)
    print(f"\nClaims (Lillicrap et al. 2016, Fig. 2a; {args.setup} setup)")
    print("\n".join(claims))
    result = {
        "command": " ".join(["python circuits/lillicrap_mnist.py", *(argv or sys.argv[1:])]),
        "dataset": args.dataset,
        "setup": SETUPS[args.setup],
        "epochs": task.epochs,
        "seeds": list(range(args.seeds)),
        "setting": label,
        "validation_error": {r: {f"{v:g}": e for v, e in d.items()} for r, d in errors.items()},
        "chosen": chosen,
        "test_error": per_seed,
        "claims": claims,
        "wall_s": time.perf_counter() - t0,
    }
    if by_epoch:  # task.epochs is then the most any run trained
        result["validation_epoch"] = {
            r: {f"{v:g}": n for v, n in d.items()} for r, d in at_epoch.items()
        }
        result["validation_error_own_setting"] = {r: e for r, (e, _) in own.items()}
        result["epochs_chosen"] = epochs
    if not args.quick:
        args.results.mkdir(parents=True, exist_ok=True)
        suffix = "" if setting == "lr" else f"_{setting}"  # the strong setup's Adam rates
        suffix += "_early_stopping" if by_epoch else ""
        dest = args.results / f"lillicrap_mnist_{args.setup}{suffix}.json"
        dest.write_text(json.dumps(result, indent=1))
        print(f"wrote {dest}")
    print(f"{time.perf_counter() - t0:.0f} s")
    return 0


def paper_claims(per_seed: dict[str, list[float]], quick: bool) -> list[str]:
    """Lillicrap et al.'s claims on the mean test error of each rule run: fa (dfa, sign
    symmetry) within 1 point of bp, shallow learning > 1 point behind fa."""
    mean = {r: 100 * float(np.mean(v)) for r, v in per_seed.items()}
    claims = []
    for r in [r for r in ("fa", "sign-symmetry", "dfa") if r in mean and "bp" in mean]:
        claims.append(
            _common.claim(
                f"{r} matches bp: its test error within 1 percentage point of bp's",
                f"{r} − bp = {mean[r] - mean['bp']:+.2f} points",
                mean[r] - mean["bp"] <= 1.0,
                quick,
            )
        )
    if {"fa", "shallow"} <= set(mean):
        claims.append(
            _common.claim(
                "shallow learning (output layer only) is clearly worse than fa (> 1 point)",
                f"shallow − fa = {mean['shallow'] - mean['fa']:+.2f} points",
                mean["shallow"] - mean["fa"] > 1.0,
                quick,
            )
        )
    return claims


SETUPS = {
    "paper": "paper: 784-1000-10 logistic, squared error, SGD 0.2, batch 32, weight decay 1e-6",
    "strong": "strong: 784-1000-10 relu, softmax cross-entropy, Adam, batch 128",
}


def main(argv=None) -> int:
    parser = _common.image_parser("lillicrap_mnist", __doc__, "bp,fa,dfa,sign-symmetry,shallow", 10)
    parser.add_argument(
        "--feedback-scale",
        type=float,
        default=None,
        metavar="OMEGA",
        help="draw the feedback weights of fa, dfa and sign-symmetry from U[±OMEGA] "
        "(default: the task's, 0.25)",
    )
    parser.add_argument(
        "--hidden-lr",
        type=float,
        default=None,
        metavar="LR",
        help="bp's hidden-layer SGD rate (input->hidden; --setup paper; default: the task's)",
    )
    parser.add_argument(
        "--setup",
        choices=["paper", "strong"],
        default="paper",
        help="paper: logistic units, squared error, SGD 0.2, batch 32 (default); strong: "
        "ReLU, softmax cross-entropy, Adam, batch 128",
    )
    parser.add_argument(
        "--select-lrs",
        default=None,
        metavar="LR,LR,...",
        help="choose every rule's Adam lr from these on the validation split, then report "
        "the test set once (--setup strong)",
    )
    parser.add_argument(
        "--select-hidden-lrs",
        default=None,
        metavar="LR,...",
        help="choose bp's hidden-layer SGD rate (input->hidden; the output layer keeps the "
        "task's) from these on the validation split, then report the test set once",
    )
    parser.add_argument(
        "--select-feedback-scales",
        default=None,
        metavar="OMEGA,...",
        help="choose the feedback scale of fa, dfa and sign-symmetry from these on the "
        "validation split, then report the test set once",
    )
    parser.add_argument(
        "--select-epochs",
        action="store_true",
        help="with a --select-… option: choose each rule's number of epochs too, the epoch "
        "of least validation error within --epochs (early stopping), and train its test "
        "runs for that many",
    )
    args = parser.parse_args(argv)
    for flag in ("feedback_scale", "hidden_lr"):
        value = getattr(args, flag)
        if value is not None and not value > 0:
            parser.error(f"--{flag.replace('_', '-')} must be positive, got {value}")
    if args.hidden_lr is not None and args.setup != "paper":
        parser.error("--hidden-lr sets an SGD rate: it needs --setup paper")
    selection = None
    flags = (
        ("lr", "select_lrs"),
        ("hidden_lr", "select_hidden_lrs"),
        ("feedback_scale", "select_feedback_scales"),
    )
    for setting, flag in flags:
        text = getattr(args, flag)
        if text is None:
            continue
        option = "--" + flag.replace("_", "-")
        try:
            values = [float(v) for v in text.split(",") if v.strip()]
        except ValueError:
            parser.error(f"{option} takes comma-separated numbers, got {text!r}")
        if not values or min(values) <= 0:
            parser.error(f"{option} takes positive numbers, got {text!r}")
        if args.validation:
            parser.error(f"{option} chooses on the validation split itself: drop --validation")
        if selection is not None:
            parser.error("choose one setting per run: one --select-… option")
        selection = (setting, values)
    if args.select_epochs and selection is None:
        parser.error("--select-epochs chooses on validation with a --select-… option: add one")
    if args.select_lrs is not None and args.setup != "strong":
        parser.error("--select-lrs chooses Adam rates: it needs --setup strong")
    if args.select_hidden_lrs is not None and args.setup != "paper":
        parser.error("--select-hidden-lrs chooses SGD rates: it needs --setup paper")
    if args.select_feedback_scales is not None and args.feedback_scale is not None:
        parser.error("--select-feedback-scales chooses the scale: drop --feedback-scale")
    out, rules = _common.image_setup(args, "lillicrap_mnist")
    task = replace(bp.tasks.get(args.dataset), epochs=args.epochs)
    if args.setup == "strong":
        task = strong(task)
    if selection is not None:
        return select_then_test(task, rules, *selection, args, out, argv)
    if args.validation:  # tune here; report the test set once, with the chosen settings
        base = task.load
        task = replace(task, load=lambda seed, quick: _common.validation(base(seed, quick), quick))
    if args.feedback_scale is not None:
        task = SETTINGS["feedback_scale"].apply(
            task, {r: args.feedback_scale for r in RANDOM_FEEDBACK}
        )
    if args.hidden_lr is not None:
        task = SETTINGS["hidden_lr"].apply(task, {"bp": args.hidden_lr})
    t0 = time.perf_counter()
    ds = _common.compare(task, rules, args, out)
    plot_alignment(out, rules, args.seeds)
    print()
    print(_common.paper_table(ds, rules, PAPER_MNIST, args.dataset))
    gap = (
        float(ds.test_error.sel(rule="fa").mean() - ds.test_error.sel(rule="bp").mean()) * 100
        if {"fa", "bp"} <= set(rules)
        else float("nan")
    )
    print(
        f"\nfa − bp test error: {gap:+.2f} percentage points "
        f"({args.seeds} seed(s), {task.epochs if not args.quick else 'quick'} epoch(s))"
    )
    if not args.validation:
        per_seed = {r: [float(v) for v in ds.test_error.sel(rule=r).values] for r in rules}
        print(f"\nClaims (Lillicrap et al. 2016, Fig. 2a; {args.setup} setup)")
        print("\n".join(paper_claims(per_seed, args.quick)))
    print(f"wrote {out}/summary.nc, report.png, alignment.png; {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
