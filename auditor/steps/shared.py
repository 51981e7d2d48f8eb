"""The stores of shared results: what the steps made, read-only to the sections.

``Shared`` holds one typed, frozen result per step (None when no section of the run needs
it); ``Failed`` stands in for a step that broke on this model, so that the sections reading
it fail with the step's reason instead of the whole audit. ``read_only`` is how a result is
frozen all the way down: numpy arrays with ``writeable=False``, mappings as
``types.MappingProxyType``, lists as tuples.
"""

from __future__ import annotations

import dataclasses
import functools
import types
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Failed:
    """A step that raised on this model: its log line (the traceback is in audit.log). A
    section that reads any field of it fails with that reason."""

    step: str
    error: str

    def __getattr__(self, name: str):  # only for fields the step's own result would have
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(f"the {self.step} step failed: {self.error}")


@dataclass(frozen=True)
class Shared:
    """Each step's result: ``card`` (``steps.card.ReliabilityCard``), ``features``
    (``steps.features.Features``) and ``saliency`` (``steps.saliency.SaliencyMaps``: with
    nothing made, a section's maps are made when it asks, for it alone)."""

    card: Any = None
    features: Any = None
    saliency: Any = None

    def __post_init__(self):
        if self.saliency is None:
            from auditor.steps.saliency import SaliencyMaps

            object.__setattr__(self, "saliency", SaliencyMaps())


def read_only(value: Any) -> Any:
    """``value`` with every array in it made read-only (a view: the caller's array keeps its
    flag), every dict a MappingProxyType and every list a tuple, inside dataclasses too; a
    dataclass that is not frozen is copied as a sealed subclass of its own (``_sealed``), so
    that no attribute can be set either. Anything else (numbers, strings) is immutable."""
    if isinstance(value, np.ndarray):
        view = value.view()
        view.flags.writeable = False
        return view
    if isinstance(value, dict | types.MappingProxyType):
        return types.MappingProxyType({k: read_only(v) for k, v in value.items()})
    if isinstance(value, list | tuple) and not hasattr(value, "_fields"):
        return tuple(read_only(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        cls = _unsealed(type(value))
        frozen = cls.__dataclass_params__.frozen
        return _copied(value, cls if frozen else _sealed(cls), read_only)
    return value


def plain(value: Any) -> Any:
    """A mutable copy of a read-only result (mappings as dicts, tuples as lists, arrays
    copied, sealed dataclasses as their own class again): what a section puts into its own
    summary and figures' data, and what summary.json is written from."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict | types.MappingProxyType):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple) and not hasattr(value, "_fields"):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _copied(value, _unsealed(type(value)), plain)
    return value


def _copied(value: Any, cls: type, convert) -> Any:
    """A new ``cls`` holding ``convert`` of each of ``value``'s attributes, made without
    running ``__init__`` (nor ``__post_init__``: its options were validated when first made)."""
    copy = object.__new__(cls)
    names = vars(value) if hasattr(value, "__dict__") else [f.name for f in
                                                            dataclasses.fields(value)]
    for name in names:
        object.__setattr__(copy, name, convert(getattr(value, name)))
    return copy


def _refuse(self, name: str, *value: Any) -> None:
    raise dataclasses.FrozenInstanceError(
        f"cannot assign to field '{name}': a {type(self).__name__} is read-only once made")


@functools.cache
def _sealed(cls: type) -> type:
    """A subclass of the dataclass ``cls`` (not frozen) whose instances refuse to set or
    delete an attribute: ``isinstance`` and ``dataclasses.fields`` still see ``cls``, and
    ``dataclasses.replace`` gives a sealed copy."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # made as cls, then sealed
        object.__setattr__(self, "__class__", cls)
        cls.__init__(self, *args, **kwargs)
        object.__setattr__(self, "__class__", sealed)

    sealed = type(cls.__name__, (cls,), {
        "__init__": __init__, "__setattr__": _refuse, "__delattr__": _refuse,
        "__module__": cls.__module__, "__qualname__": cls.__qualname__, "_sealed_from": cls})
    return sealed


def _unsealed(cls: type) -> type:
    return cls.__dict__.get("_sealed_from", cls)
