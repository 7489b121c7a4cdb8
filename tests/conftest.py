import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

import bioprop as bp  # noqa: E402


@pytest.fixture
def tiny_data():
    """A small regression task: 8 inputs -> 3 outputs."""
    return bp.data.linear_teacher(n_in=8, n_out=3, n_train=64, n_test=32, seed=1)


@pytest.fixture
def deep_circuit():
    """3 hidden layers of mixed nonlinearities, float64 for exact comparisons."""
    c = bp.Circuit.layered(
        [6, 7, 5, 4, 3],
        activation="tanh",
        output_activation="logistic",
        init=bp.init.uniform(0.6),
        seed=3,
    )
    return c.double()


def batch(n_in=6, n_out=3, n=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, n_in, generator=g, dtype=dtype), torch.rand(
        n, n_out, generator=g, dtype=dtype
    )
