"""Analysis functions: angles are well-behaved measures (property-based)."""

import numpy as np
import xarray as xr
from conftest import train_quietly
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import bioprop as bp

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=64)
vec = arrays(np.float64, st.integers(2, 12), elements=finite)


def da(a):
    return xr.DataArray(np.asarray(a)[None], dims=("step", "neuron"))


def angle(a, b):
    return float(bp.analysis.angle(da(a), da(b), ["neuron"])[0])


def nonzero(a):
    return np.linalg.norm(a) > 1e-6


@settings(max_examples=200, deadline=None)
@given(vec, st.data())
def test_angles_lie_between_0_and_180_and_are_symmetric(a, data):
    b = data.draw(arrays(np.float64, a.shape, elements=finite))
    assume(nonzero(a) and nonzero(b))
    t = angle(a, b)
    assert 0.0 <= t <= 180.0
    assert np.isclose(t, angle(b, a))


@settings(max_examples=200, deadline=None)
@given(vec, st.data(), st.floats(1e-3, 1e3), st.floats(1e-3, 1e3))
def test_angles_are_scale_invariant(a, data, s1, s2):
    b = data.draw(arrays(np.float64, a.shape, elements=finite))
    assume(nonzero(a) and nonzero(b))
    assert np.isclose(angle(a, b), angle(s1 * a, s2 * b), atol=1e-5)


@settings(max_examples=100, deadline=None)
@given(vec, st.floats(1e-3, 1e3))
def test_parallel_is_0_and_antiparallel_is_180(a, s):
    assume(nonzero(a))
    assert angle(a, s * a) < 1e-4
    assert angle(a, -s * a) > 180 - 1e-4


def test_orthogonal_is_90_and_zero_vectors_give_nan():
    assert np.isclose(angle([1.0, 0.0], [0.0, 2.0]), 90.0)
    assert np.isnan(angle([0.0, 0.0], [1.0, 0.0]))


def test_angle_keeps_the_step_dimension_and_skips_nan_samples():
    a = xr.DataArray(
        [[[1.0, 0.0], [np.nan, np.nan]], [[0.0, 1.0], [1.0, 0.0]]],
        dims=("step", "sample", "neuron"),
        coords={"step": [0, 10]},
    )
    b = xr.DataArray(
        [[[2.0, 0.0], [5.0, 5.0]], [[0.0, 1.0], [-1.0, 0.0]]],
        dims=("step", "sample", "neuron"),
        coords={"step": [0, 10]},
    )
    out = bp.analysis.angle(a, b, ["sample", "neuron"])
    assert out.dims == ("step",) and list(out.step.values) == [0, 10]
    assert np.isclose(out.sel(step=0), 0.0)  # the NaN sample is skipped
    assert np.isclose(out.sel(step=10), 90.0)


def test_analyses_run_on_a_recording_and_name_missing_groups(tmp_path):
    data = bp.data.linear_teacher(n_in=8, n_out=3, n_train=40, n_test=8)
    c = bp.Circuit.layered([8, 6, 3], activation="linear", init=bp.init.uniform(0.1), bias=False)
    record = bp.Record(tmp_path / "r.h5", every=2)
    train_quietly(c, "fa", data, lr=0.01, epochs=1, batch_size=4, record=record)
    rec = bp.load(tmp_path / "r.h5")
    for f in (
        bp.analysis.weight_alignment,
        bp.analysis.norm_ratio,
        bp.analysis.sign_concordance,
        bp.analysis.pseudoinverse_angle,
    ):
        out = f(rec, "hidden->output")
        assert out.dims == ("step",) and out.sizes["step"] == 5
    assert bp.analysis.update_angle(rec, "hidden").dims == ("step",)
    assert bp.analysis.update_angle(rec, "input->hidden").dims == ("step",)
    # the output layer's fa update is bp's: angle 0
    assert float(bp.analysis.update_angle(rec, "hidden->output").max()) < 1e-2
    import pytest

    with pytest.raises(KeyError, match="no pathway or population 'hiden'"):
        bp.analysis.update_angle(rec, "hiden")
    with pytest.raises(KeyError, match="no feedback pathway .* mirrors 'input->hidden'"):
        bp.analysis.weight_alignment(rec, "input->hidden")
