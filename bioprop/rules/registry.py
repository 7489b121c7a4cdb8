"""One registry of learning rules, for every circuit kind.

A rule is registered under its ``name`` *and* the circuit ``kind`` it runs on, because a
paper's name can stand for one idea on several kinds of circuit: ``dni`` is a synthetic
gradient at a layer's output in a layered circuit (Jaderberg et al. §3.1) and at a window
boundary in a recurrent one (§3.2).  ``get("fa")`` finds the only ``fa``; ``get("dni")``
asks for ``kind=`` (``bioprop.train`` and ``bioprop compare`` pass the circuit's kind).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bioprop.rules.contract import Rule

_REGISTRY: dict[tuple[str, str], type[Rule]] = {}

__all__ = ["register", "get", "names", "kinds_of", "describe", "entries"]


def register(cls: type[Rule]) -> type[Rule]:
    """Class decorator: make a rule findable by its ``name`` and ``kind``."""
    from bioprop.rules.contract import KINDS

    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.kind not in KINDS:
        raise ValueError(f"{cls.__name__}.kind must be one of {KINDS}, got {cls.kind!r}")
    key = (cls.name, cls.kind)
    if key in _REGISTRY and _REGISTRY[key] is not cls:
        raise ValueError(f"a {cls.kind} rule named {cls.name!r} is already registered")
    _REGISTRY[key] = cls
    return cls


def kinds_of(name: str) -> list[str]:
    """The circuit kinds a rule name is registered for."""
    return [k for (n, k) in _REGISTRY if n == name]


def lookup(name: str, kind: str | None = None) -> type[Rule]:
    """The rule class registered as ``name`` (for ``kind``); a clear error otherwise."""
    kinds = kinds_of(name)
    if not kinds:
        raise ValueError(f"unknown rule {name!r}; registered rules: {', '.join(names())}")
    if kind is None:
        if len(kinds) > 1:
            raise ValueError(
                f"rule {name!r} exists for {' and '.join(kinds)} circuits; pass kind= "
                "(bioprop.train and bioprop compare choose it from the circuit)"
            )
        kind = kinds[0]
    if (name, kind) not in _REGISTRY:
        raise ValueError(
            f"rule {name!r} runs on {' and '.join(kinds)} circuits, not on {kind} ones"
        )
    return _REGISTRY[(name, kind)]


def get(name: str, kind: str | None = None, **hyperparameters) -> Rule:
    """A new rule instance by registry name, e.g. ``get("fa", feedback_init=uniform(0.5))``
    or ``get("dni", kind="recurrent", T=4)``."""
    cls = lookup(name, kind)
    _refuse_strings_for_numbers(name, cls, hyperparameters)
    try:
        return cls(**hyperparameters)
    except TypeError as exc:
        raise TypeError(f"rule {name!r}: {exc}") from None


def _refuse_strings_for_numbers(name: str, cls: type, given: dict) -> None:
    """A string given for a numeric hyper-parameter (``sigma="0.1"``) is refused, naming
    the parameter, before the rule is built (its default or annotation says numeric)."""
    import inspect

    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return
    for key, value in given.items():
        p = params.get(key)
        if p is None or not isinstance(value, str):
            continue
        default, note = p.default, str(p.annotation)
        numeric = isinstance(default, (int, float)) and not isinstance(default, bool)
        numeric |= "str" not in note and any(t in note for t in ("float", "int"))
        if numeric or isinstance(default, bool):
            raise TypeError(
                f"rule {name!r}: hyper-parameter {key}={value!r} is a string; pass a "
                + ("bool" if isinstance(default, bool) else "number")
                + (f" (default {default!r})" if default is not inspect.Parameter.empty else "")
            )


def names() -> list[str]:
    """Registered rule names (each once), in registration order."""
    return list(dict.fromkeys(n for n, _ in _REGISTRY))


def entries() -> list[tuple[str, str, str]]:
    """``(name, kind, one-line description)`` of every registered rule."""
    return [(n, k, c.description) for (n, k), c in _REGISTRY.items()]


def describe() -> dict[str, str]:
    """``{name: one-line description}`` (the first kind's, for names on several kinds)."""
    out: dict[str, str] = {}
    for n, _, d in entries():
        out.setdefault(n, d)
    return out
