"""Pass/warn/fail verdicts: a value held against absolute bounds and against a baseline.

Thresholds for check ID come from the spec's ``[checks.ID]`` table, over the section's defaults:
``warn_below``/``fail_below``/``warn_above``/``fail_above`` bound the value itself;
``warn_drop``/``fail_drop``/``warn_rise``/``fail_rise`` bound its change against the baseline.
A check is *gated* when at least one bound could apply (relative bounds need a baseline); a run
whose checks are all ungated still gets a verdict, and says that nothing was gated.

Each check has a *kind* (``checks/declared.py``): ``model`` checks decide the verdict and the
exit code; ``explanation`` checks (how far each attribution method can be believed) fill the
reliability card and, unless the spec opts one in (``gate = true``), do not: ``in_verdict``.
"""

from __future__ import annotations

import dataclasses
import math
import types
from dataclasses import dataclass, field
from typing import Any

from auditor.errors import ConfigError

SEVERITY = {"skipped": 0, "pass": 1, "warn": 2, "fail": 3, "error": 3}
BOUNDS = ("warn_below", "fail_below", "warn_above", "fail_above",
          "warn_drop", "fail_drop", "warn_rise", "fail_rise")


STATUS_ORDER = {"fail": 0, "error": 1, "warn": 2, "pass": 3, "skipped": 4}


def worst_status(checks: list[dict]) -> str | None:
    """The worst status among checks (None when there are none); error ranks with fail."""
    if not checks:
        return None
    return min((c["status"] for c in checks), key=lambda s: (-SEVERITY[s], STATUS_ORDER[s]))


def judged(checks: list[dict]) -> list[dict]:
    """The checks that say something: an ungated pass (no bound could apply) says nothing."""
    return [c for c in checks if c["status"] != "pass" or c.get("gated", True)]


@dataclass(frozen=True)
class Check:
    """One verdict as summary.json, the Markdown and JUnit outputs list it; read-only once made
    (a changed verdict is a new check: ``dataclasses.replace``), like the results that hold it."""

    id: str
    status: str
    value: Any
    threshold: dict[str, float] = field(default_factory=dict)
    baseline: Any = None
    message: str = ""
    section: str = ""
    gated: bool = False
    kind: str = "model"  # model or explanation (checks/declared.py)
    in_verdict: bool = True  # counts for the verdict and the exit code

    def __post_init__(self):
        object.__setattr__(self, "threshold", types.MappingProxyType(dict(self.threshold)))

    def noted(self, note: str) -> Check:
        """This check with ``note`` (what its failing means) added to its message unless it
        passed: a new check, since a check is read-only."""
        if self.status == "pass":
            return self
        return dataclasses.replace(self, message=self.message + note)

    def to_dict(self) -> dict[str, Any]:
        """The summary.json form, with the change against the baseline when both are numbers."""
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        record["threshold"] = dict(self.threshold)
        record["change"] = change(self.value, self.baseline)
        return record


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def change(value: Any, baseline: Any) -> float | None:
    """value - baseline when both are finite numbers, else None."""
    return value - baseline if _is_number(value) and _is_number(baseline) else None


def check_bounds(check_id: str, bounds: dict[str, Any]) -> None:
    for key, bound in bounds.items():
        if key not in BOUNDS:
            raise ConfigError(f"unknown key 'checks.{check_id}.{key}'; use: {', '.join(BOUNDS)}")
        if not _is_number(bound):
            raise ConfigError(f"'checks.{check_id}.{key}' must be a number, got {bound!r}")


def evaluate(check_id: str, value: float | None, *, message: str, section: str,
             defaults: dict[str, float] | None = None, spec: dict[str, Any] | None = None,
             baseline: float | None = None) -> Check:
    """Hold ``value`` against the bounds; the worst broken bound decides, and says why."""
    bounds = {**(defaults or {}), **(spec or {})}
    check_bounds(check_id, bounds)
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
            moved = value - baseline
            if f"{level}_drop" in bounds and -moved > bounds[f"{level}_drop"]:
                broken.append((level, f"dropped {-moved:.4g} from baseline {baseline:.4g} "
                                      f"(allowed {bounds[f'{level}_drop']:g})"))
            if f"{level}_rise" in bounds and moved > bounds[f"{level}_rise"]:
                broken.append((level, f"rose {moved:.4g} from baseline {baseline:.4g} "
                                      f"(allowed {bounds[f'{level}_rise']:g})"))
    gated = any(k.endswith(("below", "above")) for k in bounds) or (
        baseline is not None and any(k.endswith(("drop", "rise")) for k in bounds))
    if broken:
        level, why = broken[0]
        return Check(check_id, level, value, bounds, baseline, f"{message}: {why}", section, True)
    note = "" if gated else (" (not gated: no baseline to compare with)" if bounds
                             else " (not gated: no threshold set)")
    return Check(check_id, "pass", value, bounds, baseline, f"{message}{note}", section, gated)


def evaluate_each(check_id: str, values: dict[str, float], *, what: str, section: str,
                  defaults: dict[str, float] | None = None, spec: dict[str, Any] | None = None,
                  baselines: dict[str, float] | None = None, limit: int = 8) -> Check:
    """One check over many keyed values (per-class recall, say), each held to the same bounds.

    The worst key decides the status and is the check's value and baseline; the message names
    every key that broke a bound (up to ``limit``), so one check stands for all classes.
    """
    baselines = baselines or {}
    parts = {key: evaluate(check_id, value, message=f"{what} of '{key}' {_short(value)}",
                           section=section, defaults=defaults, spec=spec,
                           baseline=baselines.get(key))
             for key, value in values.items()}
    if not parts:
        return Check(check_id, "skipped", None, {**(defaults or {}), **(spec or {})}, None,
                     f"{what}: nothing to check", section)

    def badness(key: str) -> tuple:
        part = parts[key]
        moved = change(part.value, part.baseline)
        return (SEVERITY[part.status], -moved if moved is not None else 0.0,
                -part.value if _is_number(part.value) else math.inf)

    worst = max(parts, key=badness)
    decisive = parts[worst]
    broken = [key for key, part in parts.items() if part.status in ("warn", "fail", "error")]
    if broken:
        names = ", ".join(f"'{k}'" for k in broken[:limit])
        more = f" and {len(broken) - limit} more" if len(broken) > limit else ""
        message = f"{decisive.message}; {len(broken)} broke a bound: {names}{more}"
    else:
        detail = "" if decisive.baseline is None else f" (baseline {_short(decisive.baseline)})"
        gate = "" if decisive.gated else " (not gated)"
        message = f"{what}: worst '{worst}' {_short(decisive.value)}{detail}{gate}"
    return Check(check_id, decisive.status, decisive.value, decisive.threshold,
                 decisive.baseline, message, section, any(p.gated for p in parts.values()))


def evaluate_new_items(check_id: str, items: list | None, baseline_items: list | None, *,
                       what: str, section: str, defaults: dict[str, float] | None = None,
                       spec: dict[str, Any] | None = None) -> Check:
    """A list-valued metric against the baseline's list; the bounds hold the number of new items.

    ``defaults={"fail_above": 0}`` makes any new item (a class newly flagged, say) fail. The
    check's value and baseline are the two lists. With no baseline list there is nothing to
    compare, and the check is skipped.
    """
    bounds = {**(defaults or {}), **(spec or {})}
    if items is None or baseline_items is None:
        reason = "no value in this run" if items is None else "the baseline has no such list"
        return Check(check_id, "skipped", None, bounds, None, f"{what}: {reason}", section)
    new = [item for item in items if item not in baseline_items]
    gone = [item for item in baseline_items if item not in items]
    listed = f" ({', '.join(map(str, new))})" if new else ""
    left = f"; no longer: {', '.join(map(str, gone))}" if gone else ""
    result = evaluate(check_id, len(new), message=f"{len(new)} {what}{listed}{left}",
                      section=section, defaults=defaults, spec=spec)
    return dataclasses.replace(result, value=list(items), baseline=list(baseline_items))


def _short(value: Any) -> str:
    return f"{value:.4g}" if _is_number(value) else str(value)


def deciding(checks: list[Check]) -> list[Check]:
    """The checks the verdict and the exit code are made of (``in_verdict``)."""
    return [c for c in checks if c.in_verdict]


def verdict(checks: list[Check]) -> str:
    """The run's overall status: the worst of the checks in the verdict ('pass' when there are
    none)."""
    worst = max((SEVERITY[c.status] for c in deciding(checks)), default=1)
    if worst == 3:
        return "fail"
    return "warn" if worst == 2 else "pass"


def exit_code(checks: list[Check], fail_on: str) -> int:
    """0 when the run passes, 1 when a check in the verdict fails or errors (or warns, with
    fail_on='warn')."""
    statuses = {c.status for c in deciding(checks)}
    if statuses & {"fail", "error"}:
        return 1
    return 1 if fail_on == "warn" and "warn" in statuses else 0
