"""The ``bioprop`` command: compare, bench, inspect, rules, tasks."""

from __future__ import annotations

import argparse
import json
import os
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
    )
    print(format_table(ds))
    out = args.out or f"runs/compare-{args.task}"
    print(f"\nwrote {out}/summary.nc, {out}/report.png and one recording per run")
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

    rec = load(args.file)
    a = dict(rec.attrs)
    print(f"{args.file}")
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
    if args.json:
        print(json.dumps({k: v["ratio"] for k, v in res.items()}))
    else:
        print(format_bench(res))
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
    c.set_defaults(func=_cmd_compare)

    b = sub.add_parser("bench", help="speed ratios against baselines measured in this process")
    b.add_argument("--json", action="store_true", help="print one JSON object of ratios")
    b.add_argument("--quick", action="store_true", help="fewer, shorter repeats")
    b.add_argument("--only", type=_csv, default=None, help="comma-separated benchmark keys")
    b.add_argument("--repeats", type=int, default=None, help="interleaved repeats per ratio")
    b.add_argument("--device", default="cpu")
    b.set_defaults(func=_cmd_bench)

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
