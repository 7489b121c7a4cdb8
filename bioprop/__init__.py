"""bioprop — circuits of rate and spiking populations trained with local learning rules,
compared against a torch backprop reference on the same circuit, weights and data order."""

from bioprop import activations, data, init, losses, rules
from bioprop.circuit import Circuit, SweepState
from bioprop.pathway import Pathway, SignSymmetricPathway, TransposePathway
from bioprop.population import Population

__version__ = "0.1.0"

__all__ = [
    "Circuit",
    "SweepState",
    "Population",
    "Pathway",
    "SignSymmetricPathway",
    "TransposePathway",
    "activations",
    "data",
    "init",
    "losses",
    "rules",
    "__version__",
]

from bioprop import analysis  # noqa: E402
from bioprop.io import load  # noqa: E402
from bioprop.recorder import Record, Recorder  # noqa: E402
from bioprop.trainer import Checkpoint, DivergenceError, Run, evaluate, train  # noqa: E402

__all__ += [
    "analysis",
    "load",
    "Record",
    "Recorder",
    "Checkpoint",
    "DivergenceError",
    "Run",
    "evaluate",
    "train",
]

from bioprop import tasks  # noqa: E402
from bioprop.compare import compare  # noqa: E402
from bioprop.compare import format_table as compare_table  # noqa: E402

__all__ += ["tasks", "compare", "compare_table"]

from bioprop import recurrent  # noqa: E402

__all__ += ["recurrent"]
