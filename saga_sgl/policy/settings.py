"""Strict loading and validation of policy settings dataclasses.

Every policy's constants live in a frozen, slotted, keyword-only dataclass. Settings arrive as JSON
(SGLang's ``--radix-eviction-policy-config``, router flags, simulator rows) and go through
``load_settings``: an unknown key is an error that names it, a value of the wrong type is an error
that names the field. No silent clamping or coercion beyond int -> float.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from saga_sgl.errors import InvalidSettings

S = TypeVar("S")


def load_settings(cls: type[S], config: Mapping[str, Any] | None) -> S:
    """Build settings ``cls`` from a mapping; unknown keys and wrong types raise ``InvalidSettings``."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a settings dataclass")
    config = dict(config or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise InvalidSettings(
            f"{cls.__name__}: unknown setting(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(fields))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in config.items():
        kwargs[name] = _coerce(cls.__name__, name, hints[name], value)
    return cls(**kwargs)


def settings_to_dict(settings: object) -> dict[str, Any]:
    """The settings as a plain dict (for JSON output and ``describe``)."""
    if not dataclasses.is_dataclass(settings) or isinstance(settings, type):
        raise TypeError(f"{settings!r} is not a settings instance")
    return {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}


def _coerce(owner: str, name: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _coerce(owner, name, non_none[0], value)
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is tuple or origin is Mapping or origin is dict:
        # Composite settings (e.g. per-tool tables) are validated by the dataclass itself.
        return tuple(value) if origin is tuple and isinstance(value, list) else value
    else:
        return value
    raise InvalidSettings(f"{owner}.{name}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def require(cond: bool, owner: str, name: str, rule: str, value: object) -> None:
    """Raise ``InvalidSettings`` naming ``owner.name`` unless ``cond`` holds."""
    if not cond:
        raise InvalidSettings(f"{owner}.{name} must be {rule}, got {value!r}")


def require_frac(owner: str, name: str, value: float) -> None:
    """``value`` must be a finite fraction in [0, 1]."""
    require(math.isfinite(value) and 0.0 <= value <= 1.0, owner, name, "in [0, 1]", value)


def require_positive(owner: str, name: str, value: float) -> None:
    """``value`` must be finite and > 0."""
    require(math.isfinite(value) and value > 0, owner, name, "> 0", value)


def require_non_negative(owner: str, name: str, value: float) -> None:
    """``value`` must be finite and >= 0."""
    require(math.isfinite(value) and value >= 0, owner, name, ">= 0", value)
