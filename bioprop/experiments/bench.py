"""Speed ratios, each against a baseline measured in the same process.

Every ratio is the median over ``repeats`` of (candidate time / baseline
time), with candidate and baseline run back to back in alternating order
(interleaved), so slow drifts of the machine cancel.  Absolute times vary
±30 % between processes here; ratios are what we report and compare.

Keys (``bioprop bench --json``):

``fa_over_bp_b32``, ``fa_over_bp_b128``
    fa trainer epoch ÷ bp (autograd) trainer epoch, 784-1000-10 logistic,
    random data of MNIST shape.  Target ≤ 0.8.
``fa_over_handloop``
    fa trainer epoch ÷ a minimal hand-written torch FA loop doing the same
    arithmetic (batch 32).  Target ≤ 1.1.
``recording_overhead``
    fa training recording every 100 steps ÷ the same without recording.
    Target ≤ 1.03.
``recording_rss_growth_mb``
    Resident memory growth (MB, absolute) over 10 000 records of a small circuit, one
    every step.  Target ≤ 20.

Floors — what the machine allows, measured the same way, so that a missed target can be
read against it:

``handloop_over_bp_b32``, ``handloop_over_bp_b128``
    the fastest plain-torch FA epoch (:func:`handloop_fa`) ÷ the bp trainer's epoch: the
    least any FA trainer's ``fa_over_bp`` can read.
``recording_bytes_floor``
    the fa epoch while a plain thread stores, every 100 steps, as many bytes as a record
    holds (copied on the training thread, written with ``os.pwrite``; at most one in
    flight, as the recorder) ÷ the same epoch storing nothing: the least any recorder of
    these variables can cost here (no HDF5, no shadow backprop).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from bioprop.core import init as _init
from bioprop.core import seeding
from bioprop.core.circuit import Circuit
from bioprop.data.base import Dataset
from bioprop.training.loop import epoch_order

__all__ = [
    "run_bench",
    "format_bench",
    "BENCHMARKS",
    "interleaved_ratio",
    "one_thread",
    "train_epoch",
]

TARGETS = {  # the throughput issue's targets
    "fa_over_bp_b32": 0.8,
    "fa_over_bp_b128": 0.8,
    "fa_over_handloop": 1.1,
    "recording_overhead": 1.03,
    "recording_rss_growth_mb": 20.0,
}


#: a key whose interquartile range exceeds this fraction of its median is "noisy"
TOLERANCE = 0.05
#: adaptive repeats: at most this many times the requested repeats, and no new repeat
#: starts after this many seconds of one key
MAX_REPEAT_FACTOR = 3
TIME_CAP_S = 300.0


def interleaved_ratio(
    candidate: Callable[[], None],
    baseline: Callable[[], None],
    repeats: int,
    max_repeats: int | None = None,
    time_cap: float = TIME_CAP_S,
) -> dict:
    """Median of candidate/baseline times over interleaved repeats (one warm-up each).

    At least ``repeats`` repeats run; more follow (up to ``max_repeats``, default
    ``MAX_REPEAT_FACTOR × repeats``, and while under ``time_cap`` seconds) until the
    interquartile range of the ratios is within ``TOLERANCE`` of their median.  Returns the
    median ``ratio`` with its spread (``ratio_q1``, ``ratio_q3``), ``noisy`` (the spread
    stayed wider: other processes on the cores?), the median times of both sides and the
    number of repeats run.
    """
    max_repeats = max(repeats, max_repeats or MAX_REPEAT_FACTOR * repeats)
    t_start = time.perf_counter()
    candidate()
    baseline()
    ratios, tc, tb = [], [], []
    while True:
        i = len(ratios)
        order = (candidate, baseline) if i % 2 == 0 else (baseline, candidate)
        times = {}
        for fn in order:
            t0 = time.perf_counter()
            fn()
            times[fn] = time.perf_counter() - t0
        tc.append(times[candidate])
        tb.append(times[baseline])
        ratios.append(times[candidate] / times[baseline])
        if len(ratios) < repeats:
            continue
        res = spread(ratios)
        settled = not noisy(res)
        out_of_time = time.perf_counter() - t_start > time_cap
        if settled or len(ratios) >= max_repeats or out_of_time:
            break
    return {
        **res,
        "noisy": not settled,
        "candidate_s": statistics.median(tc),
        "baseline_s": statistics.median(tb),
        "repeats": len(ratios),
    }


def spread(ratios: list[float]) -> dict:
    """``ratio`` (the median of ``ratios``) and its interquartile range ``ratio_q1``,
    ``ratio_q3`` — the spread every key reports beside its median."""
    q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {"ratio": statistics.median(ratios), "ratio_q1": q1, "ratio_q3": q3}


def noisy(res: dict) -> bool:
    """Whether a :func:`spread`'s interquartile range exceeds ``TOLERANCE`` of its median."""
    return res["ratio_q3"] - res["ratio_q1"] > TOLERANCE * res["ratio"]


@contextlib.contextmanager
def one_thread():
    """Run the block with one torch thread (small GEMMs: more threads only add overhead on a
    shared machine), restoring the previous count afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_epoch(
    make_circuit: Callable[[], Circuit],
    rule: str | Callable[[], object],
    data: Dataset,
    device: str,
    record: Callable[[], object] | None = None,
    **options,
) -> Callable[[], None]:
    """A closure that trains a fresh circuit from ``make_circuit()`` with ``rule`` for one
    epoch through :func:`bioprop.train` (seed 0, no evaluation, no progress bar) — the unit
    every epoch-ratio key times.  ``rule`` is a registry name or a zero-argument factory of a
    fresh rule; ``options`` are the remaining ``train`` arguments (loss, optimizer,
    batch_size, ...); ``record`` makes a fresh ``Record`` per call."""
    from bioprop.training.train import train

    def go():
        train(
            make_circuit(),
            rule if isinstance(rule, str) else rule(),
            data,
            epochs=1,
            seed=0,
            progress=False,
            device=device,
            evaluate_every_epoch=False,
            record=record() if record is not None else None,
            **options,
        )

    return go


def mnist_shaped(n: int, seed: int = 0, device: str = "cpu") -> Dataset:
    """Random data of MNIST shape: 784 inputs in [0, 1], 10 one-hot classes."""
    g = seeding.generator(seed, "bench data")
    x = torch.rand(n, 784, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return (
        Dataset("mnist-shaped", x, y, x[:1000], y[:1000], "classification", n_classes=10)
        .to(device)
        .with_one_hot()
    )


def lillicrap_circuit(seed: int = 0) -> Circuit:
    return Circuit.layered(
        [784, 1000, 10], activation="logistic", init=_init.uniform(0.05), seed=seed
    )


def _trainer_epoch(rule: str, data: Dataset, batch: int, device: str, record=None):
    return train_epoch(
        lillicrap_circuit,
        rule,
        data,
        device,
        record,
        loss="mse",
        optimizer=("sgd", {"lr": 0.1}),
        batch_size=batch,
    )


def handloop_fa(
    data: Dataset,
    batch: int,
    lr: float = 0.1,
    device: str = "cpu",
    B: torch.Tensor | None = None,
    keep: bool = False,
):
    """The fastest plain-torch FA epoch we can write (the arithmetic the fa rule does)::

        h = σ(W₁x + b₁),  o = σ(W₂h + b₂),  e = (o − y) ⊙ o(1 − o)
        δ_h = (B e) ⊙ h(1 − h),  W₂ −= η ⟨e hᵀ⟩,  W₁ −= η ⟨δ_h xᵀ⟩  (and biases)

    The baseline the trainer is held to: the epoch's data permuted once into contiguous
    tensors (each batch a view, no gather), every intermediate in a buffer allocated once
    (``torch.addmm(..., out=)``, in-place σ and products), fused in-place updates
    (``addmm_`` with ``alpha = −η/m``), one ``.item()`` per epoch.
    """

    def go():
        c = lillicrap_circuit()
        w1 = c.pathways["input->hidden"].weight.detach().clone().to(device)
        b1 = c.pathways["input->hidden"].bias.detach().clone().to(device)
        w2 = c.pathways["hidden->output"].weight.detach().clone().to(device)
        b2 = c.pathways["hidden->output"].bias.detach().clone().to(device)
        fb = (B if B is not None else torch.rand(1000, 10) * 0.1 - 0.05).to(device)
        fbt = fb.t().contiguous()
        n = data.x_train.shape[0]
        order = epoch_order(0, 0, n).to(device)
        x_all, y_all = data.x_train[order].contiguous(), data.y_train[order].contiguous()
        n_h, n_o = w1.shape[0], w2.shape[0]

        def buffers(m: int) -> tuple[torch.Tensor, ...]:  # h, o, e, δ_h, two scratch
            sizes = (n_h, n_o, n_o, n_h, n_h, n_o)
            return tuple(torch.empty(m, k, device=device) for k in sizes)

        buf = {m: buffers(m) for m in {min(batch, n), n % batch or batch}}  # full, last batch
        total = torch.zeros((), device=device)
        with torch.no_grad():
            for i in range(0, n, batch):
                x, y = x_all[i : i + batch], y_all[i : i + batch]
                m = x.shape[0]
                h, o, e, dh, gh, go_ = buf[m]
                torch.addmm(b1, x, w1.t(), out=h).sigmoid_()
                torch.addmm(b2, h, w2.t(), out=o).sigmoid_()
                torch.sub(o, y, out=e)
                total += e.pow(2).sum() * (0.5 / m)
                torch.mul(o, o, out=go_).neg_().add_(o)  # o(1 − o)
                e.mul_(go_)
                torch.mm(e, fbt, out=dh)
                torch.mul(h, h, out=gh).neg_().add_(h)  # h(1 − h)
                dh.mul_(gh)
                w2.addmm_(e.t(), h, alpha=-lr / m)
                b2.sub_(e.sum(0), alpha=lr / m)
                w1.addmm_(dh.t(), x, alpha=-lr / m)
                b1.sub_(dh.sum(0), alpha=lr / m)
        total.item()
        if keep:
            return {"w1": w1, "b1": b1, "w2": w2, "b2": b2}

    return go


@dataclass
class Bench:
    key: str
    description: str
    run: Callable[[bool, int, str], dict]


def _fa_over_bp(batch: int):
    def run(quick: bool, repeats: int, device: str) -> dict:
        data = mnist_shaped(6000 if quick else 60000, device=device)
        return interleaved_ratio(
            _trainer_epoch("fa", data, batch, device),
            _trainer_epoch("bp", data, batch, device),
            repeats,
        )

    return run


def _fa_over_handloop(quick: bool, repeats: int, device: str) -> dict:
    data = mnist_shaped(6000 if quick else 60000, device=device)
    return interleaved_ratio(
        _trainer_epoch("fa", data, 32, device), handloop_fa(data, 32, device=device), repeats
    )


def _handloop_over_bp(batch: int):
    def run(quick: bool, repeats: int, device: str) -> dict:
        data = mnist_shaped(6000 if quick else 60000, device=device)
        return interleaved_ratio(
            handloop_fa(data, batch, device=device),
            _trainer_epoch("bp", data, batch, device),
            repeats,
        )

    return run


class RawRecordWriter:
    """Stores records as plain bytes: :meth:`write` copies tensors into one buffer on the
    caller's thread and a writer thread appends it to a file with ``os.pwrite`` (at most one
    record in flight).  The floor under :class:`bioprop.recording.writer.Recorder`'s cost."""

    def __init__(self, path, nbytes: int):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        self.buf = np.empty(nbytes // 4, np.float32)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="bench-raw-writer")
        self.offset, self.pending = 0, None

    def write(self, tensors) -> None:
        if self.pending is not None:
            self.pending.result()
        flat, i = torch.from_numpy(self.buf), 0
        for t in tensors:
            n = t.numel()
            flat[i : i + n].view(t.shape).copy_(t.detach())
            i += n
        self.pending = self.pool.submit(os.pwrite, self.fd, self.buf.data, self.offset)
        self.offset += self.buf.nbytes

    def close(self) -> None:
        if self.pending is not None:
            self.pending.result()
        self.pool.shutdown()
        os.close(self.fd)


def _recording_bytes_floor(quick: bool, repeats: int, device: str) -> dict:
    """The recorded epoch's floor: every 100 steps W, ΔW and ΔW_bp's worth of bytes of every
    plastic feedforward pathway (weights and biases) stored raw (:class:`RawRecordWriter`)."""
    import tempfile
    from pathlib import Path

    data = mnist_shaped(6000 if quick else 60000, device=device)
    made: dict = {}

    def make() -> Circuit:
        c = lillicrap_circuit()
        made["params"] = [
            t
            for pw in c.feedforward_pathways()
            if pw.plastic
            for t in (pw.weight, pw.bias)
            if t is not None
        ]
        return c

    def on_step(step: int, signals) -> None:
        if step % 100 == 0:
            made["writer"].write(made["params"] * 3)  # W, ΔW, ΔW_bp: three copies' bytes

    with tempfile.TemporaryDirectory(prefix="bioprop-bench-") as tmp:
        make()  # the recorded parameters' sizes: W, ΔW and ΔW_bp (and b, Δb, Δb_bp), float32
        nbytes = 3 * 4 * sum(t.numel() for t in made["params"])

        epoch = train_epoch(
            make,
            "fa",
            data,
            device,
            None,
            loss="mse",
            optimizer=("sgd", {"lr": 0.1}),
            batch_size=32,
            on_step=on_step,
        )

        def floor() -> None:
            made["writer"] = RawRecordWriter(Path(tmp) / "raw.bin", nbytes)
            try:
                epoch()
            finally:
                made["writer"].close()

        return interleaved_ratio(floor, _trainer_epoch("fa", data, 32, device), repeats)


def _recording_overhead(quick: bool, repeats: int, device: str) -> dict:
    import tempfile
    from pathlib import Path

    from bioprop.recording.writer import Record

    data = mnist_shaped(6000 if quick else 60000, device=device)
    with tempfile.TemporaryDirectory(prefix="bioprop-bench-") as tmp:
        return interleaved_ratio(
            _trainer_epoch(
                "fa", data, 32, device, record=lambda: Record(Path(tmp) / "r.h5", every=100)
            ),
            _trainer_epoch("fa", data, 32, device),
            repeats,
        )


def _rss_mb() -> float:
    """Resident memory of this process now (MB), from /proc (nan where it is absent)."""
    try:
        with open("/proc/self/status") as f:
            kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        return kb / 1024
    except (OSError, StopIteration, ValueError):
        return float("nan")


def _recording_rss_growth(quick: bool, repeats: int, device: str) -> dict:
    """Resident memory growth (MB) over 10 000 records (2 000 with ``quick``) of a small
    circuit (the linear task's 30-20-10, a record every step), after 500 records of warm-up:
    the recorder must write at flat memory, whatever the length of the run."""
    import tempfile
    from pathlib import Path

    from bioprop.data import linear_teacher
    from bioprop.recording.writer import Record

    n = 2000 if quick else 10_000
    data = linear_teacher(n_train=n + 500, n_test=50, seed=0)
    growth = []
    with tempfile.TemporaryDirectory(prefix="bioprop-bench-") as tmp:
        for r in range(max(1, repeats)):
            marks = {}

            def mark(step: int, signals, start: int = 500, marks: dict = marks) -> None:
                if step in (start, start + n):
                    marks[step] = _rss_mb()

            def circuit() -> Circuit:
                return Circuit.layered(
                    [30, 20, 10], activation="linear", init=_init.uniform(0.01), bias=False
                )

            def record(r: int = r) -> Record:
                return Record(Path(tmp) / f"r{r}.h5", every=1)

            t0 = time.perf_counter()
            options = dict(loss="mse", optimizer=("sgd", {"lr": 0.01}), batch_size=1)
            train_epoch(circuit, "fa", data, device, record, on_step=mark, **options)()
            growth.append(marks.get(500 + n, _rss_mb()) - marks.get(500, float("nan")))
    return {
        **spread(growth),
        "candidate_s": time.perf_counter() - t0,
        "baseline_s": float("nan"),
        "repeats": len(growth),
    }


BENCHMARKS: dict[str, Bench] = {
    b.key: b
    for b in [
        Bench(
            "fa_over_bp_b32",
            "fa trainer epoch / bp trainer epoch, 784-1000-10, batch 32",
            _fa_over_bp(32),
        ),
        Bench(
            "fa_over_bp_b128",
            "fa trainer epoch / bp trainer epoch, 784-1000-10, batch 128",
            _fa_over_bp(128),
        ),
        Bench(
            "fa_over_handloop",
            "fa trainer epoch / hand-written torch FA loop, batch 32",
            _fa_over_handloop,
        ),
        Bench(
            "recording_rss_growth_mb",
            "resident memory growth (MB, absolute) over 10 000 records of a 30-20-10 circuit",
            _recording_rss_growth,
        ),
        Bench(
            "recording_overhead",
            "fa epoch recording every 100 steps / without recording",
            _recording_overhead,
        ),
        Bench(
            "handloop_over_bp_b32",
            "floor of fa_over_bp_b32: hand-written torch FA loop / bp trainer epoch, batch 32",
            _handloop_over_bp(32),
        ),
        Bench(
            "handloop_over_bp_b128",
            "floor of fa_over_bp_b128: hand-written torch FA loop / bp trainer, batch 128",
            _handloop_over_bp(128),
        ),
        Bench(
            "recording_bytes_floor",
            "floor of recording_overhead: a record's bytes stored raw every 100 steps / none",
            _recording_bytes_floor,
        ),
    ]
}


#: keys whose target is a least value (higher is better), not a most
AT_LEAST: set[str] = set()


def register(
    key: str,
    description: str,
    run: Callable[[bool, int, str], dict],
    target: float | None = None,
    at_least: bool = False,
) -> None:
    """Add a benchmark (later modules: EP, spiking, datasets); ``at_least``: the target is
    a least value (higher is better)."""
    BENCHMARKS[key] = Bench(key, description, run)
    if target is not None:
        TARGETS[key] = target
    if at_least:
        AT_LEAST.add(key)


def run_bench(
    quick: bool = False,
    only: list[str] | None = None,
    repeats: int | None = None,
    device: str = "cpu",
) -> dict[str, dict]:
    """Run the benchmarks (all, or ``only`` these keys); returns ``{key: result}``."""
    _load_extensions()
    keys = list(BENCHMARKS) if not only else list(only)
    unknown = [k for k in keys if k not in BENCHMARKS]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {unknown}; available: {', '.join(BENCHMARKS)}")
    reps = repeats if repeats is not None else (3 if quick else 5)
    if reps < 1:
        raise ValueError(f"repeats must be >= 1, got {reps}")
    out = {}
    for k in keys:
        machine = {"torch_threads": torch.get_num_threads(), "load_average": os.getloadavg()[0]}
        res = BENCHMARKS[k].run(quick, reps, device)
        res.update(
            description=BENCHMARKS[k].description,
            target=TARGETS.get(k),
            target_is_least=k in AT_LEAST,
            **machine,
        )
        out[k] = res
    return out


def _load_extensions() -> None:
    """Import every module of :mod:`bioprop.experiments.benchmarks` (each registers keys)."""
    import importlib
    import pkgutil

    import bioprop.experiments.benchmarks as pkg

    for m in pkgutil.iter_modules(pkg.__path__):
        if not m.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{m.name}")


def format_bench(res: dict[str, dict]) -> str:
    """The table ``bioprop bench`` prints: the machine's state at the start (torch threads,
    load average), then each key's median ratio, its interquartile range over the repeats,
    the repeats run, the target, the median times of both sides, and a warning for a key
    whose spread stayed wide."""
    first = next(iter(res.values()), {})
    lines = [
        f"torch threads {first.get('torch_threads', '?')}, load average "
        f"{first.get('load_average', float('nan')):.2f} at the start",
        f"{'key':<28} {'ratio':>7} {'IQR':>13} {'n':>3} {'target':>7}  {'cand (s)':>9} "
        f"{'base (s)':>9}  what",
    ]
    nan = float("nan")
    for k, r in res.items():
        sign = "≥" if r.get("target_is_least") else "≤"
        tgt = f"{sign}{r['target']:.2f}" if r.get("target") else ""
        iqr = f"{r.get('ratio_q1', nan):.3f}-{r.get('ratio_q3', nan):.3f}"
        note = "  NOISY: spread > 5 % of the median (other processes on the cores?)"
        lines.append(
            f"{k:<28} {r['ratio']:>7.3f} {iqr:>13} {r.get('repeats', 0):>3} {tgt:>7}  "
            f"{r.get('candidate_s', nan):>9.3f} {r.get('baseline_s', nan):>9.3f}  "
            f"{r['description']}" + (note if r.get("noisy") else "")
        )
    return "\n".join(lines)
