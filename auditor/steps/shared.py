"""The stores of shared results: what the steps made, read-only to the sections.

``Shared`` holds one typed, frozen result per step (None when no section of the run needs
it); ``Failed`` stands in for a step that broke on this model, so that the sections reading
it fail with the step's reason instead of the whole audit. ``read_only`` is how a result is
frozen all the way down: numpy arrays with ``writeable=False``, mappings as
``types.MappingProxyType``, lists as tuples.
"""

from __future__ import annotations

import dataclasses
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
    flag), every dict a MappingProxyType and every list a tuple, inside dataclasses too."""
    if isinstance(value, np.ndarray):
        view = value.view()
        view.flags.writeable = False
        return view
    if isinstance(value, dict | types.MappingProxyType):
        return types.MappingProxyType({k: read_only(v) for k, v in value.items()})
    if isinstance(value, list | tuple) and not hasattr(value, "_fields"):
        return tuple(read_only(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: read_only(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    return value


def plain(value: Any) -> Any:
    """A mutable copy of a read-only result (mappings as dicts, tuples as lists, arrays
    copied): what a section puts into its own summary and figures' data."""
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict | types.MappingProxyType):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple) and not hasattr(value, "_fields"):
        return [plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: plain(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
    return value


def locked(value: Any) -> Any:
    """``value`` with every array in it a read-only view, its dicts, lists and dataclasses
    rebuilt around them as the same types (what a section's figures' data becomes once it
    returned: the views read it as it was, and nothing writes into it)."""
    if isinstance(value, np.ndarray):
        view = value.view()
        view.flags.writeable = False
        return view
    if isinstance(value, dict):
        return {k: locked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [locked(v) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(locked(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        copy = dataclasses.replace(value, **{f.name: locked(getattr(value, f.name))
                                             for f in dataclasses.fields(value) if f.init})
        for f in dataclasses.fields(value):
            if not f.init:
                object.__setattr__(copy, f.name, locked(getattr(value, f.name)))
        return copy
    return value
