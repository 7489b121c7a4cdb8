"""Spiking runs end to end (brian2, numpy target unless marked slow): learning through
``bioprop.train``, the recording format (the one writer), analyses on spiking recordings,
draining monitors, code-gen targets."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

brian2 = pytest.importorskip("brian2")
from brian2 import Hz, ms  # noqa: E402

import bioprop as bp  # noqa: E402
from bioprop import spiking as sp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def two_class_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class 0 drives inputs 0-4 at 90 % of the max rate, class 1 inputs 5-9."""
    g = np.random.default_rng(seed)
    labels = g.integers(0, 2, n)
    x = g.uniform(0.0, 0.1, (n, 10))
    for k in range(n):
        x[k, 5 * labels[k] : 5 * labels[k] + 5] = 0.9
    return x, labels


def small_circuit(seed: int = 0) -> bp.Circuit:
    g = np.random.default_rng(seed)
    c = bp.Circuit(seed=seed)
    c.add_population("input", 10, model=sp.PoissonEncoder(100 * Hz))
    c.add_population("hidden", 8, model=sp.LIF())
    c.add_population("output", 2, model=sp.AdaptiveLIF(b=0.0 * brian2.nA))
    c.connect("input", "hidden", weight=torch.tensor(g.uniform(0, 6, (8, 10))))
    c.connect("hidden", "output", weight=torch.tensor(g.uniform(0, 4, (2, 8))))
    return c


def two_class_data(n_train: int, n_test: int) -> bp.data.Dataset:
    x_tr, l_tr = two_class_task(n_train, 1)
    x_te, l_te = two_class_task(n_test, 2)
    t = torch.as_tensor
    return bp.data.Dataset(
        "two-class", t(x_tr).float(), t(l_tr), t(x_te).float(), t(l_te), "classification", 2
    )


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """A 10-8-2 circuit trained by ``bioprop.train`` on 60 presentations (numpy target),
    tested on 10 before and after; recorded with states and weights every 10
    presentations."""
    c = small_circuit()
    rule = bp.rules.get("spiking-fa", eta=800 * Hz, target_rate=200 * Hz)
    w_before = c.pathways["input->hidden"].weight.detach().clone()
    path = tmp_path_factory.mktemp("spiking") / "run.h5"
    record = sp.SpikeRecord(
        path, every=10, states={"output": ["v", "r", "m"]}, state_neurons=2, drain_every=10
    )
    run = bp.train(
        c,
        rule,
        two_class_data(60, 10),
        target="numpy",
        dt=1 * ms,
        present="40 ms",
        settle="10 ms",
        record=record,
        progress=False,
    )
    return run.details, path, c, w_before, run


def test_a_short_learning_run_through_bioprop_train_improves_its_task_error(learned):
    run, path, _, _, trained = learned
    (n0, before), (n1, after) = run.test_blocks()
    assert (n0, n1) == (0, 60)
    assert trained.steps == 60 and trained.history["train_step"] == [0, 60]
    assert trained.test_error == pytest.approx(1 - after)
    assert trained.final_loss == pytest.approx(run.test_losses()[-1])
    assert trained.final_loss < trained.history["test_loss"][0]
    rec = bp.load(path)
    loss = rec["metrics"].loss.values
    rec.close()
    first, last = loss[:10].mean(), loss[-10:].mean()
    assert last < 0.5 * first, (first, last)
    assert after >= 0.9 and after > before, (before, after)


def test_the_learned_weights_are_written_back_into_the_circuit(learned):
    run, _, circuit, w_before, _ = learned
    w = circuit.pathways["input->hidden"].weight.detach().numpy()
    np.testing.assert_allclose(w, run.weights["input->hidden"], rtol=1e-6)
    assert not np.allclose(w, w_before.numpy())


def test_the_recording_holds_ragged_spikes_rates_states_and_weights_with_units(learned):
    run, path, _, _, _ = learned
    rec = bp.load(path)
    try:
        assert rec.attrs["rule"] == "spiking-fa" and rec.attrs["rule_kind"] == "spiking"
        assert rec.attrs["codegen_target"] == "numpy" and rec.attrs["task"] == "two-class"
        assert rec.attrs["brian2_version"] == brian2.__version__
        n_pres = run.schedule.n
        for pop, size in (("input", 10), ("hidden", 8), ("output", 2)):
            spikes = rec["spikes"][pop].to_dataset()
            assert set(spikes.data_vars) == {"neuron", "time"}
            assert spikes.neuron.dims == ("spike",) and spikes.time.attrs["units"] == "second"
            assert spikes.sizes["spike"] > 0
            assert 0 <= spikes.neuron.min() and spikes.neuron.max() < size
            assert float(spikes.time.max()) < float(run.simulated_s)
            rate = rec["populations"][pop].rate
            assert rate.dims == ("time", "neuron") and rate.attrs["units"] == "Hz"
            assert rate.shape == (n_pres, size)
            # rates are the spike counts per bin (40 ms): their total is the number of spikes
            assert np.isclose(float(rate.sum()) * 0.04, spikes.sizes["spike"])
        assert rec["populations/output"].attrs["model"] == "AdaptiveLIF"
        assert rec["populations/hidden"].attrs["tau_m"] == "20. ms"
        states = rec["states/output"].to_dataset()
        assert states.v.dims == ("time", "neuron") and states.v.attrs["units"] == "V"
        assert states.r.attrs["units"] == "Hz" and states.m.attrs["units"] == "1"
        assert states.sizes["time"] == round(run.simulated_s / 1e-3)
        w = rec["pathways/input->hidden"]
        assert w.weight.dims == ("step", "post", "pre") and w.weight.shape[1:] == (8, 10)
        assert w.weight.attrs["units"] == "mV"
        assert list(w.step.values) == list(range(0, n_pres, 10)) + [n_pres]
        np.testing.assert_allclose(w.weight.values[-1], run.weights["input->hidden"], rtol=1e-6)
        fb = rec["pathways/output->hidden"]
        assert fb.attrs["role"] == "feedback" and fb.attrs["mirrors"] == "hidden->output"
        m = rec["metrics"].to_dataset()
        assert m.sizes["step"] == n_pres
        assert (m.correct == (m.prediction == m.label)).all()
        blocks = m.test_error.dropna("step")  # on the last presentation of each test block
        assert list(blocks.step.values) == [9, n_pres - 1]
        assert float(blocks[-1]) == pytest.approx(1 - run.final_accuracy)
    finally:
        rec.close()


def test_learning_records_carry_the_update_and_the_rate_twins_bp_update(learned):
    _, path, _, _, _ = learned
    with bp.load(path) as rec:
        learn = rec["metrics"].learn.values.astype(bool)
        for name in ("input->hidden", "hidden->output"):
            pw = rec["pathways"][name].to_dataset()
            steps = pw.step.values
            has = np.isfinite(pw.weight_update.values).all(axis=(1, 2))
            has_bp = np.isfinite(pw.weight_update_bp.values).all(axis=(1, 2))
            # exactly the recorded presentations during which the rule learned
            expected = np.array([s < len(learn) and learn[s] for s in steps])
            assert has.tolist() == expected.tolist() and has_bp.tolist() == expected.tolist()
            assert np.abs(pw.weight_update.values[has]).max() > 0
        assert "weight_update" not in rec["pathways/output->hidden"].to_dataset()


def test_weight_alignment_and_norm_ratio_run_unchanged_on_a_spiking_recording(learned):
    _, path, _, _, _ = learned
    rec = bp.load(path)
    try:
        angle = bp.analysis.weight_alignment(rec, "hidden->output")
        ratio = bp.analysis.norm_ratio(rec, "hidden->output")
        w = rec["pathways/hidden->output"].weight.values.astype(float)
        b = rec["pathways/output->hidden"].weight.values.astype(float)
    finally:
        rec.close()
    assert angle.dims == ("step",) and ratio.dims == ("step",)
    for k in range(w.shape[0]):
        wt, bk = w[k].T.ravel(), b[k].ravel()
        cos = wt @ bk / np.linalg.norm(wt) / np.linalg.norm(bk)
        assert np.isclose(float(angle[k]), np.degrees(np.arccos(cos)), atol=1e-3)
        assert np.isclose(float(ratio[k]), np.linalg.norm(bk) / np.linalg.norm(wt), rtol=1e-5)
    assert float(angle[-1]) < float(angle[0])  # W aligns with B while it learns


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np, torch
    from brian2 import Hz, ms, nA
    import bioprop as bp
    from bioprop import spiking as sp
    from bioprop.spiking import recording
    sys.path.insert(0, {tests!r})
    from test_spiking_run import small_circuit, two_class_task

    calls = []
    original = recording.Drain.__call__
    def drain_then_kill(self, t=None):
        held = {{n: len(m.i[:]) for n, m in self.spike_mon.items()}}
        original(self, t)
        calls.append(held)
        print("held", held, flush=True)
        if len(calls) == 4:  # after the third drain (the first runs at t = 0)
            os.kill(os.getpid(), signal.SIGKILL)
    recording.Drain.__call__ = drain_then_kill
    x, labels = two_class_task(20, 3)
    c = small_circuit()
    rule = sp.ThreeFactorFA(eta=100 * Hz).attach(c)
    s = sp.Schedule(x, np.eye(2)[labels], labels, [True] * 20, present=40 * ms, settle=10 * ms)
    sp.run(c, rule, s, target="numpy", dt=1 * ms, record=sp.SpikeRecord(
        {path!r}, every=2, drain_every=2))
    """
)


@pytest.mark.slow
def test_monitors_are_drained_as_the_run_goes_and_a_killed_run_keeps_what_was_drained(
    tmp_path,
):
    path = tmp_path / "killed.h5"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT.format(tests=str(ROOT / "tests"), path=str(path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300
    )
    assert res.returncode == -9, res.stderr[-2000:]  # SIGKILL, in the middle of the run
    held = [eval(line[5:]) for line in res.stdout.splitlines() if line.startswith("held")]
    assert len(held) == 4
    # what the monitors hold at a drain is one interval (2 presentations), not the run so far
    assert held[3]["input"] > 0 and held[3]["input"] < 2 * held[2]["input"] + 50
    rec = bp.load(path)
    try:
        m = rec["metrics"].to_dataset()
        assert list(m.step.values) == list(range(6))  # 3 drains x 2 presentations
        spikes = rec["spikes/input"].to_dataset()
        assert spikes.sizes["spike"] == sum(h["input"] for h in held[:3]) + held[3]["input"]
        assert float(spikes.time.max()) < 0.24
        assert rec["pathways/input->hidden"].weight.sizes["step"] == 3  # steps 0, 2, 4
    finally:
        rec.close()


class Interrupt(Exception):
    pass


def test_an_interrupted_run_keeps_every_drained_record_and_monitors_stay_small(
    tmp_path, monkeypatch
):
    from bioprop.spiking import recording

    held: list[dict[str, int]] = []
    original = recording.Drain.__call__

    def drain_then_interrupt(self, t=None):
        held.append({n: len(m.i[:]) for n, m in self.spike_mon.items()})
        original(self, t)
        if len(held) == 4:  # the first drain runs at t = 0, then every 2 presentations
            raise Interrupt

    monkeypatch.setattr(recording.Drain, "__call__", drain_then_interrupt)
    x, labels = two_class_task(20, 3)
    c = small_circuit()
    rule = sp.ThreeFactorFA(eta=100 * Hz).attach(c)
    s = sp.Schedule(x, np.eye(2)[labels], labels, [True] * 20, present=40 * ms, settle=10 * ms)
    path = tmp_path / "interrupted.h5"
    with pytest.raises(Interrupt):
        sp.run(
            c,
            rule,
            s,
            target="numpy",
            dt=1 * ms,
            record=sp.SpikeRecord(path, every=2, drain_every=2),
        )
    # each drain found one interval's spikes (80 ms), not the run's so far
    per_interval = [h["input"] for h in held[1:]]
    assert min(per_interval) > 0 and max(per_interval) < 1.5 * min(per_interval) + 30
    rec = bp.load(path)
    try:
        assert list(rec["metrics"].step.values) == list(range(6))
        assert rec["spikes/input"].sizes["spike"] == sum(per_interval)
        assert rec["pathways/input->hidden"].weight.sizes["step"] == 3  # steps 0, 2, 4
    finally:
        rec.close()


def run_on(target: str, tmp_path: Path, **kw) -> sp.SpikingRun:
    x_tr, l_tr = two_class_task(20, 1)
    x_te, l_te = two_class_task(6, 2)
    c = small_circuit()
    rule = sp.ThreeFactorFA(eta=400 * Hz, target_rate=200 * Hz).attach(c)
    s = sp.Schedule.interleaved(x_tr, l_tr, x_te, l_te, 2, 20, present=40 * ms, settle=10 * ms)
    return sp.run(
        c, rule, s, target=target, dt=1 * ms, record=sp.SpikeRecord(tmp_path / "r.h5"), **kw
    )


@pytest.mark.slow
def test_the_cython_target_compiles_into_the_configured_cache_dir(tmp_path):
    cache = tmp_path / "cython-cache"
    run = run_on("cython", tmp_path, cache_dir=cache)
    assert any(cache.rglob("*.so")), "no compiled extension in the cache dir"
    assert run.simulated_s == pytest.approx(32 * 0.04)
    assert bp.load(tmp_path / "r.h5")["spikes/hidden"].sizes["spike"] > 0


@pytest.mark.slow
def test_the_cpp_standalone_target_runs_and_records(tmp_path):
    run = run_on("cpp_standalone", tmp_path, standalone_dir=tmp_path / "standalone")
    assert (tmp_path / "standalone" / "main.cpp").exists()
    rec = bp.load(tmp_path / "r.h5")
    try:
        assert rec["metrics"].sizes["step"] == 32
        assert rec["spikes/hidden"].sizes["spike"] > 0
        assert rec["pathways/input->hidden"].weight.sizes["step"] == 2
    finally:
        rec.close()
    assert len(run.test_blocks()) == 2


def test_the_bench_baseline_script_runs_the_same_network_and_equations():
    # bioprop's runner and the hand-written brian2 script of `bioprop bench`, same seed and
    # samples on the numpy target: the same spikes, hence the same learned weights
    from bioprop.experiments.benchmarks import spiking as bench_spiking

    ours = bench_spiking._bioprop(4, "numpy", keep=True)()
    hand = bench_spiking._handwritten(4, "numpy", keep=True)()
    for k in ("w1", "w2"):
        assert not np.allclose(ours[k], bench_spiking._weights()[0 if k == "w1" else 1])
        # bioprop keeps weights as float32 tensors, the script as float64: same up to that
        np.testing.assert_allclose(ours[k], hand[k], rtol=1e-5, atol=1e-6)


def test_bioprop_train_refuses_options_a_spiking_circuit_cannot_take_before_simulating(tmp_path):
    data = two_class_data(4, 2)
    rule = bp.rules.get("spiking-fa")
    kw = {"target": "numpy", "progress": False}
    with pytest.raises(ValueError, match=r"applies its own updates .* pass optimizer=None"):
        bp.train(small_circuit(), rule, data, optimizer=("sgd", {"lr": 0.1}), **kw)
    with pytest.raises(ValueError, match="learns online in one pass: epochs and batch_size"):
        bp.train(small_circuit(), rule, data, batch_size=8, **kw)
    with pytest.raises(ValueError, match="has 10 inputs and 3 classes but the circuit"):
        wrong = bp.data.Dataset("w", data.x_train, data.y_train, data.x_test, data.y_test,
                                "classification", 3)  # fmt: skip
        bp.train(small_circuit(), rule, wrong, **kw)
    with pytest.raises(ValueError, match=r"input values must lie in \[0, 1\]"):
        loud = bp.data.Dataset("loud", 3 * data.x_train, data.y_train, data.x_test,
                               data.y_test, "classification", 2)  # fmt: skip
        bp.train(small_circuit(), rule, loud, **kw)
    with pytest.raises(sp.SpikingUnitError, match="'50 parsecs' is not a number followed by"):
        bp.train(small_circuit(), rule, data, present="50 parsecs", **kw)
    with pytest.raises(ValueError, match="target must be one of"):
        bp.train(small_circuit(), rule, data, target="gpu", progress=False)
    assert not any(tmp_path.iterdir())


def test_compare_runs_the_spiking_task_and_reads_its_angle_to_the_rate_twins_bp(tmp_path):
    ds = bp.compare(
        "spiking-fashion-mnist", rules=["spiking-fa"], seeds=1, out=tmp_path, quick=True,
        progress=False,
    )  # fmt: skip
    assert ds["kind"].values.tolist() == ["spiking"]
    assert 0.0 <= float(ds.test_error[0, 0]) <= 1.0 and np.isfinite(float(ds.final_loss[0, 0]))
    assert 0.0 < float(ds.angle_to_bp[0, 0]) < 180.0
    with bp.load(tmp_path / "spiking-fa-seed0.h5") as rec:
        assert rec.attrs["task"].startswith("fashion-mnist")
        assert rec.attrs["n_train"] == 40 and rec.attrs["codegen_target"] == "numpy"
