"""Pass/warn/fail verdicts: a value held against absolute bounds and against a baseline.

Thresholds for check ID come from the spec's ``[checks.ID]`` table, over the section's defaults:
``warn_below``/``fail_below``/``warn_above``/``fail_above`` bound the value itself;
``warn_drop``/``fail_drop``/``warn_rise``/``fail_rise`` bound its change against the baseline.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from auditor.errors import ConfigError

STATUSES = ("pass", "warn", "fail", "error", "skipped")
SEVERITY = {"skipped": 0, "pass": 1, "warn": 2, "fail": 3, "error": 3}
BOUNDS = ("warn_below", "fail_below", "warn_above", "fail_above",
          "warn_drop", "fail_drop", "warn_rise", "fail_rise")


@dataclass
class Check:
    """One verdict as summary.json, the Markdown and JUnit outputs list it."""

    id: str
    status: str
    value: Any
    threshold: dict[str, float] = field(default_factory=dict)
    baseline: Any = None
    message: str = ""
    section: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(check_id: str, value: float | None, *, message: str, section: str,
             defaults: dict[str, float] | None = None, spec: dict[str, Any] | None = None,
             baseline: float | None = None) -> Check:
    """Hold ``value`` against the bounds; the worst broken bound decides, and says why."""
    bounds = {**(defaults or {}), **(spec or {})}
    for key, bound in bounds.items():
        if key not in BOUNDS:
            raise ConfigError(f"unknown key 'checks.{check_id}.{key}'; use: {', '.join(BOUNDS)}")
        if not isinstance(bound, (int, float)) or isinstance(bound, bool):
            raise ConfigError(f"'checks.{check_id}.{key}' must be a number, got {bound!r}")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return Check(check_id, "error", value, bounds, baseline,
                     f"{message}: no value could be computed", section)
    broken = []
    for level in ("fail", "warn"):
        if f"{level}_below" in bounds and value < bounds[f"{level}_below"]:
            broken.append((level, f"{value:.4g} < {bounds[f'{level}_below']:g}"))
        if f"{level}_above" in bounds and value > bounds[f"{level}_above"]:
            broken.append((level, f"{value:.4g} > {bounds[f'{level}_above']:g}"))
        if baseline is not None:
            change = value - baseline
            if f"{level}_drop" in bounds and -change > bounds[f"{level}_drop"]:
                broken.append((level, f"dropped {-change:.4g} from baseline {baseline:.4g} "
                                      f"(allowed {bounds[f'{level}_drop']:g})"))
            if f"{level}_rise" in bounds and change > bounds[f"{level}_rise"]:
                broken.append((level, f"rose {change:.4g} from baseline {baseline:.4g} "
                                      f"(allowed {bounds[f'{level}_rise']:g})"))
    if broken:
        level, why = broken[0]
        return Check(check_id, level, value, bounds, baseline, f"{message}: {why}", section)
    gated = any(k.endswith(("below", "above")) for k in bounds) or (
        baseline is not None and any(k.endswith(("drop", "rise")) for k in bounds))
    note = "" if gated else " (not gated: no threshold set)"
    return Check(check_id, "pass", value, bounds, baseline, f"{message}{note}", section)


def verdict(checks: list[Check]) -> str:
    """The run's overall status: the worst of its checks ('pass' when there are none)."""
    worst = max((SEVERITY[c.status] for c in checks), default=1)
    if worst == 3:
        return "fail"
    return "warn" if worst == 2 else "pass"


def exit_code(checks: list[Check], fail_on: str) -> int:
    """0 when the run passes, 1 when a check fails or errors (or warns, with fail_on='warn')."""
    statuses = {c.status for c in checks}
    if statuses & {"fail", "error"}:
        return 1
    return 1 if fail_on == "warn" and "warn" in statuses else 0
