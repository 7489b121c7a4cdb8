"""Recordings of differentiable plasticity: α, η, trace snapshots beside the reference,
the analyses over them, and the benchmark's hand loop doing the same arithmetic."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import bioprop as bp
from bioprop.analysis import plasticity as ap
from bioprop.plasticity import PatternMemorisation, PlasticRNN, episode_data


def _train(path, rule="dp-bptt", steps=5, every=2, **circuit):
    task = PatternMemorisation(n_bits=12, n_patterns=2)
    c = PlasticRNN(12, 12, 12, seed=0, **circuit)
    run = bp.train(
        c,
        rule,
        episode_data(task),
        steps=steps,
        batch_size=3,
        optimizer=("adam", {"lr": 1e-2}),
        clip=None,
        record_boundaries=0,
        seed=0,
        record=bp.Record(path, every=every, samples=2) if path else None,
        progress=False,
    )
    return c, run


@pytest.mark.parametrize("rule", ["dp-bptt", "dp-fa"])
def test_a_recording_holds_alpha_eta_and_trace_snapshots_beside_bptt(tmp_path, rule):
    path = tmp_path / f"{rule}.h5"
    c, run = _train(path, rule)
    with bp.load(path) as tree:
        assert "interfaces" not in tree.children  # no window boundaries in an episode
        assert tree.attrs["loss"].startswith("squared error at the last step")
        assert json.loads(tree.attrs["rule_hyperparameters"])["hebb_samples"] == 1
        g = tree["plasticity/hidden->hidden"].to_dataset()
        assert g["step"].values.tolist() == [0, 2, 4]
        assert g["alpha"].dims == ("step", "post", "pre") and g["eta"].dims == ("step",)
        assert g["hebb"].shape == (3, 1, 12, 12)  # one episode of the batch (hebb_samples)
        assert np.isfinite(g["hebb"].values).all() and np.abs(g["hebb"].values).max() > 0
        ang = g["pattern_angle"].values
        assert np.isfinite(ang).all() and (ang < 90).all()  # the trace stores the patterns
        au, aub = g["alpha_update"].values, g["alpha_update_bp"].values
        assert np.isfinite(aub).all()
        if rule == "dp-bptt":  # the rule is its own reference
            np.testing.assert_allclose(au, aub, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(g["eta_update"].values, g["eta_update_bp"].values, rtol=1e-5)
        else:
            assert not np.allclose(au, aub)
        w = tree["pathways/hidden->hidden"].to_dataset()
        assert "weight_update_bp" in w
        # α at a record is the value before that step's update, like every weight
        assert not np.allclose(g["alpha"].values[0], g["alpha"].values[-1])
        assert float(g["eta"].values[0]) == pytest.approx(0.01)
    assert run.details.final_n == 1  # episode tasks do not grow N


def test_the_analyses_read_alpha_eta_and_the_pattern_angle_from_a_recording(tmp_path):
    path = tmp_path / "r.h5"
    _train(path, steps=5, every=2)
    with bp.load(path) as tree:
        hist = ap.alpha_histogram(tree, "hidden->hidden", bins=11)
        assert hist.dims == ("step", "alpha") and hist.shape == (3, 11)
        widths = np.diff(hist.alpha.values).mean()
        assert np.allclose(hist.sum("alpha").values * widths, 1.0)  # densities
        q = ap.alpha_quantiles(tree, "hidden->hidden")
        assert (q.diff("quantile") >= 0).all()
        assert ap.eta(tree, "hidden->hidden").sizes["step"] == 3
        assert ap.recorded_pattern_angle(tree, "hidden->hidden").dims == ("step", "sample")
        with pytest.raises(KeyError, match="no group 'plasticity/input->hidden'"):
            ap.eta(tree, "input->hidden")


def test_the_pattern_angle_is_zero_for_the_hopfield_matrix_and_near_ninety_for_noise():
    g = torch.Generator().manual_seed(0)
    p = torch.randint(0, 2, (2, 3, 200), generator=g).double() * 2 - 1
    hopfield = torch.einsum("bki,bkj->bij", p, p)
    assert np.allclose(ap.pattern_angle(hopfield, p), 0.0, atol=1e-5)
    noise = torch.randn(2, 200, 200, generator=g, dtype=torch.float64)
    assert (np.abs(ap.pattern_angle(noise, p) - 90) < 3).all()
    per = ap.pattern_angle(hopfield, p, per_pattern=True)
    assert per.shape == (2, 3) and (per < 60).all()
    with pytest.raises(ValueError, match="do not fit a trace"):
        ap.pattern_angle(torch.zeros(2, 10, 10), p)


def test_the_benchmarks_hand_loop_does_the_rules_arithmetic():
    from bioprop.experiments.benchmarks.plasticity import candidate_step, handloop_step

    loss, w, a, eta = handloop_step(40, keep=True)()
    c = PlasticRNN(40, 40, 40, seed=0)
    rule = bp.rules.get("dp-bptt")
    opt = torch.optim.Adam(c.core_parameters(), lr=3e-4)
    from bioprop.experiments.benchmarks.plasticity import _episode

    signals = rule.step(c, _episode(40))
    opt.step()
    assert float(signals.loss) == pytest.approx(loss, rel=1e-5)
    assert torch.allclose(c.recurrent.weight, w, atol=1e-6)
    assert torch.allclose(c.recurrent.alpha, a, atol=1e-6)
    assert torch.allclose(c.recurrent.eta, eta, atol=1e-6)
    candidate_step(20)()  # runs
