"""What running a sweep on a dask cluster buys, and what it costs per run.

``sweep_speedup_2workers``
    8 equal small runs (fa on the linear task, 30-20-10, per-example updates: 6000 steps
    each, 1500 with ``--quick``) done serially in this process, one torch thread, ÷ the
    same runs on a 2-worker ``LocalCluster`` (process workers, one thread each, started and
    warmed up once).  Both time only the runs (:func:`bioprop.experiments.cluster.run_all`),
    not the summary.  Target ≥ 1.7 on a 2-core machine.
``sweep_overhead_per_run``
    Seconds per run that the cluster spends outside the runs, from the same cluster
    sweeps: (T_cluster − the busiest worker's time inside runs) / (8 / 2) — scheduling,
    sending the config and the row back, writing the row, and the idle tail while the
    last run finishes.  Time inside a run is measured by the run itself, so the value does
    not grow when other processes slow the runs down.  Target < 0.5 s.

Repeats alternate serial and cluster (interleaved); each value is the median over repeats.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from bioprop.experiments import bench

RUNS = 8
WORKERS = 2
_CACHE: dict[tuple, dict] = {}


def _configs(root: Path, tag: str, quick: bool, device: str):
    from bioprop.experiments.runs import plan
    from bioprop.experiments.spec import SweepSpec

    spec = SweepSpec(
        task="linear",
        rules=["fa"],
        seeds=list(range(RUNS)),
        epochs=1 if quick else 4,
        device=device,
    ).validate()
    return plan(spec, root / tag, session=tag)


def _measure(quick: bool, repeats: int, device: str) -> dict:
    key = (quick, repeats, device)
    if key in _CACHE:
        return _CACHE[key]
    from bioprop.experiments.cluster import connect, run_all

    root = Path(tempfile.mkdtemp(prefix="bioprop-bench-sweep-"))
    quiet = lambda s: None  # noqa: E731
    with connect("local", workers=WORKERS, say=quiet) as client, bench.one_thread():
        run_all(_configs(root, "warm-cluster", quick, device)[:WORKERS], client, say=quiet)
        run_all(_configs(root, "warm-serial", quick, device)[:1], "serial", say=quiet)
        serial, clustered, gaps = [], [], []
        for i in range(repeats):
            order = ("serial", "cluster") if i % 2 == 0 else ("cluster", "serial")
            for how in order:
                configs = _configs(root, f"{how}{i}", quick, device)
                t0 = time.perf_counter()
                rows = run_all(configs, "serial" if how == "serial" else client, say=quiet)
                wall = time.perf_counter() - t0
                (serial if how == "serial" else clustered).append(wall)
                if how == "cluster":  # the time workers were not inside a run
                    busy: dict[int, float] = {}
                    for row in rows.values():
                        busy[row["pid"]] = busy.get(row["pid"], 0.0) + row["wall_time"]
                    gaps.append((wall - max(busy.values())) / (RUNS / WORKERS))
    speedups = [s / c for s, c in zip(serial, clustered, strict=True)]
    res = {
        "speedup": bench.spread(speedups),
        "overhead": bench.spread(gaps),
        "serial_s": statistics.median(serial),
        "cluster_s": statistics.median(clustered),
        "repeats": repeats,
        "speedups": [round(x, 3) for x in speedups],
        "load_average": os.getloadavg()[0],
    }
    _CACHE[key] = res
    return res


def _key(name: str, candidate: str, baseline: str):
    def run(quick: bool, repeats: int, device: str) -> dict:
        m = _measure(quick, repeats, device)
        return {
            **m[name],
            "candidate_s": m[candidate],
            "baseline_s": m[baseline],
            "repeats": m["repeats"],
        }

    return run


_speedup = _key("speedup", "serial_s", "cluster_s")
_overhead = _key("overhead", "cluster_s", "serial_s")


bench.register(
    "sweep_speedup_2workers",
    f"{RUNS} equal fa runs (linear task) serially in one process / on a 2-worker "
    "LocalCluster: a speed-up, target ≥ 1.7 (cand = serial s, base = cluster s)",
    _speedup,
)
bench.register(
    "sweep_overhead_per_run",
    "seconds per run the cluster spends outside runs, (T_cluster − busiest worker's run "
    "time)/4 (cand = cluster s, base = serial s)",
    _overhead,
    target=0.5,
)
