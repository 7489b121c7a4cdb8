"""Settling circuits: leaky populations relaxing to a fixed point (equilibrium propagation)."""
