"""Every runnable script in circuits/ runs its --quick budget and writes what it promises.

Scripts are found by glob (helpers whose names start with ``_`` are skipped), so a new
script is covered as soon as it is added.  Each quick run is a subprocess with the
current interpreter, the way a user runs it; they run side by side, one per core (most
of a quick run is importing torch), and each script's test then checks its own output.
"""

from __future__ import annotations

import contextlib
import io
import os
import runpy
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import bioprop as bp

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "circuits").glob("*.py") if not p.name.startswith("_"))
TIMEOUT = 300


@pytest.fixture(scope="module")
def quick_runs(
    request, tmp_path_factory
) -> dict[str, tuple[subprocess.CompletedProcess, Path, Path]]:
    """Run the selected scripts with ``--quick --out <tmp>/out``, as many at once as there
    are cores; per script name: (completed process, its working directory, its --out
    folder).  Only scripts whose test was selected run (``-k lillicrap_linear`` runs one)."""
    selected = {
        item.callspec.params["script"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_quick_run_writes_recordings_and_figure"
    }
    # quick runs go side by side, one per core: one intra-op thread each, or OpenMP
    # threads fighting over the cores make every step many times slower
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    jobs = {}
    for script in sorted(selected):
        cwd = tmp_path_factory.mktemp(script.stem)
        jobs[script.stem] = (script, cwd, cwd / "out")

    def run(job):
        script, cwd, out = job
        cmd = [sys.executable, str(script), "--quick", "--out", str(out)]
        try:
            return subprocess.run(
                cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT
            )
        except subprocess.TimeoutExpired as exc:  # its output arrives as bytes
            out_, err = (
                b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
                for b in (exc.stdout, exc.stderr)
            )
            return subprocess.CompletedProcess(
                cmd, -9, out_, f"{err}\n[--quick run killed after {TIMEOUT} s]"
            )

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        done = dict(zip(jobs, pool.map(run, jobs.values()), strict=True))
    return {name: (done[name], cwd, out) for name, (_, cwd, out) in jobs.items()}


def test_there_are_scripts():
    assert SCRIPTS, f"no scripts found in {ROOT / 'circuits'}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_quick_run_writes_recordings_and_figure(script: Path, quick_runs):
    res, cwd, out = quick_runs[script.stem]
    assert res.returncode == 0, f"{script.name} failed:\n{res.stdout}\n{res.stderr}"
    assert res.stdout.strip(), f"{script.name} printed no summary table"
    assert "Traceback" not in res.stderr, res.stderr
    pngs = list(out.glob("*.png"))
    assert pngs, f"{script.name} wrote no .png into {out}: {sorted(os.listdir(out))}"
    assert all(p.stat().st_size > 1000 for p in pngs)
    recordings = sorted(out.glob("*.h5"))
    assert recordings, f"{script.name} wrote no .h5 recording into {out}"
    for path in recordings:
        tree = bp.load(path)
        try:
            assert {"metrics", "pathways", "populations"} <= set(tree.children), path
            assert tree["metrics"].sizes["step"] > 0, f"{path} holds no records"
            assert "rule" in tree.attrs
        finally:
            tree.close()
    # nothing was written outside --out (the default runs/<script> must not appear)
    assert sorted(p.name for p in cwd.iterdir()) == ["out"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_help(script: Path, tmp_path: Path, monkeypatch):
    """``--help`` prints the options and exits 0 without writing anything.  Run in-process
    (as ``__main__``, the way ``python script.py --help`` runs it) to save a torch import."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [str(script), "--help"])
    monkeypatch.syspath_prepend(str(script.parent))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_.value.code in (0, None)
    text = stdout.getvalue()
    for option in ("--out", "--quick", "--seeds"):
        assert option in text, f"{script.name} --help does not mention {option}"
    assert not any(tmp_path.iterdir()), "--help must not write anything"
