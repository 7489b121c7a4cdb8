"""Where a sweep's runs execute: in this process, on a local cluster, or on any dask cluster.

``scheduler`` is

* ``"serial"`` — one after the other in this process (``bioprop compare``);
* ``None`` or ``"local"`` — a ``distributed.LocalCluster`` of worker *processes* sized to
  the machine (one per core, or ``workers``), one thread each: torch's intra-op threads
  are pinned to 1 per worker (``OMP_NUM_THREADS=1`` and ``torch.set_num_threads(1)``),
  since workers each running a full set of threads on the same cores oversubscribe them
  (10–50× slower here);
* an address, ``"tcp://host:8786"`` — an existing scheduler (``dask-scheduler`` /
  ``dask-worker``, ``dask-jobqueue``'s ``SLURMCluster``, …), or a ``distributed.Client`` or
  cluster object.

Each run is one dask task (:func:`bioprop.experiments.runs.execute_run`).  A worker that
dies mid-run (killed, out of memory) has its task re-run by the scheduler on another worker,
from the run's checkpoint; a task whose workers die too often
(``distributed.scheduler.allowed-failures``) is recorded as failed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from bioprop.experiments.runs import RunConfig, execute_run, failed_row

__all__ = ["run_all", "connect", "default_workers"]


def default_workers() -> int:
    """One worker per core this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _device_problem(device: str) -> str | None:
    """Run on each worker: why ``device`` cannot be used there (None: it can)."""
    from bioprop.training.train import check_device

    try:
        check_device(device)
    except ValueError as exc:
        return str(exc)
    return None


def _pin_threads(n: int = 1) -> None:
    """Run on each worker at start: torch (and BLAS) use ``n`` threads."""
    import torch

    torch.set_num_threads(n)


@contextlib.contextmanager
def connect(
    scheduler: Any = None, workers: int | None = None, say: Callable[[str], None] = print
) -> Iterator[Any]:
    """A ``distributed.Client`` for ``scheduler`` (see the module docstring); a cluster
    started here is closed on exit.  Prints where the dashboard is."""
    import dask
    from distributed import Client

    cluster = None
    if scheduler is None or scheduler == "local":
        from distributed import LocalCluster

        n = workers or default_workers()
        env = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
        env.update(OMP_NUM_THREADS=1, MKL_NUM_THREADS=1, OPENBLAS_NUM_THREADS=1)
        try:
            with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
                cluster = LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=":0",
                    silence_logs=logging.ERROR,
                )
        except RuntimeError as exc:
            raise RuntimeError(
                f"could not start a local dask cluster ({exc}); in a script, call "
                "bioprop.sweep under `if __name__ == '__main__':` (dask starts its workers "
                "by re-importing the script)"
            ) from None
        client = Client(cluster)
        say(f"local cluster: {n} worker process(es), 1 thread each")
    elif hasattr(scheduler, "submit") and hasattr(scheduler, "gather"):
        client = scheduler  # a Client given by the caller: left open
    else:
        address = (
            scheduler.scheduler_address if hasattr(scheduler, "scheduler_address") else scheduler
        )
        try:
            client = Client(address, timeout="20s")
        except OSError as exc:
            raise ConnectionError(
                f"no dask scheduler answers at {address!r} ({exc}); start one with "
                "`dask scheduler` (see docs/sweeps.md) or drop --scheduler for a local cluster"
            ) from None
        n = len(client.scheduler_info().get("workers", {}))
        say(f"scheduler {address}: {n} worker(s) connected now")
    client.run(_pin_threads)
    link = client.dashboard_link
    if importlib.util.find_spec("bokeh") is None and cluster is not None:
        link += " (install bokeh>=3.1 to serve it)"
    say(f"dashboard: {link}")
    try:
        yield client
    finally:
        if client is not scheduler:
            client.close()
        if cluster is not None:
            cluster.close()


def run_all(
    configs: list[RunConfig],
    scheduler: Any = None,
    workers: int | None = None,
    on_result: Callable[[RunConfig, dict], None] | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, dict]:
    """Run every config; returns ``{run_id: row}``.  ``on_result`` is called as each run
    finishes (in this process)."""
    rows: dict[str, dict] = {}

    def done(config: RunConfig, row: dict) -> None:
        rows[config.run_id] = row
        if on_result is not None:
            on_result(config, row)

    if not configs:
        return rows
    if scheduler == "serial":
        for c in configs:
            done(c, execute_run(c))
        return rows
    from distributed import as_completed

    with connect(scheduler, workers, say) as client:
        device = configs[0].device
        if device != "cpu":
            bad = {w: m for w, m in client.run(_device_problem, device).items() if m}
            if bad:
                raise RuntimeError(
                    f"--device {device}: {len(bad)} worker(s) cannot use it ({next(iter(bad))}: "
                    f"{next(iter(bad.values()))}); start the workers on GPU machines"
                )
        for c in configs:
            c.threads, c.progress = 1, False
        by_key = {f"bioprop-{c.session}-{c.run_id}": c for c in configs}
        futures = client.map(execute_run, configs, key=list(by_key), pure=False)
        try:
            for fut in as_completed(futures):
                c = by_key[fut.key]
                if fut.status == "finished":
                    row = fut.result()
                else:  # the worker died too often running it (KilledWorker), or cancelled
                    exc = fut.exception()
                    row = failed_row(c, f"{type(exc).__name__}: {exc}")
                fut.release()
                done(c, row)
        except BaseException:
            client.cancel(futures)
            raise
    return rows
