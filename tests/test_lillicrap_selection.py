"""circuits/lillicrap_mnist.py's choices on the validation split: a setting per rule and,
with --select-epochs, its number of epochs (early stopping)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def script(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "circuits"))
    import lillicrap_mnist

    return lillicrap_mnist


def _summary(curves: dict[str, list[float]]) -> xr.Dataset:
    rules = list(curves)
    return xr.Dataset(
        {
            "test_error_by_epoch": (("rule", "seed", "epoch"), [[curves[r]] for r in rules]),
            "test_error": (("rule", "seed"), [[curves[r][-1]] for r in rules]),
        },
        coords={"rule": rules, "seed": [0], "epoch": [1, 2, 3, 4]},
    )


def test_early_stopping_takes_the_epoch_of_least_validation_error(script):
    ds = _summary({"fa": [0.30, 0.20, 0.25, 0.20], "bp": [0.4, 0.3, math.nan, math.nan]})
    assert script.validation_error(ds, "fa", True, 4) == (0.20, 2)  # the earliest of a tie
    assert script.validation_error(ds, "bp", True, 4) == (0.3, 2)  # a curve cut short
    assert script.validation_error(ds, "fa", False, 4) == (0.20, 4)  # without: the last


def test_a_run_without_a_curve_is_never_chosen(script):
    error, epochs = script.validation_error(_summary({"fa": [math.nan] * 4}), "fa", True, 4)
    assert math.isnan(error) and epochs == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--select-epochs"], "--select-epochs chooses on validation with a --select-"),
        (["--select-feedback-scales", "1,2", "--validation"], "drop --validation"),
        (["--workers", "0", "--quick"], "--workers must be at least 1"),
    ],
)
def test_a_selection_it_cannot_make_is_refused_before_any_run(
    script, argv, message, capsys, tmp_path
):
    with pytest.raises(SystemExit) as exit_:
        script.main([*argv, "--out", str(tmp_path / "out")])
    assert message in capsys.readouterr().err + str(exit_.value.code)
    assert not (tmp_path / "out").exists()
