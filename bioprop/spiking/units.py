"""Checking that parameters carry brian2 units, with messages that say what to write.

Every parameter of a spiking population, encoder, rule or run is a brian2 ``Quantity``.
A bare number where a time, voltage, current or rate is expected is refused when the
object is built (before any simulation), e.g.::

    LIF(tau_m=20)  ->  SpikingUnitError: LIF: tau_m must be a time (a brian2 quantity such
                       as 20*ms), got 20 (a dimensionless number)

A string naming a number and a brian2 unit (``"20 ms"``, ``"20*ms"``, ``"-65 mV"``) is read
as that quantity, so that configurations (a task's options) can name quantities without
importing brian2.
"""

from __future__ import annotations

import re
from typing import Any

import brian2.units as _units
from brian2 import Hz, Quantity, Unit, amp, ohm, second, volt
from brian2.units.fundamentalunits import DIMENSIONLESS, get_dimensions

__all__ = ["SpikingUnitError", "check_quantity", "parse_quantity", "KINDS", "to_str"]

#: kind name -> (reference unit, example written in the message)
KINDS: dict[str, tuple[Quantity, str]] = {
    "time": (second, "20*ms"),
    "voltage": (volt, "-65*mV"),
    "current": (amp, "0.2*nA"),
    "resistance": (ohm, "100*Mohm"),
    "rate": (Hz, "100*Hz"),
    "dimensionless": (Quantity(1.0), "0.5"),
}


class SpikingUnitError(ValueError):
    """A spiking parameter without the brian2 unit it needs (or with the wrong one)."""


_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*\*?\s*([A-Za-z]+)\s*$")


def parse_quantity(text: str, owner: str = "quantity", name: str = "value") -> Quantity:
    """``"20 ms"`` or ``"20*ms"`` → ``20*ms``: a number and one brian2 unit name."""
    m = _QUANTITY.match(text)
    unit = getattr(_units, m.group(2), None) if m else None
    if not isinstance(unit, Unit):
        raise SpikingUnitError(
            f"{owner}: {name} = {text!r} is not a number followed by a brian2 unit "
            "(write e.g. '20 ms', '-65 mV', '100 Hz')"
        )
    return float(m.group(1)) * unit


def check_quantity(
    value: Any,
    kind: str,
    owner: str,
    name: str,
    positive: bool = False,
    nonnegative: bool = False,
) -> Quantity:
    """Return ``value`` as a scalar brian2 ``Quantity`` of dimension ``kind``, or raise.

    Parameters
    ----------
    value
        What the user passed (``20*ms``, ``-65*mV``, ..., or a string ``"20 ms"``).
    kind
        One of :data:`KINDS` (``"time"``, ``"voltage"``, ``"current"``, ``"resistance"``,
        ``"rate"``, ``"dimensionless"``).
    owner, name
        Where the value belongs (``"LIF"``, ``"tau_m"``), for the message.
    positive, nonnegative
        Also require ``value > 0`` (``>= 0``).
    """
    unit, example = KINDS[kind]
    if isinstance(value, str):
        value = parse_quantity(value, owner, name)
    want = get_dimensions(unit)
    try:
        got = get_dimensions(value)
    except TypeError:
        got = None
    if got is None or (got is not want and got != want):
        if got is None:
            what = f"{type(value).__name__}"
        elif got is DIMENSIONLESS:
            what = "a dimensionless number"
        else:
            what = f"a quantity of dimension {got}"
        raise SpikingUnitError(
            f"{owner}: {name} must be a {kind} (a brian2 quantity such as {example}), "
            f"got {value!r} ({what})"
        )
    q = Quantity(value)
    if q.size != 1:
        raise SpikingUnitError(f"{owner}: {name} must be a scalar, got shape {q.shape}")
    if positive and not float(q) > 0:
        raise SpikingUnitError(f"{owner}: {name} must be > 0, got {value!r}")
    if nonnegative and not float(q) >= 0:
        raise SpikingUnitError(f"{owner}: {name} must be >= 0, got {value!r}")
    return q


def to_str(q: Any) -> str:
    """A quantity as text with its unit (``'20. ms'``), for recording attributes."""
    return str(q)
