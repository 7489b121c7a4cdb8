"""Populations: named groups of units.

A *rate* population holds a pre-activation (membrane potential) ``u`` and a
rate ``r = f(u)``.  Its dynamics are either

* ``"instant"`` — r is a function of this sweep's input (layered circuits), or
* ``"leaky"``  — ``tau du/dt = -u + input`` integrated until the circuit settles
  (dynamical circuits such as equilibrium propagation's).

Spiking populations (LIF, adaptive LIF) live in :mod:`bioprop.spiking` and
share this interface's ``name`` and ``size``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bioprop.core import activations

__all__ = ["Population", "DYNAMICS", "check_name_and_size"]

DYNAMICS = ("instant", "leaky")


def check_name_and_size(name, size) -> None:
    """Refuse a population name that is empty or holds '/' or '.' (they separate groups and
    pathway names) and a size that is not a positive integer."""
    if not isinstance(name, str) or not name or "/" in name or "." in name:
        raise ValueError(
            f"population name must be a non-empty string without '/' or '.', got {name!r}"
        )
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"population {name!r}: size must be a positive integer, got {size!r}")


@dataclass
class Population:
    """A named group of ``size`` rate units.

    Parameters
    ----------
    name
        Unique name within the circuit (``"input"``, ``"hidden1"``, ...).
    size
        Number of units.
    activation
        Name of the activation ``f`` (see :func:`bioprop.core.activations.names`).
    dynamics
        ``"instant"`` (feedforward sweep) or ``"leaky"`` (settling).
    tau
        Time constant of leaky dynamics, in units of the integration step.
    signs
        Only for ``activation="rectilinear"``: a sign per unit, +1 (positive rectifier,
        r = max(u, 0)) or −1 (negative rectifier, r = −max(u, 0)); default +1, −1, +1, …
        (:func:`bioprop.core.activations.alternating_signs`).  Stored as a tuple of ints,
        described in recordings; change it with :meth:`set_signs`.
    """

    name: str
    size: int
    activation: str = "linear"
    dynamics: str = "instant"
    tau: float = 1.0
    signs: tuple[int, ...] | None = None
    kind: str = field(default="rate", init=False)

    def __post_init__(self):
        check_name_and_size(self.name, self.size)
        if self.activation == "rectilinear":
            self.set_signs(self.signs)
        elif self.signs is not None:
            raise ValueError(
                f"population {self.name!r}: signs= applies to activation='rectilinear' only, "
                f"not to {self.activation!r}; drop signs= or use activation='rectilinear'"
            )
        else:
            self.act = activations.get(self.activation)
        if self.dynamics not in DYNAMICS:
            raise ValueError(
                f"population {self.name!r}: dynamics must be one of {DYNAMICS}, "
                f"got {self.dynamics!r}"
            )
        if not self.tau > 0:
            raise ValueError(f"population {self.name!r}: tau must be > 0, got {self.tau!r}")

    def set_signs(self, signs) -> None:
        """Give a rectilinear population a sign per unit (None: +1, −1, +1, …)."""
        if self.activation != "rectilinear":
            raise ValueError(
                f"population {self.name!r} is {self.activation!r}; only rectilinear "
                "populations have signs"
            )
        if signs is None:
            signs = activations.alternating_signs(self.size)
        if hasattr(signs, "tolist"):
            signs = signs.tolist()
        signs = list(signs)
        if len(signs) != self.size:
            raise ValueError(
                f"population {self.name!r}: signs has {len(signs)} entries for {self.size} "
                "units; give one sign (+1 or -1) per unit"
            )
        self.act = activations.rectilinear(signs)  # refuses anything but +1 / -1
        self.signs = tuple(int(v) for v in signs)

    def describe(self) -> dict:
        """Attributes stored in recordings."""
        d = {
            "kind": self.kind,
            "size": self.size,
            "activation": str(self.activation),
            "dynamics": self.dynamics,
            "tau": self.tau,
        }
        if self.signs is not None:
            d["signs"] = list(self.signs)  # rectilinear: +1 / -1 per unit
            d["n_negative"] = sum(1 for s in self.signs if s < 0)
        return d
