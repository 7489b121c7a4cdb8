"""README's result tables agree with the files under data/results that the commands wrote.

Every number in README comes from a command shown beside it; the command stores what it
measured under ``data/results``.  These tests read those files and check that README shows
the same numbers, so README cannot drift from what the code produced.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from bioprop.experiments import report
from bioprop.experiments.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
RESULTS = ROOT / "data" / "results"


def section(start: str) -> list[str]:
    """README's lines from the first line containing ``start`` to the next heading."""
    lines = README.splitlines()
    i = next(k for k, ln in enumerate(lines) if start in ln)
    end = next((k for k in range(i + 1, len(lines)) if lines[k].startswith("#")), len(lines))
    return lines[i:end]


def results(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def test_every_results_block_of_readme_is_what_the_stored_data_regenerates():
    """README's tables between ``<!-- results: … -->`` markers are rendered from data/ by
    ``bioprop report``; a README edited by hand, or data re-run without regenerating README,
    fails here with the diff."""
    found = report.blocks(README)
    assert len(found) >= 10
    diff = report.check(ROOT / "README.md", ROOT)
    assert not diff, "README differs from data/ — run `bioprop report`:\n" + diff


def test_the_report_command_rewrites_a_block_and_its_check_fails_until_then(tmp_path):
    (tmp_path / "data" / "results").mkdir(parents=True)
    (tmp_path / "data" / "results" / "x.txt").write_text("head\nrow 1\nrow 2\nwrote it\n")
    readme = tmp_path / "README.md"
    readme.write_text(
        'A\n<!-- results: x.txt from="row" to="wrote" -->\nold\n<!-- /results -->\nB\n'
    )
    assert main(["report", "--readme", str(readme), "--check"]) == 1
    assert main(["report", "--readme", str(readme)]) == 0
    assert readme.read_text() == (
        'A\n<!-- results: x.txt from="row" to="wrote" -->\n```\nrow 1\nrow 2\n```\n'
        "<!-- /results -->\nB\n"
    )
    assert main(["report", "--readme", str(readme), "--check"]) == 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<!-- results: nosuch -->\n<!-- /results -->\n", "known tables: dni_language"),
        ("<!-- results: gone.txt -->\n<!-- /results -->\n", "gone.txt, which does not exist"),
        ("<!-- results: kickback -->\n", "never closed"),
        ("<!-- /results -->\n", "without an opening block"),
        ("<!-- results: kickback width=3 -->\n<!-- /results -->\n", "unknown option"),
    ],
)
def test_a_bad_results_block_is_refused_naming_what_is_wrong(tmp_path, text, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        report.regenerate(text, tmp_path)


def test_numbers_quoted_in_kickback_prose_are_the_stored_ones():
    res = results("kickback_regression_40epochs.json")["results"]["planar-arm"]
    bp, kb = (statistics.fmean(res[r]["test_nmse"]) for r in ("bp", "kickback"))
    prose = "\n".join(section("### Kickback"))
    assert f"{bp:.3g}" in prose and f"{kb:.3g}" in prose and f"{kb / bp:.2f}" in prose
