import os

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

import bioprop as bp  # noqa: E402


@pytest.fixture
def tiny_data():
    """A small regression task: 8 inputs -> 3 outputs."""
    return bp.data.linear_teacher(n_in=8, n_out=3, n_train=64, n_test=32, seed=1)


def layered_6_7_5_4_3(output_activation="logistic"):
    """3 tanh hidden layers (6 -> 7 -> 5 -> 4 -> 3), U(±0.6) weights, seed 3, float64."""
    c = bp.Circuit.layered(
        [6, 7, 5, 4, 3],
        activation="tanh",
        output_activation=output_activation,
        init=bp.init.uniform(0.6),
        seed=3,
    )
    return c.double()


@pytest.fixture
def deep_circuit():
    """3 hidden layers of mixed nonlinearities, float64 for exact comparisons."""
    return layered_6_7_5_4_3()


@pytest.fixture
def brian2_numpy_target():
    """Brian2 generates numpy code for the test (the slow but portable target), then goes back."""
    from brian2 import prefs

    old = prefs.codegen.target
    prefs.codegen.target = "numpy"
    yield
    prefs.codegen.target = old


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def batch(n_in=6, n_out=3, n=5, seed=0, dtype=torch.float64):
    g = gen(seed)
    return torch.randn(n, n_in, generator=g, dtype=dtype), torch.rand(
        n, n_out, generator=g, dtype=dtype
    )


def train_quietly(circuit, rule, data, *, lr, **options):
    """``bp.train`` with the squared error, plain SGD at ``lr``, seed 0 and no progress bar;
    ``options`` add to these or replace them."""
    defaults = {"loss": "mse", "optimizer": ("sgd", {"lr": lr}), "seed": 0, "progress": False}
    return bp.train(circuit, rule, data, **{**defaults, **options})


def tanh_to_linear_circuit(sizes=(10, 8, 7, 6, 5, 3), seed=3):
    """Tanh hidden layers, a linear output, Xavier-uniform weights, float64."""
    return bp.Circuit.layered(
        list(sizes),
        activation="tanh",
        output_activation="linear",
        init=bp.init.xavier_uniform(),
        seed=seed,
    ).double()


def labelled_batch(n_in, n_out, n=7, seed=0):
    """A float64 batch of ``n`` Gaussian inputs with class labels in ``range(n_out)``."""
    g = gen(seed)
    x = torch.randn(n, n_in, generator=g, dtype=torch.float64)
    return x, torch.randint(0, n_out, (n,), generator=g)


def short_pattern_episode(n_bits, n_patterns, test_steps, batch=1, seed=0):
    """A float64 episode of a short PatternMemorisation task: one presentation of 2 steps,
    one blank step, then ``test_steps``; gain 1."""
    from bioprop.plasticity import PatternMemorisation

    task = PatternMemorisation(
        n_bits=n_bits,
        n_patterns=n_patterns,
        presentations=1,
        present_steps=2,
        blank_steps=1,
        test_steps=test_steps,
        gain=1.0,
    )
    return task.sample(1, batch, gen(seed)).to(torch.float64)


def benchmark_target(name):
    """The speed target of the benchmark ``name``, once it is found registered."""
    from bioprop.experiments import bench

    bench._load_extensions()
    assert name in bench.BENCHMARKS
    return bench.TARGETS[name]
