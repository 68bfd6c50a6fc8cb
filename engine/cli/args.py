"""Command-line flags made from the settings dataclasses: one flag per field, its help,
allowed values and default taken from the field's metadata (engine.config.settings)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from engine.config.settings import describe_allowed, field_types


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_settings(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    group = parser.add_argument_group(title)
    types = field_types(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not meta or not meta["cli"]:
            continue
        tp = types[f.name]
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = "auto" if default is None else '"" (empty)' if default == "" else default
        help_text = f"{meta['help']} Allowed: {describe_allowed(meta, tp)}. Default: {shown}."
        help_text = help_text.replace("%", "%%")  # argparse formats help with %
        if tp is bool and meta["auto"] is None:
            group.add_argument(flag(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        else:
            metavar = "|".join(map(str, meta["choices"])) if meta["choices"] else f.name.upper()
            if meta["auto"] and meta["choices"]:
                metavar += "|auto"
            group.add_argument(flag(f.name), dest=f.name, default=None, metavar=metavar,
                               help=help_text)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls) if f.metadata and f.metadata["cli"]}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def _default(cls: type, name: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    return f.default if f.default is not dataclasses.MISSING else None


def to_arguments(cls: type, values: dict[str, Any]) -> list[str]:
    """The flags that give ``values`` (settings of ``cls``; None means auto and is left out)
    on the command line that :func:`add_settings` builds: the inverse of :func:`given`.
    An on/off setting with no auto is a bare ``--name`` or ``--no-name``; an empty text
    setting at its default "" (no --init) is left out."""
    types = field_types(cls)
    meta = {f.name: f.metadata for f in dataclasses.fields(cls) if f.metadata}
    arguments: list[str] = []
    for name, value in values.items():
        if value is None or (value == "" and meta[name].get("auto") is None
                             and _default(cls, name) == ""):
            continue  # an empty text setting left at its default ("" init)
        if types[name] is bool and meta[name]["auto"] is None:
            arguments.append(flag(name) if value else "--no-" + name.replace("_", "-"))
        else:
            arguments += [flag(name), str(value)]
    return arguments
