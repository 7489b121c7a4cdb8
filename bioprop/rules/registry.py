"""Rules by name: ``bioprop.rules.get("fa", feedback_init=...)``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bioprop.rules.contract import Rule

_REGISTRY: dict[str, type[Rule]] = {}

__all__ = ["register", "get", "names", "describe"]


def register(cls: type[Rule]) -> type[Rule]:
    """Class decorator: make a rule findable by its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a rule named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str, **hyperparameters) -> Rule:
    """A new rule instance by registry name, e.g. ``get("fa", feedback_init=uniform(0.5))``."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown rule {name!r}; registered rules: {', '.join(names())}") from None
    try:
        return cls(**hyperparameters)
    except TypeError as exc:
        raise TypeError(f"rule {name!r}: {exc}") from None


def names() -> list[str]:
    """Registered rule names, in registration order."""
    return list(_REGISTRY)


def describe() -> dict[str, str]:
    """``{name: one-line description}`` of every registered rule."""
    return {n: c.description for n, c in _REGISTRY.items()}
