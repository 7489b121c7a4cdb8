"""Weight initialisers for pathways.

An initialiser is a small, printable object: calling it with a shape and a
``torch.Generator`` returns a fresh tensor.  Its ``repr`` is stored in the
recording's provenance, so ``uniform(0.05)`` in a script reads back as
``uniform(0.05)`` in the file.

>>> import bioprop as bp
>>> w = bp.init.uniform(0.05)((3, 4), torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass

import torch

__all__ = [
    "Init",
    "uniform",
    "normal",
    "zeros",
    "constant",
    "xavier_uniform",
    "kaiming_uniform",
    "resolve",
]


class Init:
    """Base class: ``init(shape, generator) -> tensor`` (float32, CPU)."""

    def __call__(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class uniform(Init):  # noqa: N801 - lower case reads like the papers: W ~ U[-omega, omega]
    """W ~ U[-omega, omega] (Lillicrap et al. 2016 use omega = 0.01 ... 0.5)."""

    omega: float

    def __post_init__(self):
        if not self.omega >= 0:
            raise ValueError(f"uniform(omega): omega must be >= 0, got {self.omega!r}")

    def __call__(self, shape, generator):
        return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * self.omega

    def __repr__(self):
        return f"uniform({self.omega!r})"


@dataclass(frozen=True)
class normal(Init):  # noqa: N801
    """W ~ N(0, std^2)."""

    std: float

    def __call__(self, shape, generator):
        return torch.randn(shape, generator=generator) * self.std

    def __repr__(self):
        return f"normal({self.std!r})"


@dataclass(frozen=True)
class constant(Init):  # noqa: N801
    """Every entry equal to ``value``."""

    value: float

    def __call__(self, shape, generator):
        return torch.full(shape, float(self.value))

    def __repr__(self):
        return f"constant({self.value!r})"


def zeros() -> constant:
    """All zeros (Lillicrap et al.'s Theorem 2 starts from W = 0)."""
    return constant(0.0)


@dataclass(frozen=True)
class xavier_uniform(Init):  # noqa: N801
    """Glorot & Bengio: U[-a, a], a = gain * sqrt(6 / (fan_in + fan_out))."""

    gain: float = 1.0

    def __call__(self, shape, generator):
        fan_out, fan_in = shape[0], shape[-1]
        a = self.gain * math.sqrt(6.0 / (fan_in + fan_out))
        return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * a

    def __repr__(self):
        return f"xavier_uniform({self.gain!r})"


@dataclass(frozen=True)
class kaiming_uniform(Init):  # noqa: N801
    """He et al.: U[-a, a], a = gain * sqrt(3 / fan_in) (gain sqrt(2) for ReLU)."""

    gain: float = 1.0

    def __call__(self, shape, generator):
        fan_in = shape[-1]
        a = self.gain * math.sqrt(3.0 / fan_in)
        return (torch.rand(shape, generator=generator) * 2.0 - 1.0) * a

    def __repr__(self):
        return f"kaiming_uniform({self.gain!r})"


_NAMED = {
    "zeros": zeros,
    "xavier": xavier_uniform,
    "xavier_uniform": xavier_uniform,
    "kaiming": kaiming_uniform,
    "kaiming_uniform": kaiming_uniform,
}


def resolve(spec: Init | str | None, default: Init | None = None) -> Init:
    """Turn an initialiser spec (object, name, or None for ``default``) into an :class:`Init`."""
    if spec is None:
        if default is None:
            raise ValueError("no initialiser given and no default")
        return default
    if isinstance(spec, Init):
        return spec
    if isinstance(spec, str):
        if spec in _NAMED:
            return _NAMED[spec]()
        called = from_call(spec)
        if called is not None:
            return called
        raise ValueError(
            f"unknown initialiser {spec!r}; use one of {sorted(_NAMED)} "
            "or an object such as bioprop.core.init.uniform(0.05)"
        )
    raise TypeError(f"init must be a bioprop.core.init.Init or a name, got {type(spec).__name__}")


@dataclass(frozen=True)
class orthogonal(Init):  # noqa: N801
    """A random (semi-)orthogonal matrix times ``gain``: draw A ~ U[-1, 1], take its SVD
    A = U S Vᵀ and return gain · U Vᵀ (all singular values equal to ``gain``).  Lee et al.
    2015's ``rand_ortho`` (the uniform draw's scale drops out of U Vᵀ)."""

    gain: float = 1.0

    def __call__(self, shape, generator):
        a = torch.rand(shape, generator=generator, dtype=torch.float64) * 2.0 - 1.0
        u, _, vh = torch.linalg.svd(a, full_matrices=False)
        return (self.gain * (u @ vh)).float()

    def __repr__(self):
        return f"orthogonal({self.gain!r})"


_NAMED["orthogonal"] = orthogonal
__all__.append("orthogonal")

_CALL = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.S)


def from_call(text: str) -> Init | None:
    """The initialiser a call written as text stands for, ``"uniform(0.05)"`` →
    ``uniform(0.05)`` (literal arguments only: spec files and command-line flags); None
    when ``text`` is not a call.  An unknown name or bad arguments raise ``ValueError``."""
    m = _CALL.match(text)
    if not m:
        return None
    name, args = m.groups()
    known = {
        n: obj
        for n, obj in globals().items()
        if isinstance(obj, type) and issubclass(obj, Init) and obj is not Init
    }
    if name not in known:
        raise ValueError(
            f"{text!r} calls no initialiser; known initialisers: {', '.join(sorted(known))}"
        )
    try:
        parsed = ast.literal_eval(f"({args},)") if args.strip() else ()
        return known[name](*parsed)
    except (ValueError, SyntaxError, TypeError) as exc:
        raise ValueError(f"{text!r}: {exc}") from None


__all__.append("from_call")
