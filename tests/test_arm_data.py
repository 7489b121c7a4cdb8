"""The planar-arm inverse-dynamics generator and the SARCOS / Barrett file loader."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import bioprop as bp
from bioprop.data import arm
from bioprop.data.mnist import MissingDataError
from bioprop.data.sarcos import robot_inverse_dynamics


# -- an independent description of the same arm: its Lagrangian --------------------------------
def lagrangian(q: torch.Tensor, dq: torch.Tensor, p: arm.ArmParameters) -> torch.Tensor:
    """L = T − V of the planar chain of rods, from its kinematics alone (one sample)."""
    theta, omega = q.cumsum(0), dq.cumsum(0)
    base_v = torch.zeros(2, dtype=q.dtype)
    base_y = torch.zeros((), dtype=q.dtype)
    kinetic = potential = torch.zeros((), dtype=q.dtype)
    for i in range(p.links):
        e = torch.stack([theta[i].cos(), theta[i].sin()])
        n = torch.stack([-theta[i].sin(), theta[i].cos()])
        v_com = base_v + p.com[i] * omega[i] * n
        kinetic = kinetic + 0.5 * p.masses[i] * (v_com @ v_com) + 0.5 * p.inertia[i] * omega[i] ** 2
        potential = potential + p.masses[i] * p.gravity * (base_y + p.com[i] * e[1])
        base_v = base_v + p.lengths[i] * omega[i] * n
        base_y = base_y + p.lengths[i] * e[1]
    return kinetic - potential


def mass_and_bias(q, dq, p):
    """M(q) = ∂²L/∂q̇², and the rest of the Euler–Lagrange equation:
    τ = M q̈ + (∂²L/∂q̇∂q) q̇ − ∂L/∂q + b q̇."""
    from torch.autograd.functional import jacobian

    def momentum(qq, dd):
        dd = dd.requires_grad_(True) if not dd.requires_grad else dd
        return torch.autograd.grad(lagrangian(qq, dd, p), dd, create_graph=True)[0]

    j_q, j_dq = jacobian(momentum, (q, dq))
    dl_dq = jacobian(lambda qq: lagrangian(qq, dq, p), q)
    bias = j_q @ dq - dl_dq + torch.tensor(p.friction, dtype=q.dtype) * dq
    return j_dq, bias


@pytest.mark.parametrize("links", [2, 3])
def test_newton_euler_torques_solve_the_euler_lagrange_equations(links):
    p = arm.arm_parameters(links, friction=0.2)
    q, dq, ddq = arm.sample_states(6, links, torch.Generator().manual_seed(1))
    tau = arm.inverse_dynamics(q, dq, ddq, p)
    for n in range(6):
        m, bias = mass_and_bias(q[n], dq[n], p)
        assert torch.allclose(tau[n], m @ ddq[n] + bias, atol=1e-9), n


def _integrate(q, dq, tau, p, dt, steps):
    """RK4 of q̈ = M⁻¹(τ − bias) with the torque held constant (the Lagrangian's dynamics)."""

    def f(state):
        qq, dd = state
        m, bias = mass_and_bias(qq, dd, p)
        return dd, torch.linalg.solve(m, tau - bias)

    state = (q, dq)
    for _ in range(steps):
        k1 = f(state)
        k2 = f(tuple(s + 0.5 * dt * k for s, k in zip(state, k1, strict=True)))
        k3 = f(tuple(s + 0.5 * dt * k for s, k in zip(state, k2, strict=True)))
        k4 = f(tuple(s + dt * k for s, k in zip(state, k3, strict=True)))
        state = tuple(
            s + dt / 6 * (a + 2 * b + 2 * c + d)
            for s, a, b, c, d in zip(state, k1, k2, k3, k4, strict=True)
        )
    return state


@pytest.mark.parametrize("links", [2, 3])
def test_torques_produce_their_accelerations_when_the_arm_is_integrated_forward(links):
    """Hold the generated torque τ(q, q̇, q̈) and integrate the arm a few RK4 steps: it moves
    as q + q̇ t + ½ q̈ t² (to O(t³)); a torque 1 N·m off moves it measurably elsewhere."""
    p = arm.arm_parameters(links)
    q, dq, ddq = (v[0] for v in arm.sample_states(1, links, torch.Generator().manual_seed(2)))
    tau = arm.inverse_dynamics(q[None], dq[None], ddq[None], p)[0]
    dt, steps = 1e-3, 5
    t = dt * steps
    taylor = q + dq * t + 0.5 * ddq * t * t
    q_t, dq_t = _integrate(q, dq, tau, p, dt, steps)
    err = float((q_t - taylor).abs().max())
    assert err < 1e-6  # third-order in t = 5 ms
    assert torch.allclose(dq_t, dq + ddq * t, atol=1e-3)  # second order in t
    q_off, _ = _integrate(q, dq, tau + 1.0, p, dt, steps)
    assert float((q_off - taylor).abs().max()) > 100 * err + 1e-6


def test_the_same_seed_gives_the_same_data_and_the_test_set_does_not_depend_on_n_train():
    a = arm.planar_arm(n_train=300, n_test=100, seed=3)
    b = arm.planar_arm(n_train=300, n_test=100, seed=3)
    c = arm.planar_arm(n_train=300, n_test=100, seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    raw = {"standardize": False, "n_test": 100, "seed": 3}
    assert torch.equal(
        arm.planar_arm(n_train=300, **raw).y_test, arm.planar_arm(n_train=500, **raw).y_test
    )


def test_default_split_is_sarcos_and_validation_is_carved_out_of_training():
    full = bp.data.load("planar-arm")
    assert (len(full.x_train), len(full.x_test)) == arm.SARCOS_SPLIT == (44_484, 4_449)
    assert (full.n_inputs, full.n_outputs) == (6, 2)
    assert abs(float(full.y_train.mean())) < 1e-4 and abs(float(full.y_train.std()) - 1) < 1e-3
    val = bp.data.load("planar-arm", validation=4449)
    assert val.name == "planar-arm-2 (validation)"
    assert (len(val.x_train), len(val.x_test)) == (40_035, 4_449)
    assert torch.equal(val.x_train, full.x_train[:40_035])
    assert torch.equal(val.x_test, full.x_train[40_035:])  # training data, never the test set
    three = arm.planar_arm(n_train=200, n_test=50, links=3)
    assert (three.n_inputs, three.n_outputs) == (9, 3)


def test_torque_noise_is_seeded_and_scaled_by_the_torque_spread():
    clean = arm.planar_arm(n_train=2000, n_test=10, standardize=False)
    noisy = arm.planar_arm(n_train=2000, n_test=10, standardize=False, noise=0.1)
    ratio = (noisy.y_train - clean.y_train).std(0) / clean.y_train.std(0)
    assert torch.allclose(ratio, torch.full_like(ratio, 0.1), rtol=0.1)
    again = arm.planar_arm(n_train=2000, n_test=10, standardize=False, noise=0.1)
    assert torch.equal(noisy.y_train, again.y_train)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"links": 4}, "links must be 2 or 3"),
        ({"n_train": 0}, "n_train must be an integer >= 1"),
        ({"n_test": 2.5}, "n_test must be an integer >= 1"),
        ({"n_train": 100, "validation": 100}, r"validation \(100\) must be smaller than n_train"),
        ({"validation": -1}, "validation must be an integer >= 0"),
        ({"noise": -0.1}, "noise must be a number >= 0"),
        ({"friction": -1.0}, "friction must be >= 0"),
        ({"per_trajectory": 0}, "per_trajectory must be an integer >= 1"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(options, message):
    with pytest.raises(ValueError, match=message):
        arm.planar_arm(**{"n_train": 200, "n_test": 20, **options})


def test_inverse_dynamics_refuses_states_of_the_wrong_shape():
    p = arm.arm_parameters(2)
    with pytest.raises(ValueError, match=r"q must have shape \(samples, 2\)"):
        arm.inverse_dynamics(torch.zeros(4, 3), torch.zeros(4, 2), torch.zeros(4, 2), p)


# -- SARCOS / Barrett files ---------------------------------------------------------------------
def _robot_rows(n: int, dof: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4 * dof))


def test_sarcos_files_are_read_from_mat_and_outputs_selected(tmp_path):
    import scipy.io

    train, test = _robot_rows(50, 7, 0), _robot_rows(20, 7, 1)
    scipy.io.savemat(tmp_path / "sarcos_inv.mat", {"sarcos_inv": train})
    scipy.io.savemat(tmp_path / "sarcos_inv_test.mat", {"sarcos_inv_test": test})
    ds = bp.data.load("sarcos", root=tmp_path, outputs=(0, 1), standardize=False)
    assert (ds.n_inputs, ds.n_outputs, len(ds.x_train), len(ds.x_test)) == (21, 2, 50, 20)
    assert np.allclose(ds.y_test.numpy(), test[:, 21:23], atol=1e-5)
    val = bp.data.load("sarcos", root=tmp_path, validation=10)
    assert val.name == "sarcos (validation)" and len(val.x_test) == 10 and val.n_outputs == 7


def test_barrett_files_are_read_from_csv(tmp_path):
    train, test = _robot_rows(30, 4, 2), _robot_rows(10, 4, 3)
    np.savetxt(tmp_path / "barrett_inv.csv", train, delimiter=",")
    np.savetxt(tmp_path / "barrett_inv_test.csv", test, delimiter=",")
    ds = bp.data.load("barrett", root=tmp_path, standardize=False)
    assert (ds.n_inputs, ds.n_outputs) == (12, 4)
    assert np.allclose(ds.x_train.numpy(), train[:, :12], atol=1e-5)


def test_missing_robot_files_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOPROP_DATA", str(tmp_path))
    with pytest.raises(MissingDataError) as exc:
        bp.data.load("sarcos")
    text = str(exc.value)
    assert str(tmp_path / "sarcos") in text and "sarcos_inv.mat" in text
    assert "does not download" in text and "planar-arm" in text
    assert exc.value.dataset == "sarcos"


def test_robot_files_with_the_wrong_columns_or_outputs_are_refused(tmp_path):
    np.save(tmp_path / "sarcos_inv.npy", np.zeros((5, 27)))
    np.save(tmp_path / "sarcos_inv_test.npy", np.zeros((5, 27)))
    with pytest.raises(ValueError, match=r"expected 4·dof columns"):
        robot_inverse_dynamics("sarcos", root=tmp_path)
    np.save(tmp_path / "sarcos_inv.npy", np.zeros((5, 28)))
    np.save(tmp_path / "sarcos_inv_test.npy", np.zeros((5, 28)))
    with pytest.raises(ValueError, match=r"outputs must be joint indices in 0..6"):
        robot_inverse_dynamics("sarcos", root=tmp_path, outputs=(7,))


def test_the_arm_datasets_are_registered():
    assert {"planar-arm", "sarcos", "barrett"} <= set(bp.data.names())
    assert math.isclose(arm.arm_parameters(3).inertia[0], 3.0 * 0.25 / 12)
