"""Declarative, validated settings.

Every setting is a dataclass field made with :func:`setting`, which records a help text and
the allowed values (a numeric range or a set of choices). :func:`validate` checks an instance
and raises :class:`ConfigError` naming the field and what is allowed; the CLI, the config-file
loader and the app's settings form all use the same rules.

A default of ``None`` means "auto": the value is chosen when the run starts, from the device
and the data, and the chosen value is written into the run's ``config.json``.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from typing import Any


class ConfigError(ValueError):
    """A setting has a value outside its allowed range or of the wrong type."""


def setting(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: bool = False,
    choices: Sequence[Any] | None = None,
    auto: str | None = None,
    cli: bool = True,
) -> Any:
    """A dataclass field with its help text and allowed values.

    ``auto`` describes what ``None`` resolves to; it makes ``None`` a legal value.
    """
    meta = {
        "help": help,
        "min": min,
        "max": max,
        "min_exclusive": min_exclusive,
        "choices": tuple(choices) if choices is not None else None,
        "auto": auto,
        "cli": cli,
    }
    if isinstance(default, (list, dict, tuple)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _base_type(tp: Any) -> Any:
    """The non-None type of ``X | None`` annotations (``X`` itself otherwise)."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return args[0] if len(args) == 1 else tp
    return tp


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: _base_type(hints[f.name]) for f in dataclasses.fields(cls)}


def describe_allowed(meta: dict[str, Any], tp: Any) -> str:
    if meta["choices"] is not None:
        allowed = "one of " + ", ".join(str(c) for c in meta["choices"])
    else:
        kind = {int: "an integer", float: "a number", bool: "true or false", str: "text"}.get(
            tp, str(tp)
        )
        lo, hi = meta["min"], meta["max"]
        if lo is not None and hi is not None:
            allowed = f"{kind} {'greater than' if meta['min_exclusive'] else 'from'} {lo} to {hi}"
        elif lo is not None:
            allowed = f"{kind} {'>' if meta['min_exclusive'] else '>='} {lo}"
        elif hi is not None:
            allowed = f"{kind} <= {hi}"
        else:
            allowed = kind
    if meta["auto"]:
        allowed += f", or auto ({meta['auto']})"
    return allowed


def coerce(value: Any, tp: Any, name: str, meta: dict[str, Any]) -> Any:
    """Convert ``value`` (possibly text from a command line or JSON) to ``tp`` or fail."""
    is_auto_text = isinstance(value, str) and value.strip().lower() == "auto"
    if value is None or (is_auto_text and not (tp is str and meta["auto"] is None)):
        if meta["auto"] is None:
            raise ConfigError(f"{name} has no automatic value: give {describe_allowed(meta, tp)}")
        return None
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if tp is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError
                return int(value)
            return int(value)
        if tp is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
            if not math.isfinite(out):
                raise ValueError
            return out
        if tp is str:
            if not isinstance(value, str):
                raise ValueError
            return value
        origin = typing.get_origin(tp)
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace(",", " ").split() if v]
            items = [float(v) for v in value]
            if not all(math.isfinite(v) for v in items):
                raise ValueError
            return tuple(items)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(
            f"{name} must be {describe_allowed(meta, tp)}; got {value!r}"
        ) from None
    return value


def validate(obj: Any) -> None:
    """Check every field of a settings dataclass against its declared type and range."""
    types = field_types(type(obj))
    for f in dataclasses.fields(obj):
        if not f.metadata:
            continue
        meta = f.metadata
        tp = types[f.name]
        value = coerce(getattr(obj, f.name), tp, f.name, meta)
        object.__setattr__(obj, f.name, value)
        if value is None:
            continue
        if meta["choices"] is not None and value not in meta["choices"]:
            raise ConfigError(f"{f.name} must be {describe_allowed(meta, tp)}; got {value!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            lo, hi = meta["min"], meta["max"]
            too_low = lo is not None and (value <= lo if meta["min_exclusive"] else value < lo)
            if too_low or (hi is not None and value > hi):
                raise ConfigError(
                    f"{f.name} must be {describe_allowed(meta, tp)}; got {value!r}"
                )


def update(obj: Any, values: dict[str, Any], *, where: str = "settings") -> Any:
    """A copy of ``obj`` with ``values`` applied; unknown keys are refused by name."""
    names = {f.name for f in dataclasses.fields(obj)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown setting{'s' if len(unknown) > 1 else ''} in {where}: "
            + ", ".join(unknown)
            + f". Known settings: {', '.join(sorted(names))}"
        )
    out = dataclasses.replace(obj, **values)
    validate(out)
    return out
