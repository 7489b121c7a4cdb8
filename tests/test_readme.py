"""README's circuit scripts run as written."""

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

README = Path(__file__).resolve().parents[1] / "README.md"


def _scripts() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_a_feedforward_and_a_recurrent_script():
    scripts = _scripts()
    assert any('"fa"' in s for s in scripts)
    assert any('kind="recurrent"' in s for s in scripts)


@pytest.mark.parametrize("index", range(len(_scripts())))
def test_readme_script_runs_as_written(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    source = _scripts()[index]
    exec(compile(source, f"README.md script {index}", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert "rule=" in out  # run.summary() was printed
    assert any(p.suffix == ".h5" for p in (tmp_path / "runs").iterdir())
