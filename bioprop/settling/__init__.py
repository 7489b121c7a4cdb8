"""Settling circuits: leaky populations relaxing to a minimum of an energy (equilibrium
propagation, Scellier & Bengio 2017).

==================  ==========================================================================
module              concept
==================  ==========================================================================
``circuit``         :class:`Settling` options, :class:`DynamicalCircuit`, the builders
                    :func:`layered_dynamical` / :func:`layered_twin`, structure checks
``settle``          the Euler settling :func:`settle` (free and nudged phases), :func:`plan`
``energy``          E, C and F = E + βC per sample
``reference``       the family's exact reference: :func:`bptt` through the settling
``particles``       persistent particles (:class:`ParticleBank`)
``recording``       trajectories and energies over settling time, for recordings
``presets``         Scellier & Bengio's MNIST settings (circuit, ``ep`` options, optimizer)
==================  ==========================================================================
"""

from bioprop.settling.circuit import (
    DynamicalCircuit,
    Settling,
    check_dynamical,
    free_populations,
    layered_dynamical,
    layered_twin,
    settling_of,
    symmetric_feedback,
)
from bioprop.settling.energy import cost, energy, total_energy
from bioprop.settling.particles import ParticleBank
from bioprop.settling.reference import bptt
from bioprop.settling.settle import (
    NonConvergenceWarning,
    Settled,
    SettlingError,
    plan,
    settle,
    targets,
)

__all__ = [
    "Settling",
    "Settled",
    "DynamicalCircuit",
    "SettlingError",
    "NonConvergenceWarning",
    "ParticleBank",
    "layered_dynamical",
    "layered_twin",
    "settle",
    "bptt",
    "energy",
    "cost",
    "total_energy",
    "symmetric_feedback",
    "settling_of",
    "free_populations",
    "check_dynamical",
    "plan",
    "targets",
]
