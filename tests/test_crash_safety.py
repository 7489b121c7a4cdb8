"""Crash consistency: a recording killed at any moment opens with every completed record,
all-or-nothing across the variables of a step; live reading; summary files of compare."""

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import bioprop as bp

# The start of a fork server's script: arguments base directory, number of kills, seed.
FORK_SERVER = textwrap.dedent("""
    import json, os, random, signal, sys, time
    import torch
    torch.set_num_threads(1)
    import bioprop as bp
    base, kills, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rng = random.Random(seed)

    def fork_child(run):
        # a child process that calls run(w) with the write end w of a pipe, then exits;
        # returns the child's pid and the read end of the pipe
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                run(w)
            finally:
                os._exit(0)
        os.close(w)
        return pid, r
""")

# A fork server: imports bioprop once, then for every kill forks a child that trains a
# small circuit recording every step (printing each step after its record is committed)
# and SIGKILLs it after a random delay.  Prints one JSON line per kill.
KILLER = FORK_SERVER + textwrap.dedent("""
    background = sys.argv[4] == "1"
    data = bp.data.linear_teacher(n_in=40, n_out=10, n_train=4000, n_test=10, seed=1)

    def child(path, w, max_steps=None):
        def on_step(step, signals):
            os.write(w, f"{step}\\n".encode())
        c = bp.Circuit.layered([40, 60, 30, 10], activation="tanh", seed=0)
        bp.train(c, "fa", data, optimizer=("sgd", {"lr": 1e-3}), epochs=1, batch_size=8,
                 record=bp.Record(path, every=1, samples=4, background=background),
                 progress=False, on_step=on_step,
                 max_steps=max_steps)
        os.write(w, b"done\\n")

    child(os.path.join(base, "warm-up.h5"), os.open(os.devnull, os.O_WRONLY), max_steps=2)

    for k in range(kills):
        path = os.path.join(base, f"run{k}.h5")
        pid, r = fork_child(lambda w: child(path, w))
        time.sleep(rng.uniform(0.0, 1.2))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        lines = b""
        while chunk := os.read(r, 65536):
            lines += chunk
        os.close(r)
        seen = [x for x in lines.decode().split()]
        done = "done" in seen
        steps = [int(x) for x in seen if x != "done"]
        print(json.dumps({"path": path, "confirmed": max(steps) + 1 if steps else 0,
                          "done": done}), flush=True)
""")


def check_recording(path, confirmed):
    """The file opens, holds at least the ``confirmed`` records, all complete.  (With a
    background writer the caller passes confirmed − 1: the record in flight may be lost.)"""
    rec = bp.load(path)
    try:
        steps = rec["metrics"].ds.step.values
        n = len(steps)
        assert n >= confirmed, (path, n, confirmed)
        assert list(steps) == list(range(n))
        for group in ("metrics", "pathways", "populations"):
            node = rec[group]
            for child in [node, *node.children.values()]:
                ds = child.ds
                for v in ds.data_vars:
                    assert ds[v].sizes["step"] == n, (path, child.path, v)
        for pw in rec["pathways"].children.values():
            assert np.isfinite(pw.ds.weight.values).all(), (path, pw.path)
        for pop in rec["populations"].children.values():
            assert np.isfinite(pop.ds.rate.values).all(), (path, pop.path)
        return n
    finally:
        rec.close()


def kill_many(tmp_path, kills, seed, background=True):
    """Kill ``kills`` training runs at random moments; every record confirmed by
    ``on_step`` is on disk and complete — all but the one in flight with a background
    writer (at most one record is ever in flight, and never half of it is kept)."""
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path), str(kills), str(seed), str(int(background))],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=True,
    ).stdout
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert len(results) == kills
    counted = []
    for r in results:
        if not os.path.exists(r["path"]):  # killed while laying out: nothing was recorded
            assert r["confirmed"] == 0
            counted.append(0)
            continue
        in_flight = 1 if background else 0
        counted.append(check_recording(r["path"], max(0, r["confirmed"] - in_flight)))
    return results, counted


def test_sigkill_at_random_moments_leaves_every_completed_record_readable(tmp_path):
    results, counted = kill_many(tmp_path, kills=12, seed=0)
    # the kills fell during recording, not all before or after it
    assert sum(0 < n for n in counted) >= 6
    assert not all(r["done"] for r in results)


def test_with_the_writer_thread_off_every_confirmed_record_survives_a_kill(tmp_path):
    results, counted = kill_many(tmp_path, kills=6, seed=2, background=False)
    assert sum(0 < n for n in counted) >= 3


@pytest.mark.slow
def test_sigkill_at_fifty_random_moments_leaves_every_completed_record_readable(tmp_path):
    results, counted = kill_many(tmp_path, kills=60, seed=1)
    assert sum(0 < n for n in counted) >= 40


SLOW_WRITER = textwrap.dedent("""
    import sys, time, torch
    import bioprop as bp
    torch.set_num_threads(1)
    data = bp.data.linear_teacher(n_in=8, n_out=3, n_train=4000, n_test=10, seed=1)
    c = bp.Circuit.layered([8, 6, 3], activation="tanh", seed=0)
    bp.train(c, "fa", data, optimizer=("sgd", {"lr": 0.05}), epochs=1, batch_size=4,
             record=bp.Record(sys.argv[1], every=1), progress=False,
             on_step=lambda step, signals: time.sleep(0.02))
""")


@contextlib.contextmanager
def slow_writer(path):
    """Runs SLOW_WRITER, recording to ``path``, in a child process: waits (60 s at most) for
    the recording to appear, yields the process and kills it on the way out."""
    script = path.parent / "writer.py"
    script.write_text(SLOW_WRITER)
    proc = subprocess.Popen([sys.executable, str(script), str(path)])
    try:
        deadline = time.time() + 60
        while not path.exists() and time.time() < deadline:
            time.sleep(0.05)
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_recording_is_readable_by_load_and_inspect_while_it_is_written(tmp_path, capsys):
    from bioprop.experiments.cli import main

    path = tmp_path / "live.h5"
    with slow_writer(path) as proc:
        seen = []
        for _ in range(5):
            time.sleep(0.3)
            assert proc.poll() is None, "the writer finished before the live reads"
            with bp.load(path) as rec:
                n = rec["metrics"].ds.sizes["step"]
                assert rec["pathways/input->hidden"].ds.weight.sizes["step"] == n
            seen.append(n)
            assert main(["inspect", str(path)]) == 0
            assert "records" in capsys.readouterr().out
        assert seen[-1] > seen[0] > 0, seen


# (the test kills it; 1000 steps of 20 ms outlast any test's preamble on a loaded machine)


# A fork server: imports bioprop once, then for every kill forks a child that runs a quick
# compare and says (through a pipe) when it starts writing its summary; the summary write is
# slowed down so that the SIGKILL, after a random delay, falls before, inside and after it.
COMPARE = FORK_SERVER + textwrap.dedent("""
    import xarray as xr
    to_netcdf = xr.Dataset.to_netcdf
    said = None

    def slow(self, path, *args, **kwargs):
        if said is not None and "summary" in str(path):
            os.write(said, b"summary\\n")
        out = to_netcdf(self, path, *args, **kwargs)
        time.sleep(0.1)
        return out

    xr.Dataset.to_netcdf = slow

    def go(out, w):
        global said
        said = w
        bp.compare("linear", rules=["bp", "fa"], seeds=1, quick=True, out=out, overwrite=True,
                   progress=False)

    # no compare in this process before forking: its threads (dask) would hold locks at fork
    for k in range(kills):
        out = os.path.join(base, f"out{k}")
        pid, r = fork_child(lambda w: go(out, w))
        with os.fdopen(r) as lines:
            for line in lines:
                time.sleep(rng.uniform(0.0, 0.12))
                break
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print(json.dumps({"out": out}), flush=True)
""")


def test_killing_compare_while_it_writes_its_summary_leaves_none_or_a_whole_one(tmp_path):
    import xarray as xr

    script = tmp_path / "compare.py"
    script.write_text(COMPARE)
    res = subprocess.run(
        [sys.executable, str(script), str(tmp_path), "4", "0"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
        check=True,
    )
    outs = [json.loads(line)["out"] for line in res.stdout.splitlines() if line.startswith("{")]
    assert len(outs) == 4
    outcomes = set()
    for out in outs:
        summary = os.path.join(out, "summary.nc")
        if os.path.exists(summary):
            with xr.open_dataset(summary, engine="h5netcdf") as ds:
                assert set(ds.rule.values) == {"bp", "fa"}
                assert np.isfinite(ds.final_loss.values).all()
            outcomes.add("complete")
        else:
            outcomes.add("absent")
    assert "absent" in outcomes, outcomes  # some kills fell before the rename


# -- one writer per recording --
def test_a_second_writer_is_refused_naming_the_running_one(tmp_path):
    import socket

    from bioprop.experiments.compare import check_output_dir
    from bioprop.recording.lock import RecordingLockedError

    path = tmp_path / "live.h5"
    with slow_writer(path) as proc:
        time.sleep(0.3)
        data = bp.data.linear_teacher(n_in=8, n_out=3, n_train=40, n_test=10, seed=1)
        c = bp.Circuit.layered([8, 6, 3], seed=0)
        with pytest.raises(RecordingLockedError) as info:
            bp.train(c, "bp", data, record=bp.Record(path, every=1), progress=False)
        msg = str(info.value)
        assert f"pid {proc.pid} on host {socket.gethostname()} since 20" in msg
        assert str(path) in msg
        with pytest.raises(RecordingLockedError, match=f"pid {proc.pid}"):
            check_output_dir(tmp_path, overwrite=True)
        assert path.exists()
        with bp.load(path) as rec:
            before = rec["metrics"].ds.sizes["step"]
        time.sleep(0.5)
        assert proc.poll() is None
        with bp.load(path) as rec:  # the running writer was not disturbed
            assert rec["metrics"].ds.sizes["step"] > before
    # its death released the lock: the next writer goes ahead
    bp.train(c, "bp", data, record=bp.Record(path, every=1), progress=False, max_steps=2)
    with bp.load(path) as rec:
        assert rec["metrics"].ds.sizes["step"] == 2


# -- a full disk --
@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (needs root and mount; skipped elsewhere)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {res.stderr.decode().strip()[:120]}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


FILL = textwrap.dedent("""
    import json, sys, torch
    import bioprop as bp
    torch.set_num_threads(1)
    path, ckpt = sys.argv[1], sys.argv[2]
    data = bp.data.linear_teacher(n_in=40, n_out=10, n_train=4000, n_test=10, seed=1)
    c = bp.Circuit.layered([40, 60, 30, 10], activation="tanh", seed=0)
    try:
        bp.train(c, "fa", data, optimizer=("sgd", {"lr": 1e-3}), batch_size=8,
                 record=bp.Record(path, every=1, samples=4) if path != "-" else None,
                 checkpoint=bp.Checkpoint(ckpt, every=1) if ckpt != "-" else None,
                 progress=False)
        print(json.dumps({"errno": None}))
    except OSError as exc:
        print(json.dumps({"errno": exc.errno, "message": str(exc), "type": type(exc).__name__}))
""")


def run_fill(tmp_path, *args):
    script = tmp_path / "fill.py"
    script.write_text(FILL)
    res = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]  # no crash at exit
    assert "Segmentation" not in res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_a_full_disk_stops_recording_with_a_clear_error_and_keeps_the_records(tmp_path, small_disk):
    path = small_disk / "run.h5"
    out = run_fill(tmp_path, path, "-")
    assert out["errno"] == 28, out
    assert str(path) in out["message"] and "no space left on device" in out["message"]
    n = check_recording(path, 1)
    assert n >= 10
    assert sorted(p.name for p in small_disk.iterdir()) == ["run.h5"]  # no lock, no temp


def test_a_full_disk_while_checkpointing_names_the_checkpoint_and_leaves_no_temp(
    tmp_path, small_disk
):
    (small_disk / "ballast").write_bytes(bytes(3 * 2**20 - 60_000))
    ckpt = small_disk / "ckpt.pt"
    out = run_fill(tmp_path, "-", ckpt)
    assert out["errno"] == 28, out
    assert str(ckpt) in out["message"] and "no space left on device" in out["message"]
    assert sorted(p.name for p in small_disk.iterdir()) in (["ballast"], ["ballast", "ckpt.pt"])


def test_a_full_disk_before_the_first_record_leaves_nothing_half_made(tmp_path, small_disk):
    (small_disk / "ballast").write_bytes(bytes(3 * 2**20 - 8192))
    path = small_disk / "run.h5"
    out = run_fill(tmp_path, path, "-")
    assert out["errno"] == 28, out
    assert str(path) in out["message"] and "no space left on device" in out["message"]
    assert sorted(p.name for p in small_disk.iterdir()) == ["ballast"]


# -- no stray temporary files --
def test_the_recording_benchmark_removes_its_temporary_folder(tmp_path, monkeypatch):
    import tempfile

    from bioprop.experiments import bench

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    small = bench.mnist_shaped(64)
    monkeypatch.setattr(bench, "mnist_shaped", lambda n, device="cpu": small)
    res = bench.BENCHMARKS["recording_overhead"].run(True, 1, "cpu")
    assert res["ratio"] > 0
    assert list(tmp_path.glob("bioprop-*")) == []
