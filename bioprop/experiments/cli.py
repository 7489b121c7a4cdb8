"""The ``bioprop`` command: compare, sweep, bench, report, inspect, rules, tasks."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Sequence


def _csv(s: str) -> list[str]:
    names = [x.strip() for x in s.split(",") if x.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated names, got {s!r}")
    return names


def _cmd_compare(args) -> int:
    from bioprop.experiments.compare import compare, format_table

    ds = compare(
        task=args.task,
        rules=args.rules,
        seeds=args.seeds,
        epochs=args.epochs,
        out=args.out,
        device=args.device,
        overwrite=args.overwrite,
        quick=args.quick,
        progress=not args.no_progress,
        workers=args.workers,
    )
    print(format_table(ds))
    out = args.out or f"runs/compare-{args.task}"
    print(f"\nwrote {out}/summary.nc, {out}/report.png and one recording per run")
    return 0


def _cmd_sweep(args) -> int:
    from bioprop.experiments.summary import failures
    from bioprop.experiments.sweep import parse_grid_flag, sweep, sweep_table, write_results

    overrides = {
        "task": args.task,
        "rules": args.rules,
        "seeds": args.seeds,
        "epochs": args.epochs,
        "quick": True if args.quick else None,
        "device": args.device,
        "out": args.out,
        "scheduler": args.scheduler,
        "workers": args.workers,
        "validation": args.validation,
    }
    grid = dict(parse_grid_flag(g) for g in args.grid or [])
    ds = sweep(
        args.spec,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        grid=grid or None,
        flags={k for k, v in overrides.items() if v is not None} | {f"grid:{k}" for k in grid},
        **overrides,
    )
    print(sweep_table(ds))
    out = ds.attrs["out"]
    print(f"\nwrote {out}/summary.nc, {out}/report.png and one recording per run")
    if args.results:
        command = "bioprop " + " ".join(shlex.quote(a) for a in args.argv)
        paths = write_results(ds, args.results, command)
        print(f"wrote {', '.join(str(p) for p in paths)}")
    n = len(failures(ds))
    if n:
        print(f"{n} run(s) failed: see the table above and `error` in summary.nc")
    return 0


def _cmd_rules(args) -> int:
    from bioprop import rules

    for name, kind, desc in rules.entries():
        print(f"{name:<18} {kind:<10} {desc}")
    return 0


def _cmd_tasks(args) -> int:
    from bioprop.experiments import tasks

    for name, desc in tasks.describe().items():
        print(f"{name:<16} {desc}")
    return 0


def _cmd_inspect(args) -> int:
    from bioprop.recording.load import load
    from bioprop.recording.lock import describe_holder, writer_of
    from bioprop.recording.superblock import write_flags

    rec = load(args.file)
    a = dict(rec.attrs)
    print(f"{args.file}")
    holder = writer_of(args.file)
    if holder is not None:
        print(f"  being written by {describe_holder(holder)}; showing the records so far")
    elif write_flags(args.file):
        print("  its writer stopped without closing it (killed?); every completed record is kept")
    for key in (
        "rule",
        "rule_hyperparameters",
        "task",
        "loss",
        "optimizer",
        "optimizer_hyperparameters",
        "seed",
        "epochs",
        "batch_size",
        "record_every",
        "bioprop_version",
        "torch_version",
        "created",
    ):
        if key in a:
            print(f"  {key:<26} {a[key]}")
    for group in ("metrics", "pathways", "populations", "spikes"):
        if group not in rec.children:
            continue
        node = rec[group]
        nodes = [(group, node)] if node.ds.data_vars else []
        nodes += [(f"{group}/{k}", v) for k, v in node.children.items()]
        for name, n in nodes:
            ds = n.ds
            steps = ds.sizes.get("step", 0)
            info = ", ".join(f"{v}{tuple(ds[v].sizes.values())}" for v in ds.data_vars)
            extra = ""
            if "role" in n.attrs:
                extra = f" [{n.attrs['role']}" + (
                    f", mirrors {n.attrs['mirrors']}]" if "mirrors" in n.attrs else "]"
                )
            if "step" in ds.sizes:
                print(f"  /{name}{extra}: {steps} records; {info}")
            else:  # spiking recordings: (time, neuron) rates and states, ragged spikes
                print(f"  /{name}{extra}: {info}")
    rec.close()
    return 0


def _cmd_bench(args) -> int:
    from bioprop.experiments.bench import format_bench, run_bench

    res = run_bench(quick=args.quick, only=args.only, repeats=args.repeats, device=args.device)
    if args.json:  # each key's median, its interquartile range and whether it stayed noisy
        out = {}
        for k, v in res.items():
            out[k] = v["ratio"]
            if "ratio_q1" in v:
                out[f"{k}_iqr"] = v["ratio_q3"] - v["ratio_q1"]
            out[f"{k}_repeats"] = v.get("repeats")
            if "noisy" in v:
                out[f"{k}_noisy"] = v["noisy"]
        first = next(iter(res.values()), {})
        out["torch_threads"] = first.get("torch_threads")
        out["load_average"] = first.get("load_average")
        print(json.dumps(out))
    else:
        print(format_bench(res))
    return 0


def _cmd_report(args) -> int:
    from pathlib import Path

    from bioprop.experiments.report import check, regenerate

    readme = Path(args.readme)
    root = Path(args.root) if args.root else readme.resolve().parent
    if not readme.is_file():
        raise FileNotFoundError(f"no README at {readme}; pass --readme PATH")
    if args.check:
        diff = check(readme, root)
        if diff:
            print(diff, end="")
            print(f"\n{readme} differs from data/: run `bioprop report` to regenerate it")
            return 1
        print(f"{readme}: every results block matches data/")
        return 0
    readme.write_text(regenerate(readme.read_text(), root))
    print(f"regenerated the results blocks of {readme} from {root / 'data'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bioprop",
        description="Circuits trained with local learning rules, compared against backprop.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compare", help="every rule × seed on one task, beside backprop")
    c.add_argument("--task", default="linear", help="task name (see `bioprop tasks`)")
    c.add_argument(
        "--rules",
        type=_csv,
        default=None,
        help="comma-separated rule names (default: all; see `bioprop rules`)",
    )
    c.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    c.add_argument("--epochs", type=int, default=None, help="epochs (default: the task's)")
    c.add_argument("--out", default=None, help="output directory (default runs/compare-TASK)")
    c.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    c.add_argument("--overwrite", action="store_true", help="replace recordings in --out")
    c.add_argument("--quick", action="store_true", help="a tiny budget that runs in seconds")
    c.add_argument("--no-progress", action="store_true", help="no progress bars")
    c.add_argument(
        "--workers",
        type=int,
        default=None,
        help="run the rules × seeds on N single-threaded worker processes (a local dask "
        "cluster; default: one after another in this process)",
    )
    c.set_defaults(func=_cmd_compare)

    w = sub.add_parser(
        "sweep",
        help="rules × seeds × options on a dask cluster (local by default), resumable",
        description="Run a sweep: SPEC is a TOML file (see docs/sweeps.md); flags override it "
        "or replace it.",
    )
    w.add_argument("spec", nargs="?", default=None, help="the sweep's TOML spec (optional)")
    w.add_argument("--task", default=None, help="task name (see `bioprop tasks`)")
    w.add_argument("--rules", type=_csv, default=None, help="comma-separated rule names")
    w.add_argument("--seeds", type=int, default=None, help="number of seeds")
    w.add_argument(
        "--grid",
        action="append",
        metavar="OPTION=V1,V2",
        help="an option and its values, e.g. optimizer.lr=0.05,0.1 (repeatable)",
    )
    w.add_argument("--epochs", type=int, default=None, help="epochs (default: the task's)")
    w.add_argument("--quick", action="store_true", help="a tiny budget that runs in seconds")
    w.add_argument("--out", default=None, help="output directory (default runs/sweep-NAME)")
    w.add_argument("--device", default=None, help="torch device of every worker (cpu, cuda)")
    w.add_argument(
        "--scheduler",
        default=None,
        help="dask scheduler address (tcp://host:8786); 'serial' runs in this process; "
        "default: a local cluster sized to this machine",
    )
    w.add_argument("--workers", type=int, default=None, help="local cluster: worker processes")
    w.add_argument(
        "--validation",
        type=float,
        default=None,
        help="hold out this fraction of the training set and report on it (for tuning)",
    )
    w.add_argument(
        "--results",
        default=None,
        metavar="PREFIX",
        help="also write PREFIX.json (command, spec, budget, mean ± sd per cell) and PREFIX.png",
    )
    w.add_argument("--resume", action="store_true", help="finish the sweep in --out")
    w.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    w.add_argument("--no-progress", action="store_true", help="no progress bar")
    w.set_defaults(func=_cmd_sweep)

    b = sub.add_parser("bench", help="speed ratios against baselines measured in this process")
    b.add_argument("--json", action="store_true", help="print one JSON object of ratios")
    b.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    b.add_argument("--only", type=_csv, default=None, help="comma-separated benchmark keys")
    b.add_argument("--repeats", type=int, default=None, help="interleaved repeats per ratio")
    b.add_argument("--device", default="cpu")
    b.set_defaults(func=_cmd_bench)

    o = sub.add_parser(
        "report",
        help="regenerate README's result tables from data/results",
        description="Rewrite every <!-- results: NAME --> block of README from the files the "
        "experiments stored under data/ (see bioprop.experiments.report).",
    )
    o.add_argument("--readme", default="README.md", help="default %(default)s")
    o.add_argument("--root", default=None, help="folder holding data/ (default: README's)")
    o.add_argument("--check", action="store_true", help="only compare; exit 1 with a diff")
    o.set_defaults(func=_cmd_report)

    i = sub.add_parser("inspect", help="what a recording holds")
    i.add_argument("file")
    i.set_defaults(func=_cmd_inspect)

    r = sub.add_parser("rules", help="list the registered learning rules")
    r.set_defaults(func=_cmd_rules)
    t = sub.add_parser("tasks", help="list the registered tasks")
    t.set_defaults(func=_cmd_tasks)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"bioprop {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the CLI answers every error in one line
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"bioprop {args.command}: error: {msg}", file=sys.stderr)
        if os.environ.get("BIOPROP_DEBUG"):
            raise
        return 2


if __name__ == "__main__":
    sys.exit(main())
