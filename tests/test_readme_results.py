"""README's result tables agree with the files under data/results that the commands wrote.

Every number in README comes from a command shown beside it; the command stores what it
measured under ``data/results``.  These tests read those files and check that README shows
the same numbers, so README cannot drift from what the code produced.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import pytest

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


def mean_sd(values, scale: float = 100.0, fmt: str = ".2f") -> str:
    vals = [scale * v for v in values if math.isfinite(v)]
    return f"{statistics.fmean(vals):{fmt}} ± {statistics.stdev(vals):{fmt}}"


def test_the_compare_table_is_the_one_the_command_stored():
    rows = (RESULTS / "compare_linear.txt").read_text().splitlines()
    table = [r for r in rows if r.strip() and not r.startswith(("task ", "wrote "))]
    assert len(table) >= 8
    for row in table:
        assert row in README, f"README's compare table lacks the stored row {row!r}"


@pytest.mark.parametrize(
    ("name", "rows"),
    [
        ("dtp_lee.json", {"bp": "| bp |", "fa": "| fa |", "dtp": "| dtp |"}),
        (
            "dtp_meulemans.json",
            {"bp": "| bp |", "dtp": "| dtp |", "dtp-drl": "| dtp-drl |", "ddtp-linear": "| ddtp"},
        ),
    ],
)
def test_the_target_propagation_tables_show_the_stored_test_errors(name, rows):
    variants = results(name)["variants"]
    for label, start in rows.items():
        errs = [r["test_error"] for r in variants[label]["per_seed"]]
        expected = mean_sd(errs)
        lines = [ln for ln in README.splitlines() if ln.startswith(start) and expected in ln]
        assert lines, f"{name}: README shows no row {start!r} with {expected} %"


def test_the_bartunov_dtp_table_shows_the_stored_means():
    err = results("bartunov_fc.json")["test_error"]
    lines = section("bartunov_fc.py --rules bp,dtp,dtp-alternating")
    labels = {"bp": "| bp |", "dtp": "| dtp, parallel |", "dtp-alternating": "| dtp, alternating |"}
    for rule, label in labels.items():
        row = next(ln for ln in lines if ln.startswith(label))
        assert f"{100 * err[rule]:.2f} ±" in row, (rule, row)


def test_the_kickback_table_shows_the_stored_test_nmse():
    res = results("kickback_regression.json")["results"]["planar-arm"]
    lines = section("### Kickback")
    for rule, r in res.items():
        expected = format(statistics.fmean(r["test_nmse"]), ".3g")
        row = next(ln for ln in lines if re.match(rf"\| \**{rule}\** \|", ln))
        assert expected in row, (rule, expected, row)


def test_the_sweep_speed_in_readme_is_the_stored_measurement():
    text = (RESULTS / "bench_sweep.txt").read_text()
    speedup = float(re.search(r"^sweep_speedup_2workers\s+([\d.]+)", text, re.M).group(1))
    row = next(ln for ln in README.splitlines() if ln.startswith("| `sweep_speedup_2workers`"))
    assert f"{speedup:.2f}" in row, row
