"""Spiking neuron models (brian2, numpy target): closed-form rates, silence, adaptation,
and unit errors raised before any simulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

brian2 = pytest.importorskip("brian2")
from brian2 import Hz, Network, SpikeMonitor, ms, mV, nA  # noqa: E402

import bioprop as bp  # noqa: E402
from bioprop import spiking as sp  # noqa: E402

pytestmark = pytest.mark.usefixtures("brian2_numpy_target")


def spike_counts(model, currents, duration, dt=0.05 * ms):
    g = model.group(len(currents), dt)
    g.I_ext = currents
    mon = SpikeMonitor(g)
    net = Network(g, mon)
    net.run(duration, namespace={})
    return np.asarray(mon.count[:]), mon


def test_lif_with_constant_current_fires_at_the_closed_form_rate():
    model = sp.LIF()
    currents = np.array([0.16, 0.2, 0.3, 0.5]) * nA
    counts, mon = spike_counts(model, currents, 600 * ms)
    expected = np.array([float(sp.lif_rate(model, i) / Hz) for i in currents])
    assert (expected > 5).all()  # every current is above rheobase: the check means something
    trains = mon.spike_trains()
    # rate = 1 / mean interspike interval (a count over a window is off by up to one spike)
    measured = np.array(
        [1.0 / np.mean(np.diff(np.asarray(trains[k] / ms))) * 1e3 for k in range(4)]
    )
    assert (counts >= 8).all()
    # spike times fall on the 0.05 ms grid: at most one step per interspike interval late
    np.testing.assert_allclose(measured, expected, rtol=0.01)


def test_lif_below_rheobase_and_without_input_never_spikes():
    model = sp.LIF()
    counts, _ = spike_counts(model, np.array([0.0, 0.1, 0.149]) * nA, 500 * ms, dt=0.1 * ms)
    assert sp.lif_rate(model, 0.149 * nA) == 0 * Hz
    assert counts.tolist() == [0, 0, 0]


def test_adaptive_lif_fires_less_and_its_intervals_lengthen():
    current = np.array([0.3]) * nA
    lif, _ = spike_counts(sp.LIF(), current, 400 * ms, dt=0.1 * ms)
    alif, mon = spike_counts(
        sp.AdaptiveLIF(b=0.03 * nA, tau_a=200 * ms), current, 400 * ms, dt=0.1 * ms
    )
    assert 0 < alif[0] < lif[0]
    isi = np.diff(np.asarray(mon.t[:] / ms))
    assert isi[-1] > 1.5 * isi[0]


def test_a_time_constant_without_a_time_unit_is_a_clear_error():
    with pytest.raises(sp.SpikingUnitError, match=r"LIF: tau_m must be a time .*20\*ms.*got 20"):
        sp.LIF(tau_m=20)
    with pytest.raises(sp.SpikingUnitError, match=r"v_threshold must be a voltage.*dimension"):
        sp.LIF(v_threshold=-50 * ms)
    with pytest.raises(sp.SpikingUnitError, match=r"ThreeFactorFA: eta must be a rate"):
        sp.ThreeFactorFA(eta=0.1)
    with pytest.raises(sp.SpikingUnitError, match=r"PoissonEncoder: max_rate must be a rate"):
        sp.PoissonEncoder(max_rate=100)
    with pytest.raises(ValueError, match="v_reset .* must lie below v_threshold"):
        sp.LIF(v_reset=-40 * mV)
    # a string names a quantity (task options do so without importing brian2)
    assert sp.LIF(tau_m="10 ms").tau_m == 10 * ms
    with pytest.raises(sp.SpikingUnitError, match=r"LIF: tau_m = '20 parsecs' is not a number"):
        sp.LIF(tau_m="20 parsecs")
    with pytest.raises(sp.SpikingUnitError, match=r"LIF: tau_m must be a time"):
        sp.LIF(tau_m="20 mV")


def test_schedule_and_run_refuse_bad_input_before_simulating(tmp_path):
    x = np.full((4, 3), 0.5)
    with pytest.raises(sp.SpikingUnitError, match="Schedule: present must be a time"):
        sp.Schedule(x, None, [-1] * 4, [False] * 4, present=50)
    with pytest.raises(ValueError, match=r"input values must lie in \[0, 1\]"):
        sp.Schedule(x * 3, None, [-1] * 4, [False] * 4)
    with pytest.raises(ValueError, match="settle .* must be shorter than present"):
        sp.Schedule(x, None, [-1] * 4, [False] * 4, present=10 * ms, settle=10 * ms)
    c = sp.layered([3, 4, 2], init=bp.init.uniform(1.0))
    rule = sp.ThreeFactorFA()
    s = sp.Schedule(x, np.zeros((4, 2)), [0] * 4, [True] * 4)
    with pytest.raises(ValueError, match=r"no feedback pathway: call rule.attach\(circuit\)"):
        sp.run(c, rule, s, target="numpy")
    rule.attach(c)
    with pytest.raises(sp.SpikingUnitError, match="run: dt must be a time"):
        sp.run(c, rule, s, target="numpy", dt=0.5)
    with pytest.raises(ValueError, match="target must be one of"):
        sp.run(c, rule, s, target="gpu")
    with pytest.raises(ValueError, match="whole multiples of dt"):
        sp.run(c, rule, s, target="numpy", dt=0.3 * ms)
    with pytest.raises(ValueError, match="targets have 3 columns but the output population"):
        sp.run(c, rule, sp.Schedule(x, np.zeros((4, 3)), [0] * 4, [True] * 4), target="numpy")
    assert not any(tmp_path.iterdir())


def test_a_spiking_circuit_refuses_the_rate_sweep_with_a_pointer_to_brian2():
    c = sp.layered([3, 4, 2], init=bp.init.uniform(1.0))
    assert c.populations["hidden"].kind == "spiking"
    with pytest.raises(ValueError, match="spiking: simulate this circuit with bioprop.spiking.run"):
        c.sweep(torch.zeros(1, 3))
