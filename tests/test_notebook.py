"""Every notebook in analyses/ (jupytext percent-format .py) executes without errors.

The notebooks run in a Jupyter kernel started from *this* interpreter: the test writes
a throw-away kernel spec pointing at ``sys.executable`` and puts it first on
``JUPYTER_PATH``, so it needs no ``python3`` kernel installed on the machine and can
never pick up another Python that lacks bioprop.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

jupytext = pytest.importorskip("jupytext")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "analyses").glob("*.py"))
KERNEL = "bioprop-tests"


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernel spec for the running interpreter, found through JUPYTER_PATH."""
    spec = tmp_path / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": f"Python ({sys.executable})",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv(
        "JUPYTER_PATH",
        os.pathsep.join(
            [str(tmp_path / "jupyter"), *filter(None, [os.environ.get("JUPYTER_PATH")])]
        ),
    )
    monkeypatch.setenv("PYTHONWARNINGS", "default")
    return KERNEL


def execute(path: Path, kernel: str, cwd: Path, timeout: int = 120):
    nb = jupytext.read(path)
    client = nbclient.NotebookClient(
        nb,
        kernel_name=kernel,
        timeout=timeout,
        allow_errors=False,
        resources={"metadata": {"path": str(cwd)}},
    )
    client.execute()  # raises CellExecutionError, with the traceback, on the first error
    return nb


def errors_in(nb) -> list[str]:
    return [
        f"{o.get('ename')}: {o.get('evalue')}"
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
        if o.get("output_type") == "error"
    ]


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks in {ROOT / 'analyses'}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path: Path, kernel: str, tmp_path: Path, monkeypatch):
    # the notebooks' defaults: no recording folder given, they make their own
    monkeypatch.delenv("BIOPROP_RECORDINGS", raising=False)
    nb = execute(path, kernel, tmp_path)
    assert not errors_in(nb)


@pytest.mark.slow
def test_alignment_notebook_reads_a_script_output(kernel: str, tmp_path: Path, monkeypatch):
    """The alignment notebook analyses what a circuit script wrote (BIOPROP_RECORDINGS)."""
    out = tmp_path / "recordings"
    res = subprocess.run(
        [
            sys.executable,
            str(ROOT / "circuits" / "lillicrap_pseudoinverse.py"),
            "--quick",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "MPLBACKEND": "Agg"},
    )
    assert res.returncode == 0, res.stderr
    monkeypatch.setenv("BIOPROP_RECORDINGS", str(out))
    nb = execute(ROOT / "analyses" / "alignment.py", kernel, tmp_path)
    assert not errors_in(nb)
    text = "\n".join(
        str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
    )
    assert "fa_small_seed0" in text  # the script's recording was the one analysed
