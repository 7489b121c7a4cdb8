"""Inverse dynamics of a simulated planar robot arm: a procedural stand-in for SARCOS.

SARCOS and Barrett WAM (the robotics regressions of Balduzzi et al. 2015) map a robot's
joint positions q, velocities q̇ and accelerations q̈ to the torques τ that produce them.
This module makes the same kind of data from a seed: a planar arm of 2 or 3 uniform rods
moving in a vertical plane under gravity, along smooth random trajectories, with the
torques from the rigid-body equations of motion

    τ = M(q) q̈ + C(q, q̇) q̇ + G(q) + b q̇

computed in closed form by the recursive Newton–Euler algorithm (:func:`inverse_dynamics`:
a forward pass of link velocities and accelerations, a backward pass of forces and
moments).  The tests check these torques against the Euler–Lagrange equations of the arm's
Lagrangian and by integrating the forward dynamics a few steps.

The default split mirrors SARCOS's (44 484 training / 4 449 test samples), test samples
come from trajectories of their own, and ``validation=k`` holds out the last ``k``
training samples (whole trajectories, never test data) as the ``test`` part of the
returned :class:`Dataset`, for choosing learning rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from bioprop.core.seeding import generator
from bioprop.data.base import Dataset

__all__ = [
    "ArmParameters",
    "arm_parameters",
    "inverse_dynamics",
    "sample_states",
    "planar_arm",
    "SARCOS_SPLIT",
]

#: SARCOS's training and test sizes (Vijayakumar & Schaal 2000).
SARCOS_SPLIT = (44_484, 4_449)
LINKS = (2, 3)


@dataclass(frozen=True)
class ArmParameters:
    """A planar chain of uniform rods: masses m_i (kg), lengths l_i (m), centre of mass at
    l_i / 2, inertia m_i l_i² / 12 about it, viscous joint friction b_i (N·m·s), gravity g
    (m/s², pulling along −y; joint angles measured from +x)."""

    masses: tuple[float, ...]
    lengths: tuple[float, ...]
    friction: tuple[float, ...]
    gravity: float = 9.81

    def __post_init__(self):
        n = len(self.masses)
        if n < 1 or len(self.lengths) != n or len(self.friction) != n:
            raise ValueError(
                f"ArmParameters: masses, lengths and friction need one entry per link, got "
                f"{len(self.masses)}, {len(self.lengths)} and {len(self.friction)}"
            )
        if min(self.masses) <= 0 or min(self.lengths) <= 0 or min(self.friction) < 0:
            raise ValueError("ArmParameters: masses and lengths must be > 0, friction >= 0")

    @property
    def links(self) -> int:
        return len(self.masses)

    @property
    def com(self) -> tuple[float, ...]:
        return tuple(li / 2 for li in self.lengths)

    @property
    def inertia(self) -> tuple[float, ...]:
        return tuple(m * li * li / 12 for m, li in zip(self.masses, self.lengths, strict=True))


def arm_parameters(links: int = 2, friction: float = 0.1) -> ArmParameters:
    """The arms used here: links of 3, 2, 1 kg and 0.5, 0.4, 0.3 m (an upper arm, a
    forearm, a hand), viscous friction ``friction`` at every joint."""
    _check_links(links)
    if not friction >= 0:
        raise ValueError(f"planar arm: friction must be >= 0, got {friction!r}")
    return ArmParameters(
        (3.0, 2.0, 1.0)[:links], (0.5, 0.4, 0.3)[:links], (float(friction),) * links
    )


def _check_links(links) -> None:
    if links not in LINKS or isinstance(links, bool):
        raise ValueError(f"planar arm: links must be 2 or 3, got {links!r}")


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """z-component of a × b for batches of 2-D vectors (..., 2)."""
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def inverse_dynamics(
    q: torch.Tensor, dq: torch.Tensor, ddq: torch.Tensor, params: ArmParameters
) -> torch.Tensor:
    """Joint torques τ (N, links) that give the planar arm accelerations q̈ at (q, q̇).

    Recursive Newton–Euler in the world frame (gravity as an upward acceleration of the
    base).  Link i has absolute angle θ_i = Σ_{k≤i} q_k, angular velocity ω_i = Σ q̇_k,
    angular acceleration α_i = Σ q̈_k, axis e_i = (cos θ_i, sin θ_i), normal n_i = ê_z × e_i::

        a_c,i   = a_i + α_i c_i n_i − ω_i² c_i e_i          (centre of mass, c_i = l_i / 2)
        a_i+1   = a_i + α_i l_i n_i − ω_i² l_i e_i          (next joint), a_1 = (0, g)
        f_i     = m_i a_c,i + f_i+1                          (force from link i−1 on link i)
        τ_i     = I_i α_i + m_i (c_i e_i × a_c,i) + (l_i e_i × f_i+1) + τ_i+1 + b_i q̇_i
    """
    n_links = params.links
    for name, t in (("q", q), ("dq", dq), ("ddq", ddq)):
        if t.dim() != 2 or t.shape[1] != n_links:
            raise ValueError(
                f"inverse_dynamics: {name} must have shape (samples, {n_links}), got "
                f"{tuple(t.shape)}"
            )
    theta, omega, alpha = q.cumsum(1), dq.cumsum(1), ddq.cumsum(1)
    e = torch.stack([theta.cos(), theta.sin()], -1)  # (N, links, 2)
    nrm = torch.stack([-theta.sin(), theta.cos()], -1)
    a = torch.zeros(q.shape[0], 2, dtype=q.dtype, device=q.device)
    a[:, 1] = params.gravity
    a_com = []
    for i in range(n_links):
        w2, al = omega[:, i : i + 1] ** 2, alpha[:, i : i + 1]
        c, li = params.com[i], params.lengths[i]
        a_com.append(a + al * c * nrm[:, i] - w2 * c * e[:, i])
        a = a + al * li * nrm[:, i] - w2 * li * e[:, i]
    f_next = torch.zeros_like(a)
    tau_next = torch.zeros(q.shape[0], dtype=q.dtype, device=q.device)
    tau = [None] * n_links
    for i in reversed(range(n_links)):
        m, c, li = params.masses[i], params.com[i], params.lengths[i]
        t = (
            params.inertia[i] * alpha[:, i]
            + m * _cross(c * e[:, i], a_com[i])
            + _cross(li * e[:, i], f_next)
            + tau_next
        )
        f_next = m * a_com[i] + f_next
        tau_next = t
        tau[i] = t + params.friction[i] * dq[:, i]
    return torch.stack(tau, 1)


def sample_states(
    n: int, links: int, gen: torch.Generator, per_trajectory: int = 100, duration: float = 10.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` states (q, q̇, q̈) sampled along smooth random trajectories, ``per_trajectory``
    at random times in [0, duration] s of each.  Every joint follows
    q(t) = c + Σ_{m=1..3} A_m sin(ω_m t + φ_m) with c ~ U[−π/2, π/2], A_m ~ U[0.1, 0.6] rad,
    ω_m ~ U[0.5, 3] rad/s, φ_m ~ U[0, 2π); q̇ and q̈ are its exact derivatives (float64)."""
    n_traj = math.ceil(n / per_trajectory)
    shape = (n_traj, 1, links, 3)
    c = (torch.rand(n_traj, 1, links, generator=gen, dtype=torch.float64) - 0.5) * math.pi
    amp = 0.1 + 0.5 * torch.rand(shape, generator=gen, dtype=torch.float64)
    freq = 0.5 + 2.5 * torch.rand(shape, generator=gen, dtype=torch.float64)
    phase = 2 * math.pi * torch.rand(shape, generator=gen, dtype=torch.float64)
    t = duration * torch.rand(n_traj, per_trajectory, 1, 1, generator=gen, dtype=torch.float64)
    arg = freq * t + phase  # (traj, sample, link, term)
    q = c + (amp * arg.sin()).sum(-1)
    dq = (amp * freq * arg.cos()).sum(-1)
    ddq = -(amp * freq * freq * arg.sin()).sum(-1)
    return tuple(v.reshape(-1, links)[:n] for v in (q, dq, ddq))


def _check_count(name: str, v, minimum: int = 1) -> None:
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ValueError(f"planar arm: {name} must be an integer >= {minimum}, got {v!r}")


def planar_arm(
    n_train: int = SARCOS_SPLIT[0],
    n_test: int = SARCOS_SPLIT[1],
    links: int = 2,
    seed: int = 0,
    validation: int = 0,
    noise: float = 0.0,
    friction: float = 0.1,
    per_trajectory: int = 100,
    standardize: bool = True,
) -> Dataset:
    """Inverse dynamics of a planar ``links``-link arm: inputs (q, q̇, q̈) (3·links
    features), targets the joint torques τ (``links`` outputs).

    Parameters
    ----------
    n_train, n_test
        Sizes of the training and test sets (default SARCOS's 44 484 / 4 449); the test
        trajectories are drawn from a stream of their own, so they do not depend on
        ``n_train``.
    links
        2 or 3.
    seed
        Seeds the trajectories (and the torque noise).
    validation
        If > 0, return a *tuning* dataset: its training part is the first
        ``n_train − validation`` training samples, its ``test`` part the last ``validation``
        training samples (whole trajectories at the default sizes); the test set is not
        touched.  Its name ends in ``(validation)``.
    noise
        Standard deviation of Gaussian noise added to the torques, as a fraction of each
        joint's torque standard deviation (0: exact torques).
    friction
        Viscous friction at every joint, N·m·s.
    per_trajectory
        Samples drawn along each random trajectory.
    standardize
        Scale every input and target to zero mean and unit variance with the training
        set's statistics (so the normalized squared error is the mean over joints of
        MSE / variance, the NMSE of the robotics literature).
    """
    _check_links(links)
    _check_count("n_train", n_train)
    _check_count("n_test", n_test)
    _check_count("per_trajectory", per_trajectory)
    _check_count("validation", validation, minimum=0)
    if validation >= n_train:
        raise ValueError(
            f"planar arm: validation ({validation}) must be smaller than n_train ({n_train}), "
            "it is carved out of the training set"
        )
    if not (isinstance(noise, (int, float)) and noise >= 0):
        raise ValueError(f"planar arm: noise must be a number >= 0, got {noise!r}")
    params = arm_parameters(links, friction)
    parts = []
    for split, n in enumerate((n_train, n_test)):
        g = generator(seed, "planar arm trajectories", links, split)
        q, dq, ddq = sample_states(n, links, g, per_trajectory)
        tau = inverse_dynamics(q, dq, ddq, params)
        parts.append([torch.cat([q, dq, ddq], 1), tau])
    if noise > 0:
        scale = parts[0][1].std(0)
        for split, (_, tau) in enumerate(parts):
            g = generator(seed, "planar arm noise", links, split)
            tau += noise * scale * torch.randn(tau.shape, generator=g, dtype=tau.dtype)
    meta = {
        "seed": seed,
        "links": links,
        "masses": params.masses,
        "lengths": params.lengths,
        "friction": params.friction,
        "noise": noise,
        "inputs": [f"{v}{i + 1}" for v in ("q", "dq", "ddq") for i in range(links)],
        "outputs": [f"tau{i + 1}" for i in range(links)],
    }
    (x_tr, y_tr), (x_te, y_te) = parts
    if standardize:
        mx, sx, my, sy = x_tr.mean(0), x_tr.std(0), y_tr.mean(0), y_tr.std(0)
        x_tr, x_te = (x_tr - mx) / sx, (x_te - mx) / sx
        y_tr, y_te = (y_tr - my) / sy, (y_te - my) / sy
        meta.update(x_mean=mx.tolist(), x_std=sx.tolist(), y_mean=my.tolist(), y_std=sy.tolist())
    name = f"planar-arm-{links}"
    if validation:
        k = n_train - validation
        x_tr, y_tr, x_te, y_te = x_tr[:k], y_tr[:k], x_tr[k:], y_tr[k:]
        name += " (validation)"
        meta["validation"] = validation
    return Dataset(
        name,
        x_tr.float(),
        y_tr.float(),
        x_te.float(),
        y_te.float(),
        "regression",
        meta=meta,
    )
