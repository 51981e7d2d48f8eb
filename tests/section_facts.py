"""What tests/test_sections_common.py asks of each section's result, read from the result as the
pipeline drew it (views included) during the demo audit (conftest's ``demo_report``).

The demo audit runs every section once per test run, in whichever xdist worker asks first; the
results themselves (read-only mappings, sealed dataclasses) cannot cross to the other worker,
so the builder writes these facts beside the report and the common tests assert on them: the
same audit is not run a second time for them (it was, at 60 images under the quick budget, the
same checks and keys as the demo's, about 40 s).
"""

from __future__ import annotations

import dataclasses

import numpy as np

IMMUTABLE = (type(None), bool, int, float, complex, str, bytes, np.generic, range)


def writable_parts(value, path: str) -> list[str]:
    """Where in ``value`` something could still be changed: a dict, a list, a set, a writeable
    array, a dataclass whose attributes can be set, or any other object with attributes."""
    from types import MappingProxyType

    if isinstance(value, IMMUTABLE):
        return []
    if isinstance(value, np.ndarray):
        inside = [] if value.dtype != object else [
            p for i, v in enumerate(value.flat) for p in writable_parts(v, f"{path}[{i}]")]
        return ([path] if value.flags.writeable else []) + inside
    if isinstance(value, MappingProxyType):
        return [p for k, v in value.items() for p in writable_parts(v, f"{path}[{k!r}]")]
    if isinstance(value, tuple | frozenset):
        return [p for i, v in enumerate(value) for p in writable_parts(v, f"{path}[{i}]")]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        sealed = type(value).__dataclass_params__.frozen or "_sealed_from" in vars(type(value))
        inside = [p for k, v in vars(value).items() for p in writable_parts(v, f"{path}.{k}")]
        return ([] if sealed else [f"{path} ({type(value).__name__})"]) + inside
    return [f"{path} ({type(value).__name__})"]


def refuses_assignment(result) -> bool:
    """Whether setting ``result.summary`` raises FrozenInstanceError (tried last: it would
    change the result if it did not)."""
    try:
        result.summary = {}
    except dataclasses.FrozenInstanceError:
        return True
    return False


def facts_of(result) -> dict:
    """One drawn section result as JSON: its error, its checks (id, kind, section), its summary
    keys, whether its view is a non-empty dict, its writable parts, and whether it is frozen."""
    return {
        "error": result.error,
        "checks": [[check.id, check.kind, check.section] for check in result.checks],
        "summary_keys": sorted(result.summary),
        "view_is_filled_dict": isinstance(result.view, dict) and bool(result.view),
        "writable": writable_parts(result.summary, "summary") + writable_parts(result.data,
                                                                               "data"),
        "frozen": refuses_assignment(result),
    }
