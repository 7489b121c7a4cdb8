"""bioprop — circuits of rate and spiking populations trained with local learning rules,
compared against a torch backprop reference on the same circuit, weights and data order."""

from bioprop import data, rules
from bioprop.core import activations, init, losses, seeding
from bioprop.core.circuit import Circuit, SweepState
from bioprop.core.pathway import Pathway, SignSymmetricPathway, TransposePathway
from bioprop.core.population import Population

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
    "seeding",
    "rules",
    "__version__",
]

from bioprop import analysis  # noqa: E402
from bioprop.recording.load import load  # noqa: E402
from bioprop.recording.writer import Record, Recorder  # noqa: E402
from bioprop.training.run import Checkpoint, DivergenceError, Run, evaluate  # noqa: E402
from bioprop.training.train import train  # noqa: E402

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

from bioprop.experiments import tasks  # noqa: E402
from bioprop.experiments.compare import compare  # noqa: E402
from bioprop.experiments.compare import format_table as compare_table  # noqa: E402

__all__ += ["tasks", "compare", "compare_table"]

from bioprop import recurrent  # noqa: E402

__all__ += ["recurrent"]

from bioprop.experiments.sweep import sweep  # noqa: E402

__all__ += ["sweep"]
