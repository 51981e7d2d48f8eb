"""Typed tables: a mapping read from a TOML spec turned into a dataclass, naming the offending
key on any mismatch. Below every package that has options (config, the compute plan, the
sections), so that none of them needs another to read its own table."""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from auditor.errors import ConfigError


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _matches(value: Any, tp: Any) -> bool:
    """Whether a TOML value fits a dataclass field's annotation (ints are accepted as floats)."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def build_dataclass(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate ``cls`` from a mapping, naming the offending key on any mismatch."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(
                f"unknown key '{where}{key}'; expected one of: {', '.join(names)}"
            )
        if not _matches(value, hints[key]):
            raise ConfigError(
                f"'{where}{key}' must be {_type_name(hints[key])}, got {value!r}"
            )
        kwargs[key] = float(value) if hints[key] is float else value
    return cls(**kwargs)
